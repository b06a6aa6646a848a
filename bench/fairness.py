"""A long upload must not hold short requests hostage (``deploy/local.yaml``, Whisper tiny.en).

    python -m bench.fairness [--rounds 3]                       # make bench-fairness

Four closed-loop clients send ``beckett.wav`` (10 s); one client sends a 300 s recording.
Arrangements, interleaved per round:

* short alone: the four clients for ``--short-s`` seconds: the 10 s requests' latencies;
* long alone: the 300 s upload by itself: its latency;
* both: the four clients run; after 3 s the 300 s upload goes in; the clients go on until it
  is answered. Latencies of the 10 s requests that overlapped it, and its own.

Targets: the 10 s requests' p95 with the upload at most 2× their p95 without it; the upload's
latency at most 2× its latency alone. ``--code DIR`` serves ``serve_app`` from another checkout
(e.g. a worktree of an earlier commit) for a before/after comparison with the same harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Figure, Run, interleave
from bench.whisper import beckett
from load.clips import build_clip_mix
from tools.local_serve import ROOT, LocalServe, app_config


async def _closed_loop(
    url: str, data: bytes, clients: int, until: asyncio.Event, log: list[tuple[float, float]]
) -> None:
    async def client(c: httpx.AsyncClient) -> None:
        while not until.is_set():
            t = time.perf_counter()
            r = await c.post(f"{url}/v1/audio/transcriptions", files={"file": ("b.wav", data)})
            r.raise_for_status()
            log.append((t, time.perf_counter()))

    async with httpx.AsyncClient(timeout=3600) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))


def short_alone(url: str, data: bytes, clients: int, seconds: float) -> Run:
    async def go() -> Run:
        stop, log = asyncio.Event(), []  # type: ignore[var-annotated]
        task = asyncio.create_task(_closed_loop(url, data, clients, stop, log))
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        stop.set()
        await task
        return Run(10.0 * len(log), time.perf_counter() - t0, [b - a for a, b in log])

    return asyncio.run(go())


def long_alone(url: str, long: tuple[bytes, float]) -> Run:
    t = time.perf_counter()
    httpx.post(
        f"{url}/v1/audio/transcriptions", files={"file": ("l.wav", long[0])}, timeout=3600
    ).raise_for_status()
    wall = time.perf_counter() - t
    return Run(long[1], wall, [wall])


def both(url: str, data: bytes, clients: int, long: tuple[bytes, float]) -> Run:
    async def go() -> Run:
        stop, log = asyncio.Event(), []  # type: ignore[var-annotated]
        task = asyncio.create_task(_closed_loop(url, data, clients, stop, log))
        await asyncio.sleep(3.0)
        async with httpx.AsyncClient(timeout=3600) as c:
            t0 = time.perf_counter()
            r = await c.post(f"{url}/v1/audio/transcriptions", files={"file": ("l.wav", long[0])})
            r.raise_for_status()
            t1 = time.perf_counter()
        stop.set()
        await task
        # Every 10 s request that overlapped the upload (sent before it was answered, answered
        # after it was sent): a request held behind it counts.
        during = [b - a for a, b in log if a < t1 and b > t0]
        return Run(long[1], t1 - t0, during, extra={"long_s": t1 - t0, "short_requests": len(during)})

    return asyncio.run(go())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--short-s", type=float, default=40.0)
    p.add_argument(
        "--code", default=None, help="serve serve_app from this checkout (before/after): Ray starts there"
    )
    p.add_argument("--user-config", default=None, help="ASR user_config as JSON (e.g. an older YAML's)")
    args = p.parse_args()
    import json

    clip = next(c for c in build_clip_mix(ROOT / ".cache" / "clips") if c.duration_s == 300.0)
    long = (clip.path.read_bytes(), clip.duration_s)
    data = beckett()
    # Ray puts the driver's current directory first on every worker's sys.path: started from
    # another checkout, the replicas import its serve_app (this process keeps its own).
    with contextlib.chdir(args.code or "."):
        cluster = LocalServe.start(num_cpus=8, object_store_mb=500)
    try:
        app: dict[str, Any] = app_config(
            "local.yaml",
            "fair",
            root=Path(args.code) if args.code else ROOT,
            deployments={"ASR": {"user_config": json.loads(args.user_config)}} if args.user_config else None,
        )
        url = cluster.deploy(app)
        short_alone(url, data, 2, 5.0)  # warm up
        print(
            f"bench-fairness: {args.clients} clients × beckett.wav + one 300 s upload, {args.rounds} rounds"
            + (f", serve_app from {args.code}" if args.code else ""),
            flush=True,
        )
        figures = interleave(
            {
                "short alone": lambda: short_alone(url, data, args.clients, args.short_s),
                "long alone": lambda: long_alone(url, long),
                "both": lambda: both(url, data, args.clients, long),
            },
            args.rounds,
        )
    finally:
        cluster.stop()
    report(figures)


def report(figures: dict[str, Figure]) -> None:
    short, long, mixed = figures["short alone"], figures["long alone"], figures["both"]
    p95 = lambda r: r.pct(95)  # noqa: E731
    lat = lambda r: r.wall_s  # noqa: E731
    print()
    print(
        "| arrangement | 10 s requests p50 s | 10 s requests p95 s, median (min–max) | 300 s upload latency s |"
    )
    print("|---|---|---|---|")
    print(
        f"| 4 clients, no upload | {short.median(lambda r: r.pct(50)):.2f} | {short.cell(p95, '{:.2f}')} | – |"
    )
    print(f"| the upload alone | – | – | {long.cell(lat, '{:.1f}')} |")
    print(
        f"| 4 clients + the upload | {mixed.median(lambda r: r.pct(50)):.2f} | {mixed.cell(p95, '{:.2f}')} | {mixed.cell(lat, '{:.1f}')} |"
    )
    print(
        f"bench-fairness: short_p95_ratio={mixed.median(p95) / short.median(p95):.2f} (target ≤ 2) "
        f"long_latency_ratio={mixed.median(lat) / long.median(lat):.2f} (target ≤ 2)"
    )


if __name__ == "__main__":
    main()
