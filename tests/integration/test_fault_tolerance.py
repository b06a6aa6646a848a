"""A replica that dies under load loses no request: the pipeline sends a chain that failed with
its replica again (to the replacement Serve starts), while a request that is itself bad is
answered at once and never retried."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from ray import serve

from serve_app.contracts import SAMPLE_RATE, AsrOptions, Segmentation, SpeechSegment
from tests.integration.conftest import ServeCluster
from tools.local_serve import app_config

STAGE_NAMES = {"decode": "Decode", "vad": "VAD", "asr": "ASR", "postprocess": "Postprocess"}


@pytest.fixture(scope="module")
def faults_app(serve_cluster: ServeCluster) -> Iterator[str]:
    """deploy/local.yaml as shipped, under its own name: these tests kill its replicas."""
    url = serve_cluster.deploy(app_config("local.yaml", "faults"))
    try:
        yield url
    finally:
        serve_cluster.remove("faults")


def info(stage: str) -> dict[str, object]:
    handle = serve.get_deployment_handle(STAGE_NAMES[stage], app_name="faults")
    return dict(handle.info.remote().result(timeout_s=60))


def kill_under_load(url: str, audio: bytes, stage: str, clients: int = 8) -> dict[str, object]:
    """``clients`` closed-loop clients; once at least 4 requests are inside ASR (when killing
    ASR) the stage's replica process gets SIGKILL; the clients go on until its replacement has
    answered a few more requests. Returns the status codes and the replica ids."""
    asr = serve.get_deployment_handle("ASR", app_name="faults")
    before = info(stage)
    codes: list[int] = []
    state: dict[str, object] = {"killed_at": None, "inside_asr": None}
    stop = asyncio.Event()

    async def client(c: httpx.AsyncClient) -> None:
        while not stop.is_set():
            r = await c.post(f"{url}/v1/audio/transcriptions", files={"file": ("b.wav", audio)})
            codes.append(r.status_code)

    async def killer() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            inside = int((await asr.stats.remote())["inflight_requests"])
            if inside >= (4 if stage == "asr" else 1) and len(codes) >= 2:
                state["inside_asr"] = inside
                break
            await asyncio.sleep(0.05)
        raw = None
        if stage == "asr":
            # The control, at no extra cost: one call straight to the ASR replica, without the
            # pipeline and its retry, queued behind the clients' segments when the replica dies.
            # It must fail: a kill that lost nothing in flight would prove nothing above.
            noise = np.random.default_rng(0).uniform(-0.1, 0.1, 10 * SAMPLE_RATE).astype(np.float32)
            raw = asr.transcribe.remote(Segmentation(10.0, [SpeechSegment(0.0, 10.0, noise)]), AsrOptions())
            await asyncio.sleep(0.5)  # it reaches the replica, behind the clients' segments
        os.kill(int(str(before["pid"])), signal.SIGKILL)
        state["killed_at"] = time.monotonic()
        if raw is not None:
            try:
                await asyncio.wait_for(raw, 120)
                state["raw_call"] = "answered"
            except Exception as e:  # Ray's actor-died error, wrapped or not
                state["raw_call"] = type(e).__name__
        done_at_kill = len(codes)
        # Until the replacement answered, and 8 more requests finished after the kill.
        while time.monotonic() < deadline + 180:
            try:
                now = await asyncio.wait_for(
                    serve.get_deployment_handle(STAGE_NAMES[stage], app_name="faults").info.remote(), 5
                )
                if now["replica"] != before["replica"] and len(codes) >= done_at_kill + 8:
                    state["after"] = now
                    state["recovered_s"] = time.monotonic() - float(str(state["killed_at"]))
                    break
            except Exception:
                pass
            await asyncio.sleep(0.25)
        stop.set()

    async def main() -> None:
        async with httpx.AsyncClient(timeout=300) as c:
            await asyncio.gather(killer(), *(client(c) for _ in range(clients)))

    asyncio.run(main())
    return {"codes": codes, "before": before, **state}


@pytest.mark.parametrize(
    "stage", ["asr", *(pytest.param(s, marks=pytest.mark.slow) for s in ("decode", "vad", "postprocess"))]
)
def test_killing_a_stage_replica_under_8_way_load_fails_no_request(
    faults_app: str, beckett_wav: Path, stage: str
) -> None:
    audio = beckett_wav.read_bytes()
    retries_before = httpx.get(f"{faults_app}/v1/stats", timeout=60).json()["ingress_retries"]
    out = kill_under_load(faults_app, audio, stage)
    codes = out["codes"]
    assert isinstance(codes, list)
    print(
        f"kill {stage}: {len(codes)} requests, codes {sorted(set(codes))}, "
        f"{out['inside_asr']} inside ASR at the kill, replacement answering after {out.get('recovered_s', -1):.1f} s"
    )
    assert "after" in out, f"the {stage} replica was not replaced in time: {out}"
    assert out["after"]["replica"] != out["before"]["replica"]  # type: ignore[index]
    if stage == "asr":
        assert int(str(out["inside_asr"])) >= 4
        # The control: the same kill fails a call that has no retry (see kill_under_load).
        assert out["raw_call"] != "answered", out["raw_call"]
    assert codes and set(codes) == {200}, (
        f"{codes.count(200)} of {len(codes)} answered 200: {sorted(set(codes))}"
    )
    if stage == "asr":  # requests were inside the replica that died: they were sent again
        retries = httpx.get(f"{faults_app}/v1/stats", timeout=60).json()["ingress_retries"]
        assert retries > retries_before, "no request was retried: the test proved nothing"


@pytest.mark.slow
def test_control_without_retries_requests_fail(serve_cluster: ServeCluster, beckett_wav: Path) -> None:
    """The same kill with retries off (``retry.deadline_s: 0``) fails requests: the test above
    can fail, and it is the retry that saves them."""
    serve_cluster.remove("faults")
    url = serve_cluster.deploy(app_config("local.yaml", "faults", args={"retry": {"deadline_s": 0}}))
    try:
        out = kill_under_load(url, beckett_wav.read_bytes(), "asr")
        codes = out["codes"]
        assert isinstance(codes, list)
        print(f"control, no retries: {len(codes) - codes.count(200)} of {len(codes)} requests failed")
        assert any(c >= 500 for c in codes), codes
    finally:
        serve_cluster.remove("faults")
        serve_cluster.deploy(app_config("local.yaml", "faults"))


def test_bad_request_is_answered_at_once_never_retried(faults_app: str) -> None:
    retries_before = httpx.get(f"{faults_app}/v1/stats", timeout=60).json()["ingress_retries"]
    t = time.monotonic()
    r = httpx.post(
        f"{faults_app}/v1/audio/transcriptions", files={"file": ("x.wav", os.urandom(5000))}, timeout=60
    )
    assert r.status_code == 415 and time.monotonic() - t < 5, r.text
    assert httpx.get(f"{faults_app}/v1/stats", timeout=60).json()["ingress_retries"] == retries_before
