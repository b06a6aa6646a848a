"""What every benchmark here shares: HTTP load against a served app, and interleaved rounds.

One run lies: drift (thermal, page cache, a neighbour) moves a figure by 10-20 % on a small
machine. Each figure is therefore measured in several rounds, the arrangements interleaved
(A, B, C, A, B, C, ...) so that drift hits them alike, and reported as the median with its
spread (min-max) beside it."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Run:
    """One measurement: audio seconds served over wall seconds, and per-request latencies."""

    audio_s: float
    wall_s: float
    latencies_s: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    requests: list[tuple[str, float, float]] = field(default_factory=list)
    """Each request's ``x-request-id`` (Serve's request id in every stage), and when it was sent
    and answered (``time.time()``: comparable with the stages' spans)."""

    @property
    def rtfx(self) -> float:
        return self.audio_s / self.wall_s

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")


@dataclass
class Figure:
    """The rounds of one arrangement."""

    name: str
    runs: list[Run] = field(default_factory=list)

    def median(self, value: Callable[[Run], float] = lambda r: r.rtfx) -> float:
        return statistics.median(value(r) for r in self.runs)

    def spread(self, value: Callable[[Run], float] = lambda r: r.rtfx) -> tuple[float, float]:
        values = [value(r) for r in self.runs]
        return min(values), max(values)

    def cell(self, value: Callable[[Run], float] = lambda r: r.rtfx, fmt: str = "{:.1f}") -> str:
        lo, hi = self.spread(value)
        return f"{fmt.format(self.median(value))} ({fmt.format(lo)}–{fmt.format(hi)})"


def interleave(
    arrangements: dict[str, Callable[[], Run]], rounds: int, log: bool = True
) -> dict[str, Figure]:
    """Run every arrangement once per round, in the same order each round."""
    figures = {name: Figure(name) for name in arrangements}
    for r in range(rounds):
        for name, measure in arrangements.items():
            run = measure()
            figures[name].runs.append(run)
            if log:
                print(
                    f"  round {r + 1}/{rounds} {name:<40} {run.rtfx:7.2f} audio-s/s  p50 {run.pct(50):6.2f} s  p95 {run.pct(95):6.2f} s",
                    flush=True,
                )
    return figures


async def send_all(url: str, payloads: Sequence[tuple[bytes, float]], concurrency: int) -> Run:
    """``payloads`` (bytes, audio seconds) to ``/v1/audio/transcriptions``, at most
    ``concurrency`` in flight; every response must be 200."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    requests: list[tuple[str, float, float]] = []

    async def one(client: httpx.AsyncClient, data: bytes) -> None:
        async with sem:
            rid = uuid.uuid4().hex
            t, sent = time.perf_counter(), time.time()
            r = await client.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": ("a.wav", data)},
                headers={"x-request-id": rid},
            )
            r.raise_for_status()
            lat.append(time.perf_counter() - t)
            requests.append((rid, sent, time.time()))

    async with httpx.AsyncClient(timeout=3600) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, d) for d, _ in payloads))
        return Run(sum(s for _, s in payloads), time.perf_counter() - t0, lat, requests=requests)


def served_run(url: str, payloads: Sequence[tuple[bytes, float]], concurrency: int) -> Run:
    return asyncio.run(send_all(url, payloads, concurrency))
