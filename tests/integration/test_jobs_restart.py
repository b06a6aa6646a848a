"""Nothing lost when the whole serving process tree dies: a serving tree with its own Ray runs in
a subprocess (``python -m tools.local_serve``), a job is started, every process of the tree
gets SIGKILL mid-job (Ray's included), the tree starts again on the same data: the job resumes
(leases expire, files are claimed again, long files resume at their last committed window)
and every file ends done exactly once. On SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serve_app.jobs import JobStore
from tests.pg import PgServer, PgUnavailable, start_test_server
from tests.support import SENTENCES
from tools.audio import encode_wav, with_pauses
from tools.local_serve import ServingTree

ROOT = Path(__file__).resolve().parents[2]
JOBS_ARGS = {"jobs": {"commit_window_s": 60, "lease_s": 5, "concurrency": 2, "poll_s": 0.3}}


@pytest.fixture(scope="module")
def pg() -> PgServer:
    try:
        return start_test_server()
    except PgUnavailable as e:
        pytest.fail(f"PostgreSQL is required for these tests: {e}")


def wait_job(
    url: str, job_id: str, until: Callable[[dict[str, Any]], bool], timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = dict(httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json())
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


@pytest.fixture(scope="module")
def recordings(say: Callable[[str], np.ndarray]) -> list[tuple[str, bytes]]:
    short = [
        encode_wav(with_pauses([say(f"File number {i}."), say(SENTENCES[i % 2])], 1.0)) for i in range(3)
    ]
    long = encode_wav(with_pauses([say(s) for s in SENTENCES] * 16, pause_s=2.0)[: 150 * 16000])
    return [(f"short{i}.wav", b) for i, b in enumerate(short)] + [("long.wav", long)]


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "FUNASR_SERVE_DATA_DIR": str(tmp_path / "data")}
    env.pop("RAY_ADDRESS", None)
    if request.param == "sqlite":
        yield env
        return
    server: PgServer = request.getfixturevalue("pg")
    name = server.create_database("funasr_restart")
    env["FUNASR_SERVE_DATABASE_URL"] = server.url(name).render_as_string(hide_password=False)
    try:
        yield env
    finally:
        server.drop_database(name)


def test_killing_the_whole_tree_mid_job_loses_and_repeats_nothing(
    storage: dict[str, str], recordings: list[tuple[str, bytes]]
) -> None:
    tree = ServingTree(storage, "restart", JOBS_ARGS)
    try:
        upload = [("files", (name, data)) for name, data in recordings]
        job = httpx.post(f"{tree.url}/v1/jobs", files=upload, timeout=120).json()

        def mid_job(j: dict[str, Any]) -> bool:
            files = httpx.get(f"{tree.url}/v1/jobs/{job['id']}/files", timeout=30).json()["data"]
            long = next(f for f in files if f["name"] == "long.wav")
            return (
                j["files"]["done"] >= 1
                and 0 < long["progress_s"] < (long["duration_s"] or 150)
                and long["state"] == "running"
            )

        wait_job(tree.url, job["id"], mid_job, timeout_s=240)
    finally:
        killed = tree.kill()
    assert killed > 5, f"only {killed} processes: Ray was not in the tree"

    tree = ServingTree(storage, "restart", JOBS_ARGS)
    t0 = time.monotonic()
    try:
        done = wait_job(
            tree.url, job["id"], lambda j: j["state"] in ("completed", "failed", "cancelled"), timeout_s=300
        )
        resumed_s = time.monotonic() - t0
        files = httpx.get(f"{tree.url}/v1/jobs/{job['id']}/files", timeout=30).json()["data"]
    finally:
        tree.kill()
    print(f"job completed {resumed_s:.1f} s after the tree was back")
    assert done["state"] == "completed" and done["files"]["done"] == len(recordings), done
    store = JobStore(
        storage.get("FUNASR_SERVE_DATABASE_URL")
        or str(Path(storage["FUNASR_SERVE_DATA_DIR"]) / "funasr-serve.db")
    )
    try:
        for f in files:
            t = store.jobs.get_transcript(f["id"])
            starts = [s["start_s"] for s in t.segments]
            assert starts == sorted(starts) and len(starts) == len(set(starts)), (
                f"{f['name']}: a window twice"
            )
            assert t.covered_s == pytest.approx(f["duration_s"], abs=1.0), (
                f["name"],
                t.covered_s,
                f["duration_s"],
            )
        long = next(f for f in files if f["name"] == "long.wav")
        assert long["attempts"] >= 2, "the long file was not resumed by a second claim"
    finally:
        store.close()
