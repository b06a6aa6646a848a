"""``/readyz`` probes every stage of the graph, Streaming and the JobRunner included, through
``Stages``; a stage that answers false, raises or hangs is named as not ready."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app.api import create_app
from serve_app.api.origins import HostPolicy
from serve_app.stages import Stages
from tests.unit.stand_ins import api_context


def handle(answer: Any) -> Any:
    """A stand-in deployment handle whose ``ready.remote()`` answers ``answer``: a bool, an
    exception to raise, or ``"hang"``."""

    async def ready() -> bool:
        if answer == "hang":
            await asyncio.sleep(3600)
        if isinstance(answer, BaseException):
            raise answer
        return bool(answer)

    return SimpleNamespace(ready=SimpleNamespace(remote=ready))


STAGES = ("decode", "vad", "asr", "postprocess", "streaming", "job_runner")


def graph(**answers: Any) -> Stages:
    a = {name: answers.get(name, True) for name in STAGES}
    return Stages(
        decode=handle(a["decode"]),
        vad=handle(a["vad"]),
        asr=handle(a["asr"]),
        post=handle(a["postprocess"]),
        streaming=handle(a["streaming"]),
        job_runner=handle(a["job_runner"]),
    )


def readyz(stages: Stages, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    ctx = api_context(tmp_path, stages=stages, hosts=HostPolicy.build("127.0.0.1", "testserver"))
    r = TestClient(create_app(ctx)).get("/readyz")
    return r.status_code, r.json()


def test_every_stage_ready_is_200(tmp_path: Path) -> None:
    code, body = readyz(graph(), tmp_path)
    assert code == 200 and body["stages"] == dict.fromkeys(STAGES, True), body


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("answer", [False, RuntimeError("replica gone")], ids=["false", "raises"])
def test_one_stage_not_ready_is_503_naming_it(tmp_path: Path, stage: str, answer: Any) -> None:
    code, body = readyz(graph(**{stage: answer}), tmp_path)
    assert code == 503, body
    assert body["stages"] == {s: s != stage for s in STAGES}, body
    assert body["error"] == f"not ready: {stage}", body


def test_a_hung_stage_is_not_ready_after_the_timeout() -> None:
    stages = graph(job_runner="hang")
    ok = asyncio.run(stages.readiness(timeout_s=0.2))
    assert ok == {s: s != "job_runner" for s in STAGES}, ok


def test_the_job_runners_copy_probes_the_offline_four() -> None:
    full = graph()
    offline = Stages(decode=full.decode, vad=full.vad, asr=full.asr, post=full.post)
    assert list(asyncio.run(offline.readiness())) == ["decode", "vad", "asr", "postprocess"]
