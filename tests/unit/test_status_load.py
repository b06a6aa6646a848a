"""The Status page's figures without Ray: a replica's ``LoadMeter`` (windows over its samples,
the per-minute ring), a stage's row from its replicas' answers, the saturation findings, and
``/v1/status``'s ``load`` through the route with stand-in stages."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app import load as meter
from serve_app.api import create_app, status
from serve_app.api.load import (
    BUSY_SATURATED,
    MIN_WINDOW_AUDIO_S,
    QUEUE_BACKLOG_S,
    StageLoad,
    findings,
    load_status,
    stage_load,
    throughput,
)
from serve_app.api.origins import HostPolicy
from serve_app.contracts import AsrOptions
from serve_app.deployments.common import Worker
from serve_app.load import MINUTES_KEPT, RECENT_S, SAMPLE_EVERY_S, LoadMeter, MinuteRing
from serve_app.stages import Stages
from tests.unit.stand_ins import api_context
from tests.unit.test_asr_loop_clock import SlowEngine, asr_replica, segmentation


class Clocks:
    """Fake monotonic, wall and CPU clocks, moved by hand."""

    def __init__(self) -> None:
        self.t, self.wall, self.cpu, self.busy = 1000.0, 1_700_000_000.0, 5.0, 0.0

    def meter(self, capacity: int = 1, busy: bool = True) -> LoadMeter:
        return LoadMeter(
            capacity,
            (lambda: self.busy) if busy else None,
            clock=lambda: self.t,
            wall=lambda: self.wall,
            cpu=lambda: self.cpu,
        )

    def advance(self, s: float, cpu: float = 0.0, busy: float = 0.0) -> None:
        self.t += s
        self.wall += s
        self.cpu += cpu
        self.busy += busy


# --- the replica's meter ----------------------------------------------------------------------


def test_a_young_replica_counts_from_its_start() -> None:
    c = Clocks()
    m = c.meter(capacity=2)
    c.advance(20, cpu=4.0, busy=10.0)
    m.audio(8.0)
    f = m.figures()
    assert (f["window_s"], f["window_cpu_s"], f["window_audio_s"], f["window_busy_s"]) == (20, 4, 8, 10), f
    assert f["capacity"] == 2 and f["cpu_s"] == 9.0 and f["audio_s"] == 8.0, f


def test_the_window_reaches_back_to_the_newest_sample_at_least_recent_s_old() -> None:
    c = Clocks()
    m = c.meter()
    for _ in range(12):  # a sample per touch, every SAMPLE_EVERY_S: 120 s of them
        c.advance(SAMPLE_EVERY_S, cpu=1.0, busy=SAMPLE_EVERY_S / 2)
        m.audio(10.0)
    f = m.figures()
    assert f["window_s"] == RECENT_S, f  # not the replica's whole life (120 s)
    assert f["window_audio_s"] == 60.0 and f["window_cpu_s"] == 6.0 and f["window_busy_s"] == 30.0, f


def test_touches_closer_than_sample_every_s_add_no_sample() -> None:
    c = Clocks()
    m = c.meter()
    for _ in range(100):
        c.advance(SAMPLE_EVERY_S / 10)
        m.audio(1.0)
    assert len(m._samples) <= 100 * 0.1 + 1, len(m._samples)


def test_a_long_idle_replica_averages_over_the_idle_stretch() -> None:
    c = Clocks()
    m = c.meter()
    m.audio(30.0)
    c.advance(600, cpu=6.0)  # nobody touched it for ten minutes
    f = m.figures()
    assert f["window_s"] == 600 and f["window_audio_s"] == 30.0, f


def test_a_meter_without_a_busy_source_says_none() -> None:
    c = Clocks()
    f = c.meter(busy=False).figures()
    assert f["busy_s"] is None and f["window_busy_s"] is None, f


def test_the_minute_ring_keeps_the_last_15_minutes() -> None:
    wall = [60.0 * 1000]
    ring = MinuteRing(lambda: wall[0])
    for _ in range(20):
        ring.add(2.0)
        ring.add(1.0)
        wall[0] += 60.0
    wall[0] -= 60.0
    b = ring.buckets()
    assert list(b) == list(range(1019 - MINUTES_KEPT + 1, 1020)), b
    assert set(b.values()) == {3.0}, b
    wall[0] += 60.0  # a minute with nothing: the oldest one drops out without an add
    assert list(ring.buckets()) == list(range(1020 - MINUTES_KEPT + 1, 1020)), ring.buckets()


def test_process_cpu_counts_this_process() -> None:
    before = meter.process_cpu_s()
    sum(i * i for i in range(300_000))
    assert meter.process_cpu_s() > before


def test_a_worker_counts_time_in_its_thread_not_waiting_for_it() -> None:
    import time

    worker = Worker("t")

    async def three_at_once() -> None:
        await asyncio.gather(*(worker.run(time.sleep, 0.1) for _ in range(3)))

    asyncio.run(three_at_once())
    assert 0.3 <= worker.clock.busy_s < 0.45, worker.clock.busy_s  # 0.6 if waits counted


def test_asr_stats_keep_their_keys_and_add_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    replica = asr_replica(monkeypatch, SlowEngine(batch_s=0.05))

    async def scenario() -> dict[str, Any]:
        await replica.transcribe(segmentation(3), AsrOptions())
        replica.reset_stats()  # the benchmark's reset leaves the load's sums alone
        return dict(replica.stats())

    stats = asyncio.run(scenario())
    for key in ("inflight_requests", "queued_audio_s", "batches", "busy_s", "loop_busy_s", "busy_fraction"):
        assert key in stats, (key, stats)
    load = stats["load"]
    assert load["audio_s"] == 3.0 and load["window_audio_s"] == 3.0, load
    assert 0.04 <= load["window_busy_s"] and load["busy_s"] >= load["window_busy_s"], load
    assert sum(load["minutes"].values()) == 3.0, load


# --- a stage's row, throughput, findings ----------------------------------------------------


def load_part(
    window_s: float = 60.0,
    cpu: float = 30.0,
    audio: float = 100.0,
    busy: float | None = 45.0,
    capacity: int = 1,
) -> dict[str, Any]:
    return {
        "capacity": capacity,
        "window_s": window_s,
        "window_cpu_s": cpu,
        "window_audio_s": audio,
        "window_busy_s": busy,
        "minutes": {},
    }


def test_a_stage_row_adds_its_replicas_up() -> None:
    deployment = {"status": "HEALTHY", "replicas": {"RUNNING": 2}, "running": 2}
    stats = [
        {"replica": "a", "queued_audio_s": 10.0, "load": load_part(busy=60.0, capacity=2)},
        {
            "replica": "b",
            "queued_audio_s": 5.0,
            "load": load_part(window_s=30.0, cpu=15.0, audio=50.0, busy=30.0),
        },
    ]
    row = stage_load("ASR", deployment, stats)
    assert row.sampled == 2 and row.running == 2 and row.replicas == {"RUNNING": 2}, row
    assert row.window_s == 30.0 and row.window_audio_s == 150.0, row
    assert row.busy_share == round(90 / (2 * 60 + 30), 4), row
    assert row.cpu_per_audio_s == pytest.approx(45 / 150) and row.cpu_cores == pytest.approx(1.0), row
    assert row.queued_audio_s == 15.0, row


def test_cpu_per_audio_second_needs_audio_and_non_asr_stages_queue_nothing() -> None:
    row = stage_load("Decode", None, [{"load": load_part(audio=MIN_WINDOW_AUDIO_S / 2)}])
    assert row.cpu_per_audio_s is None and row.cpu_cores == 0.5, row
    assert row.queued_audio_s is None and row.status is None and row.replicas == {}, row
    assert (
        stage_load("Ingress", {"status": "HEALTHY", "replicas": {"RUNNING": 1}, "running": 1}, []).sampled
        == 0
    )


def test_throughput_adds_rings_by_minute_up_to_now() -> None:
    now = datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC)
    minute = int(now.timestamp() // 60)
    rings = [
        {"load": {**load_part(), "minutes": {minute: 30.0, minute - 3: 60.0, minute - 20: 99.0}}},
        {"load": {**load_part(), "minutes": {str(minute): 15.0}}},  # as JSON would have it
    ]
    t = throughput(rings, now)
    assert t is not None and len(t.audio_s) == MINUTES_KEPT, t
    assert t.audio_s[-1] == 45.0 and t.audio_s[-4] == 60.0 and t.total_audio_s == 105.0, t
    assert t.start == "2025-03-01T11:46:00Z", t
    assert throughput([], now) is None


def row(stage: str = "ASR", **kw: Any) -> StageLoad:
    return StageLoad(stage=stage, status="HEALTHY", replicas={"RUNNING": 1}, running=1, window_s=60.0, **kw)


def test_a_busy_stage_with_a_queue_is_worded() -> None:
    (f,) = findings([row(busy_share=0.95, queued_audio_s=120.0), row("VAD", busy_share=0.2)])
    assert f.kind == "busy" and f.stage == "ASR", f
    assert f.text == "ASR is busy 95 % of the time with 120 s of audio queued: add ASR replicas", f.text
    (g,) = findings([row("Decode", busy_share=BUSY_SATURATED)])
    assert g.text == "Decode is busy 90 % of the time: add Decode replicas", g.text


def test_a_backlog_on_a_stage_that_is_not_busy() -> None:
    (f,) = findings([row(busy_share=0.4, queued_audio_s=QUEUE_BACKLOG_S)])
    assert f.kind == "backlog" and f.text.startswith("ASR has 60 s of audio queued though busy 40 %"), f.text


def test_a_stage_without_running_replicas_is_down_unless_scaled_to_zero() -> None:
    down = StageLoad(stage="ASR", status="UNHEALTHY", replicas={"STARTING": 1}, running=0)
    (f,) = findings([down])
    assert f.kind == "down" and f.text == "ASR has no running replica (UNHEALTHY: STARTING 1)", f.text
    assert findings([StageLoad(stage="Streaming", status="HEALTHY", replicas={}, running=0)]) == []


def test_nothing_saturated_is_an_empty_list() -> None:
    assert findings([row(busy_share=0.5, queued_audio_s=3.0), row("Decode"), row("Ingress")]) == []


def test_rows_follow_the_graph() -> None:
    deployments = {
        n: {"status": "HEALTHY", "replicas": {"RUNNING": 1}, "running": 1}
        for n in ("ASR", "Other", "Ingress")
    }
    got = load_status(deployments, {"Decode": [{"load": load_part()}]}, datetime.now(UTC))
    assert [r.stage for r in got.stages] == ["Ingress", "Decode", "ASR", "Other"], got.stages


# --- the route ---------------------------------------------------------------------------------


def stats_handle(answers: list[dict[str, Any]]) -> Any:
    """A stand-in handle whose ``stats.remote()`` answers each of ``answers`` in turn."""
    calls = iter(answers * 10)

    async def stats() -> dict[str, Any]:
        return next(calls)

    return SimpleNamespace(stats=SimpleNamespace(remote=stats))


class Overview(SimpleNamespace):
    """A stand-in ``ApplicationStatusOverview``."""


def test_status_route_carries_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now_minute = int(datetime.now(UTC).timestamp() // 60)
    deployment = lambda n, state="RUNNING": SimpleNamespace(status="HEALTHY", replica_states={state: n})  # noqa: E731
    overview = Overview(
        status="RUNNING",
        deployments={
            "Ingress": deployment(1),
            "Decode": deployment(1),
            "VAD": deployment(1),
            "ASR": deployment(2),
            "Postprocess": deployment(1),
            "JobRunner": deployment(1),
        },
    )
    monkeypatch.setattr(status, "_serve_status", lambda: status.serve_json("local", overview))
    asr = [
        {
            "replica": f"asr-{i}",
            "device": "cpu",
            "inflight_requests": 3,
            "queued_segments": 12,
            "queued_audio_s": 60.0,
            "busy_fraction": 0.9,
            "load": {**load_part(busy=58.0, audio=90.0, cpu=55.0), "minutes": {now_minute: 90.0}},
        }
        for i in range(2)
    ]
    stage = lambda busy: stats_handle([{"replica": "x", "load": load_part(busy=busy, cpu=3.0)}])  # noqa: E731
    stages = Stages(decode=stage(6.0), vad=stage(3.0), asr=stats_handle(asr), post=stage(1.0))
    ctx = api_context(tmp_path, stages=stages, hosts=HostPolicy.build("127.0.0.1", "testserver"))
    body = TestClient(create_app(ctx)).get("/v1/status").json()
    print(json.dumps(body["load"], indent=1))  # the README's example (pytest -s)
    assert body["errors"] == {}, body["errors"]
    assert body["queue"]["asr"]["queued_audio_s"] == 60.0, body["queue"]
    rows = {r["stage"]: r for r in body["load"]["stages"]}
    assert list(rows) == ["Ingress", "Decode", "VAD", "ASR", "Postprocess", "JobRunner"], list(rows)
    assert rows["ASR"]["sampled"] == 2 and rows["ASR"]["replicas"] == {"RUNNING": 2}, rows["ASR"]
    assert rows["ASR"]["busy_share"] == 0.9667 and rows["ASR"]["queued_audio_s"] == 120.0
    assert rows["Decode"]["busy_share"] == 0.1 and rows["Decode"]["cpu_per_audio_s"] == 0.03, rows["Decode"]
    assert rows["Ingress"]["sampled"] == 0 and rows["Ingress"]["busy_share"] is None, rows["Ingress"]
    assert body["load"]["throughput"]["audio_s"][-1] == 180.0, body["load"]["throughput"]
    (finding,) = body["load"]["saturated"]
    assert finding["text"] == "ASR is busy 97 % of the time with 120 s of audio queued: add ASR replicas", (
        finding
    )
