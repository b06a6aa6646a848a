"""Batch jobs beside live traffic, and how fast a job resumes after the server dies.

    python -m bench.jobs [--rounds 2] [--short 200] [--long 3]     # make bench-jobs

``make run``'s service (``deploy/local.yaml``, Whisper tiny.en; jobs as shipped: 600 s windows)
runs as its own process tree (``python -m tools.local_serve``, Ray included) on a fresh data
directory. The job: ``--short`` short files (the 2-10 s clips of ``load.clips``, each made
unique by a few samples of silence) plus ``--long`` 300 s recordings, uploaded by content
(``PUT /v1/uploads/{sha256}``) and submitted as one job. Arrangements, interleaved per round:

* live alone: 2 closed-loop clients send ``beckett.wav`` (10 s) for ``--live-s`` seconds;
* job alone: the job from submission to its end: audio hours per hour;
* both: the same job with the 2 live clients running until it ends.

Targets: the live requests' p95 beside the job at most 1.5× their p95 alone, and the job
beside live traffic at least half its solo throughput. Then once: a job is started, the whole
serving tree is SIGKILLed a third of the way through, started again on the same data, and the
times are printed: restart to ready, ready to the job's next committed progress, and the job
to its end (every file done exactly once is checked).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import Run, interleave
from bench.whisper import beckett
from load.clips import build_clip_mix
from tools.audio import encode_wav, read_wav
from tools.local_serve import ROOT, ServingTree


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "FUNASR_SERVE_DATA_DIR": str(data_dir)}


def recordings(short: int, long: int) -> list[tuple[str, bytes, float]]:
    clips = build_clip_mix(ROOT / ".cache" / "clips")
    shorts = [c for c in clips if c.duration_s <= 10.0]
    longest = max(clips, key=lambda c: c.duration_s)
    out = []
    for i in range(short):
        samples, _ = read_wav(shorts[i % len(shorts)].path.read_bytes())
        x = np.concatenate([samples, np.zeros(1 + i, dtype=np.float32)])
        out.append((f"short/{i:03d}.wav", encode_wav(x), len(x) / 16000))
    samples, _ = read_wav(longest.path.read_bytes())
    for i in range(long):
        x = np.concatenate([samples, np.zeros(1 + i, dtype=np.float32)])
        out.append((f"long/{i}.wav", encode_wav(x), len(x) / 16000))
    return out


def submit(url: str, files: list[tuple[str, bytes, float]]) -> str:
    with httpx.Client(base_url=url, timeout=300) as c:
        refs = []
        for name, data, _ in files:
            sha = hashlib.sha256(data).hexdigest()
            if c.head(f"/v1/uploads/{sha}").status_code == 404:
                c.put(f"/v1/uploads/{sha}", content=data).raise_for_status()
            refs.append({"sha256": sha, "name": name})
        r = c.post("/v1/jobs", json={"files": refs})
        r.raise_for_status()
        return str(r.json()["id"])


def job_state(url: str, job_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/v1/jobs/{job_id}", timeout=60).json())


def wait_job(url: str, job_id: str, timeout_s: float = 7200) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = job_state(url, job_id)
        if job["state"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


async def _live(url: str, data: bytes, clients: int, until: asyncio.Event, log: list[float]) -> None:
    async def client(c: httpx.AsyncClient) -> None:
        while not until.is_set():
            t = time.perf_counter()
            r = await c.post(f"{url}/v1/audio/transcriptions", files={"file": ("b.wav", data)})
            r.raise_for_status()
            log.append(time.perf_counter() - t)

    async with httpx.AsyncClient(timeout=3600) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))


def live_alone(url: str, data: bytes, seconds: float) -> Run:
    log: list[float] = []

    async def go() -> None:
        until = asyncio.Event()
        task = asyncio.create_task(_live(url, data, 2, until, log))
        await asyncio.sleep(seconds)
        until.set()
        await task

    t0 = time.perf_counter()
    asyncio.run(go())
    return Run(audio_s=10.0 * len(log), wall_s=time.perf_counter() - t0, latencies_s=log)


def job_run(url: str, files: list[tuple[str, bytes, float]], live: bytes | None) -> Run:
    """The job from submission to its end (uploads before the clock); with ``live``, the two
    clients run until it ends and their latencies are the run's."""
    audio_s = sum(d for _, _, d in files)
    log: list[float] = []

    async def go() -> float:
        until = asyncio.Event()
        task = asyncio.create_task(_live(url, live, 2, until, log)) if live is not None else None
        if task is not None:
            await asyncio.sleep(3)
        job_id = await asyncio.to_thread(submit, url, files)
        t0 = time.perf_counter()
        job = await asyncio.to_thread(wait_job, url, job_id)
        wall = time.perf_counter() - t0
        assert job["state"] == "completed" and job["files"]["done"] == len(files), job
        until.set()
        if task is not None:
            await task
        return wall

    wall = asyncio.run(go())
    return Run(audio_s=audio_s, wall_s=wall, latencies_s=log)


def resume(data_dir: Path, files: list[tuple[str, bytes, float]]) -> dict[str, float]:
    tree = ServingTree(_env(data_dir), "bench")
    job_id = submit(tree.url, files)
    total = len(files)
    while job_state(tree.url, job_id)["files"]["done"] < total // 3:
        time.sleep(0.3)
    before = job_state(tree.url, job_id)
    tree.kill()
    t0 = time.monotonic()
    tree = ServingTree(_env(data_dir), "bench")
    ready = time.monotonic() - t0
    try:
        while True:
            job = job_state(tree.url, job_id)
            if job["files"]["done"] > before["files"]["done"]:
                break
            time.sleep(0.2)
        progressed = time.monotonic() - t0
        job = wait_job(tree.url, job_id)
        finished = time.monotonic() - t0
        once = job["state"] == "completed" and job["files"]["done"] == total and not job["files"]["failed"]
    finally:
        tree.kill()
    return {
        "files_done_before_kill": float(before["files"]["done"]),
        "restart_to_ready_s": ready,
        "restart_to_progress_s": progressed,
        "restart_to_end_s": finished,
        "every_file_done_once": float(once),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--short", type=int, default=200)
    p.add_argument("--long", type=int, default=3)
    p.add_argument("--live-s", type=float, default=40.0)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "jobs")
    args = p.parse_args()
    files = recordings(args.short, args.long)
    audio_s = sum(d for _, _, d in files)
    live = beckett()
    with tempfile.TemporaryDirectory() as tmp:
        tree = ServingTree(_env(Path(tmp) / "data"), "bench")
        try:
            live_alone(tree.url, live, 5)  # warm up
            print(
                f"bench-jobs: {args.short} short + {args.long} × 300 s files ({audio_s / 3600:.2f} audio-h), "
                f"2 live clients × beckett.wav, {args.rounds} rounds; serving tree started in {tree.start_s:.0f} s",
                flush=True,
            )
            figures = interleave(
                {
                    "live alone": lambda: live_alone(tree.url, live, args.live_s),
                    "job alone": lambda: job_run(tree.url, files, None),
                    "job + live": lambda: job_run(tree.url, files, live),
                },
                args.rounds,
            )
        finally:
            tree.kill()
        print("resume: the serving tree is killed a third of the way through a job", flush=True)
        resumed = resume(Path(tmp) / "resume", files)
    alone, job, both = figures["live alone"], figures["job alone"], figures["job + live"]
    p95 = lambda r: r.pct(95)  # noqa: E731
    hph = lambda r: r.rtfx  # noqa: E731  audio hours per hour = audio-s per s
    p95_ratio = both.median(p95) / alone.median(p95)
    keep = both.median(hph) / job.median(hph)
    print()
    print(
        f"job alone:              {job.cell(hph)} audio hours per hour ({job.cell(lambda r: r.wall_s, '{:.0f}')} s)"
    )
    print(f"job beside 2 live:      {both.cell(hph)} audio hours per hour ({keep:.2f} of solo; target ≥ 0.5)")
    print(f"live p95 alone:         {alone.cell(p95, '{:.2f}')} s")
    print(f"live p95 beside the job: {both.cell(p95, '{:.2f}')} s ({p95_ratio:.2f}×; target ≤ 1.5)")
    print(
        f"resume: {resumed['files_done_before_kill']:.0f}/{len(files)} files done at the kill; ready again "
        f"{resumed['restart_to_ready_s']:.0f} s after the restart, next file done at "
        f"{resumed['restart_to_progress_s']:.0f} s, job ended at {resumed['restart_to_end_s']:.0f} s; "
        f"every file done once: {bool(resumed['every_file_done_once'])}",
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(
        json.dumps(
            {
                "audio_s": audio_s,
                "files": len(files),
                "job_alone_hph": [hph(r) for r in job.runs],
                "job_live_hph": [hph(r) for r in both.runs],
                "live_alone_p95_s": [p95(r) for r in alone.runs],
                "live_job_p95_s": [p95(r) for r in both.runs],
                "p95_ratio": p95_ratio,
                "keep": keep,
                "resume": resumed,
                "median_live_alone_p50_s": statistics.median(r.pct(50) for r in alone.runs),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
