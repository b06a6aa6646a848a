"""The load part of ``/v1/status`` (the console's Status page), Ray-free: each stage's replicas
and their states, busy share, queued audio and CPU seconds per audio second over a recent
window, throughput per minute over the last 15 minutes, and what is saturated, in words.

The figures come from the ``stats()["load"]`` of the replicas that answered
(``serve_app.load.LoadMeter``: each replica keeps its own window, so several Ingress replicas
agree). With one replica per stage, as the local configs run, that is every replica; with more,
the Ingress asks a stage as many times at once as it has running replicas (up to
``MAX_PROBES``) and keeps one answer per replica: Serve's router spreads such calls but does
not promise to reach each replica, so ``sampled`` says how many answered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from serve_app.load import MINUTE_S, MINUTES_KEPT

BUSY_SATURATED = 0.9
"""A stage busy at least this share of its capacity (batch loops, engines, worker threads)
over the window is saturated: more work only queues. The fix is more replicas of it."""
QUEUE_BACKLOG_S = 60.0
"""Audio seconds queued at ASR from which clients wait noticeably even when ASR is not
saturated (a burst that just arrived, or batch loops waiting for a batch to fill)."""
MIN_WINDOW_AUDIO_S = 1.0
"""CPU-s per audio-s is left out over a window with less audio than this: an idle replica's
CPU (Ray's own threads) over a second of audio says nothing about the stage."""
MAX_PROBES = 4
"""At most this many ``stats()`` calls per stage per status request."""
GRAPH_ORDER = ("Ingress", "Decode", "VAD", "ASR", "Postprocess", "Streaming", "JobRunner")
"""Table order; deployments of other names follow."""


class StageLoad(BaseModel):
    """One stage (a Serve deployment). The load figures are ``None`` for a stage that keeps
    none (Ingress, JobRunner) or could not be read (``errors`` says why)."""

    stage: str
    """The deployment's name (``ASR``, ``Decode``, ...)."""
    status: str | None = None
    """Serve's deployment status (``HEALTHY``, ``UPDATING``, ``UNHEALTHY``, ...)."""
    replicas: dict[str, int] = {}
    """Replicas by state (``RUNNING``, ``STARTING``, ``STOPPING``, ...), as ``serve.status()``."""
    running: int | None = None
    sampled: int = 0
    """Replicas whose figures are included."""
    window_s: float | None = None
    """The window the figures cover (the shortest of the sampled replicas')."""
    busy_share: float | None = None
    """Busy seconds over capacity × window (ASR: its batch loops' clock)."""
    queued_audio_s: float | None = None
    """Audio seconds waiting in the stage (ASR's queue, running batches included; other stages
    do not know it cheaply)."""
    cpu_per_audio_s: float | None = None
    """Process CPU seconds (ffmpeg children included) per audio second handled, over the window;
    ``None`` below ``MIN_WINDOW_AUDIO_S`` of audio."""
    cpu_cores: float | None = None
    """CPU seconds per second over the window: cores the stage's sampled replicas use."""
    window_audio_s: float | None = None
    """Audio seconds handled in the window."""


class Throughput(BaseModel):
    """Audio seconds ASR finished per minute (HTTP, jobs and realtime finals alike)."""

    minute_s: float = MINUTE_S
    start: str
    """The first minute's start (UTC); the last minute is the current one, still filling."""
    audio_s: list[float]
    """``MINUTES_KEPT`` values, oldest first."""
    total_audio_s: float


class Finding(BaseModel):
    """One thing saturated (or about to be), with the figures its text is made of (the page
    words it in the reader's language from ``kind`` and these)."""

    kind: Literal["down", "busy", "backlog"]
    stage: str
    text: str
    busy_share: float | None = None
    queued_audio_s: float | None = None
    window_s: float | None = None
    status: str | None = None


class LoadStatus(BaseModel):
    """``/v1/status``'s ``load``."""

    stages: list[StageLoad]
    throughput: Throughput | None
    """``None`` when no ASR replica answered."""
    saturated: list[Finding]
    """Empty: nothing saturated."""


def _sum(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) or not values else float(sum(v or 0.0 for v in values))


def stage_load(
    stage: str, deployment: Mapping[str, Any] | None, stats: Sequence[Mapping[str, Any]]
) -> StageLoad:
    """A stage's row from its ``serve.status()`` entry (``api.status.serve_json``'s shape) and
    its replicas' ``stats()`` (those with a ``load`` part count)."""
    row = StageLoad(stage=stage)
    if deployment is not None:
        row.status = deployment.get("status")
        row.replicas = dict(deployment.get("replicas") or {})
        row.running = deployment.get("running")
    loads = [s["load"] for s in stats if s.get("load")]
    if not loads:
        return row
    row.sampled = len(loads)
    row.window_s = round(min(float(x["window_s"]) for x in loads), 1)
    audio, cpu = sum(x["window_audio_s"] for x in loads), sum(x["window_cpu_s"] for x in loads)
    row.window_audio_s = round(audio, 3)
    row.cpu_cores = round(sum(x["window_cpu_s"] / x["window_s"] for x in loads if x["window_s"] > 0), 3)
    row.cpu_per_audio_s = round(cpu / audio, 4) if audio >= MIN_WINDOW_AUDIO_S else None
    busy = _sum([x["window_busy_s"] for x in loads])
    room = sum(x["capacity"] * x["window_s"] for x in loads)
    row.busy_share = round(min(1.0, busy / room), 4) if busy is not None and room > 0 else None
    queued = _sum([s.get("queued_audio_s") for s in stats]) if stage == "ASR" else None
    row.queued_audio_s = round(queued, 3) if queued is not None else None
    return row


def throughput(stats: Sequence[Mapping[str, Any]], now: datetime) -> Throughput | None:
    """ASR replicas' per-minute rings added up over the last ``MINUTES_KEPT`` minutes."""
    rings = [s["load"]["minutes"] for s in stats if s.get("load")]
    if not rings:
        return None
    last = math.floor(now.timestamp() / MINUTE_S)
    minutes = range(last - MINUTES_KEPT + 1, last + 1)
    per = [sum(float(r.get(m, r.get(str(m), 0.0))) for r in rings) for m in minutes]
    return Throughput(
        start=datetime.fromtimestamp(minutes[0] * MINUTE_S, UTC).isoformat().replace("+00:00", "Z"),
        audio_s=[round(x, 3) for x in per],
        total_audio_s=round(sum(per), 3),
    )


def findings(stages: Sequence[StageLoad]) -> list[Finding]:
    """What is saturated, each in plain words; empty when nothing is."""
    out: list[Finding] = []
    for s in stages:
        figures = {"busy_share": s.busy_share, "queued_audio_s": s.queued_audio_s, "window_s": s.window_s}
        queued = s.queued_audio_s or 0.0
        if s.status not in (None, "HEALTHY") and not s.running:
            states = ", ".join(f"{k} {v}" for k, v in s.replicas.items()) or "no replicas"
            text = f"{s.stage} has no running replica ({s.status}: {states})"
            out.append(Finding(kind="down", stage=s.stage, text=text, status=s.status, **figures))
        elif s.busy_share is not None and s.busy_share >= BUSY_SATURATED:
            waiting = f" with {queued:.0f} s of audio queued" if queued >= 1 else ""
            text = f"{s.stage} is busy {s.busy_share:.0%} of the time{waiting}: add {s.stage} replicas"
            out.append(Finding(kind="busy", stage=s.stage, text=text.replace("%", " %"), **figures))
        elif queued >= QUEUE_BACKLOG_S:
            busy = (
                f"{s.busy_share:.0%}".replace("%", " %") if s.busy_share is not None else "an unknown share"
            )
            text = (
                f"{s.stage} has {queued:.0f} s of audio queued though busy {busy} of the time: "
                "a burst just arrived, or batches wait to fill (batch_wait_timeout_s)"
            )
            out.append(Finding(kind="backlog", stage=s.stage, text=text, **figures))
    return out


def load_status(
    deployments: Mapping[str, Mapping[str, Any]] | None,
    stats: Mapping[str, Sequence[Mapping[str, Any]]],
    now: datetime,
) -> LoadStatus:
    """The whole ``load`` part: ``deployments`` from ``serve.status()`` (``None``: unknown),
    ``stats`` the answers of each stage by deployment name."""
    names = list(deployments or {}) + [n for n in stats if n not in (deployments or {})]
    names.sort(key=lambda n: (GRAPH_ORDER.index(n) if n in GRAPH_ORDER else len(GRAPH_ORDER), n))
    rows = [stage_load(n, (deployments or {}).get(n), stats.get(n, ())) for n in names]
    asr = stats.get("ASR", ())
    return LoadStatus(stages=rows, throughput=throughput(asr, now), saturated=findings(rows))
