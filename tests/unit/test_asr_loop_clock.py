"""Where the ASR batch loops' time goes: ``LoopClock``, and the ASR deployment's counters
(``stats()``'s ``loop_*_s``) driven in process with a stand-in engine."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from serve_app.config import FunasrArgs
from serve_app.contracts import AsrOptions, AsrResult, Segmentation, SpeechSegment
from serve_app.engines.scheduling import LoopClock

SLACK_S = 0.25
"""How much longer than asked a sleep may take on a loaded test machine."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_phases_sum_over_loops_and_open_phases_count_up_to_now() -> None:
    t = FakeClock()
    clock = LoopClock(("busy", "idle"), t)
    clock.enter(0, "idle")
    clock.enter(1, "busy")
    t.now += 2.0
    clock.enter(0, "busy")  # loop 0: 2 s idle, closed
    t.now += 1.0  # both busy for 1 s, still open
    assert clock.totals() == {"busy": 3.0 + 1.0, "idle": 2.0}, clock.totals()


def test_reset_keeps_open_phases_from_now() -> None:
    t = FakeClock()
    clock = LoopClock(("busy", "idle"), t)
    clock.enter(0, "idle")
    t.now += 5.0
    clock.reset()
    t.now += 1.5
    assert clock.totals() == {"busy": 0.0, "idle": 1.5}, clock.totals()


def test_an_unknown_phase_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown phase"):
        LoopClock(("busy",), FakeClock()).enter(0, "bsy")


class SlowEngine:
    """A stand-in ASR engine: each batch takes ``batch_s`` of wall time."""

    name = "stand-in"
    parallelism = 1

    def __init__(self, batch_s: float) -> None:
        self.batch_s = batch_s

    def transcribe_batch(self, audios: list[np.ndarray], options: list[AsrOptions]) -> list[AsrResult]:
        time.sleep(self.batch_s)
        return [AsrResult(text="x") for _ in audios]


class Sink:
    """Stands in for a Ray metric."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def asr_replica(monkeypatch: pytest.MonkeyPatch, engine: SlowEngine) -> Any:
    from serve_app.deployments import asr

    monkeypatch.setattr(asr, "build_asr", lambda *args: engine)
    monkeypatch.setattr(
        asr,
        "asr_metrics",
        lambda: {k: Sink() for k in ("received", "processed", "rtf", "batch_size", "batch_audio", "queued")},
    )
    monkeypatch.setattr(asr, "request_id", lambda: "req-1")
    cls = cast(Any, asr.AsrDeployment).func_or_class
    return cls(FunasrArgs(model="unused", device="cpu"), str(Path("/nonexistent")))


def segmentation(n: int) -> Segmentation:
    segs = [SpeechSegment(i, i + 1.0, np.zeros(16000, np.float32)) for i in range(n)]
    return Segmentation(duration_s=float(n), segments=segs)


def test_asr_stats_split_busy_empty_and_waiting_for_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    replica = asr_replica(monkeypatch, SlowEngine(batch_s=0.2))
    replica.reconfigure({"batch_wait_timeout_s": 0.3, "max_batch_count": 8})

    async def scenario() -> dict[str, Any]:
        await replica.transcribe(segmentation(1), AsrOptions())  # starts the loop
        replica.reset_stats()
        await asyncio.sleep(0.4)  # nothing queued
        await replica.transcribe(segmentation(2), AsrOptions())  # 0.3 s fill wait, 0.2 s batch
        return dict(replica.stats())

    stats = asyncio.run(scenario())
    got = {k: round(stats[k], 2) for k in ("loop_busy_s", "loop_idle_empty_s", "loop_idle_fill_s", "busy_s")}
    # At least what was slept, and not much more (a loaded machine oversleeps: loose bounds).
    assert 0.39 <= got["loop_idle_empty_s"] < 0.4 + SLACK_S, got
    assert 0.29 <= got["loop_idle_fill_s"] < 0.3 + SLACK_S, got
    assert 0.19 <= got["loop_busy_s"] < 0.2 + SLACK_S, got
    assert got["busy_s"] <= got["loop_busy_s"] + 0.01, got
    # The existing keys stay.
    assert stats["batches"] == 1 and stats["mean_batch_size"] == 2.0, stats


def test_asr_timings_give_each_segment_its_queue_wait_and_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    replica = asr_replica(monkeypatch, SlowEngine(batch_s=0.1))
    replica.reconfigure({"batch_wait_timeout_s": 0.2})
    t0 = time.time()
    asyncio.run(replica.transcribe(segmentation(2), AsrOptions()))
    spans = replica.timings(t0)
    assert sorted(s.what for s in spans) == ["asr_batch", "asr_batch", "asr_queue", "asr_queue"], spans
    assert all(s.request_id == "req-1" for s in spans), spans
    queue = next(s for s in spans if s.what == "asr_queue")
    batch = next(s for s in spans if s.what == "asr_batch")
    assert queue.end == batch.start, (queue, batch)
    assert 0.19 <= queue.end - queue.start < 0.2 + SLACK_S, queue
    assert 0.09 <= batch.end - batch.start < 0.1 + SLACK_S, batch
