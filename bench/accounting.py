"""Where a served run's time goes: CPU seconds per audio second by process group, the ASR
batch loops' idle time, the time a request spends between stages, and which ratios are noisy.

* **CPU**: every process of the benchmark's own cluster (the bench process's descendants: Ray
  started them) is put in a group: a stage's replicas (by the GCS actor table, class name
  ``ServeReplica:<app>:<Deployment>``), the HTTP proxy, the Serve controller, raylet,
  gcs_server, Ray's other processes (idle workers, agents, monitors) and the client (the bench
  process, Ray's driver included). ``cpu_times()`` (user + system) is sampled right before
  and after a run; a replica's count includes its reaped children (ffmpeg), a daemon's does
  not (raylet's children are the workers, counted apart). A process born during the run
  counts from zero; one that died during it is lost (``lost`` in the JSON).
* **ASR loops**: the difference of ``stats()``'s ``loop_*_s`` over the run, as shares of the
  loops' time.
* **Stages**: spans by Serve request id (``serve_app.deployments.timing``) joined with the
  client's send and receive times into consecutive gaps, each the median over requests.
* **Noisy**: a ratio is noisy when its per-round values (round ``i``'s served over round
  ``i``'s limit: the rounds are interleaved) spread by more than ``NOISY_SPREAD``:
  ``max / min - 1 > 0.25``.

Nothing here is timed by the benchmark's clock: sampling happens outside the measured run.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NOISY_SPREAD = 0.25
"""A ratio whose rounds spread more than this (``max / min - 1``) is marked noisy."""

STAGES = ("Ingress", "Decode", "VAD", "ASR", "Postprocess", "Streaming", "JobRunner")
GROUPS = (
    *STAGES,
    "other apps",
    "HTTP proxy",
    "Serve controller",
    "raylet",
    "gcs_server",
    "Ray, other",
    "client",
)
"""Table order. "other apps": replicas of the cluster's other apps (another ``--asr-workers``
shape, idle meanwhile)."""

REPLICA_GROUPS = frozenset((*STAGES, "other apps"))
"""Groups whose processes' reaped children count as theirs (a replica's ffmpeg)."""

LOOP_KEYS = {
    "busy": "loop_busy_s",
    "nothing queued": "loop_idle_empty_s",
    "waiting to fill": "loop_idle_fill_s",
}


# --- processes ---------------------------------------------------------------------------


def actor_group(class_name: str, app: str) -> str | None:
    """The group of a Ray actor by its class name, or ``None`` for an actor that is not Serve's."""
    if class_name.startswith("ServeReplica:"):
        _, replica_app, deployment = class_name.split(":", 2)
        if replica_app != app:
            return "other apps"
        return deployment if deployment in STAGES else "other apps"
    if class_name == "ServeController":
        return "Serve controller"
    if class_name in ("ProxyActor", "HAProxyActor"):
        return "HTTP proxy"
    return None


def process_group(name: str, cmdline: Sequence[str]) -> str:
    """The group of a process of the cluster that is not an actor (or not a known one)."""
    line = " ".join(cmdline)
    if name == "raylet" or line.split(" ", 1)[0].endswith("/raylet"):
        return "raylet"
    if name == "gcs_server" or line.split(" ", 1)[0].endswith("/gcs_server"):
        return "gcs_server"
    if name == "haproxy" or "haproxy" in line.split(" ", 1)[0]:
        return "HTTP proxy"
    return "Ray, other"


def discover(app: str) -> dict[int, str]:
    """Every process of this benchmark's cluster, pid → group (needs ``ray.init`` done)."""
    import psutil
    from ray._private import state

    actors = {
        int(a["Pid"]): group
        for a in state.actors(actor_state_name="ALIVE").values()
        if a.get("Pid") and (group := actor_group(str(a["ActorClassName"]), app)) is not None
    }
    me = psutil.Process()
    out = {me.pid: "client"}
    for p in me.children(recursive=True):
        try:
            out[p.pid] = actors.get(p.pid) or process_group(p.name(), p.cmdline())
        except psutil.Error:  # gone meanwhile
            continue
    return out


@dataclass(frozen=True)
class CpuSample:
    pid: int
    group: str
    born: float
    """The process's ``create_time``: a pid reused during the run is another process."""
    cpu_s: float


@dataclass(frozen=True)
class Snapshot:
    t: float
    """``time.time()`` when sampling started."""
    samples: dict[int, CpuSample]


def sample(procs: Mapping[int, str]) -> Snapshot:
    import psutil

    t, out = time.time(), {}
    for pid, group in procs.items():
        try:
            p = psutil.Process(pid)
            c = p.cpu_times()
            own = c.user + c.system
            kids = c.children_user + c.children_system if group in REPLICA_GROUPS else 0.0
            out[pid] = CpuSample(pid, group, p.create_time(), own + kids)
        except psutil.Error:
            continue
    return Snapshot(t, out)


def after(before: Snapshot, app: str) -> Snapshot:
    """The processes of ``before`` sampled again at once, then those born since."""
    first = sample({pid: s.group for pid, s in before.samples.items()})
    born = {pid: g for pid, g in discover(app).items() if pid not in first.samples}
    return Snapshot(first.t, {**first.samples, **sample(born).samples})


@dataclass
class CpuUsage:
    """CPU seconds by group over one run; ``lost``: processes that died during it."""

    by_group: dict[str, float]
    lost: list[str] = field(default_factory=list)

    def per_audio_s(self, audio_s: float) -> dict[str, float]:
        return {g: s / audio_s for g, s in self.by_group.items()}


def usage(before: Snapshot, end: Snapshot) -> CpuUsage:
    by_group: dict[str, float] = defaultdict(float)
    for pid, s in end.samples.items():
        b = before.samples.get(pid)
        if b is not None and b.born == s.born:
            by_group[s.group] += max(0.0, s.cpu_s - b.cpu_s)
        elif s.born >= before.t - 1.0:  # born during the run (create_time is rounded)
            by_group[s.group] += s.cpu_s
    lost = [f"{b.group} {pid}" for pid, b in before.samples.items() if pid not in end.samples]
    return CpuUsage(dict(by_group), lost)


# --- ASR loops ---------------------------------------------------------------------------


def loop_shares(before: Mapping[str, Any], end: Mapping[str, Any]) -> dict[str, float]:
    """The ASR loops' time over a run, as shares of it: busy, nothing queued, waiting to fill."""
    spent = {name: float(end.get(key, 0.0)) - float(before.get(key, 0.0)) for name, key in LOOP_KEYS.items()}
    total = sum(spent.values())
    return {name: s / total if total > 0 else 0.0 for name, s in spent.items()}


# --- stages ------------------------------------------------------------------------------

GAPS = (
    ("client → decode", "sent", "decode_start"),
    ("decode", "decode_start", "decode_end"),
    ("decode → VAD", "decode_end", "vad_start"),
    ("VAD", "vad_start", "vad_end"),
    ("VAD → ASR queue", "vad_end", "asr_queued"),
    ("ASR queue wait", "asr_queued", "asr_start"),
    ("ASR batches", "asr_start", "asr_end"),
    ("ASR → postprocess", "asr_end", "post_start"),
    ("postprocess", "post_start", "post_end"),
    ("postprocess → client", "post_end", "received"),
    ("end to end", "sent", "received"),
)
"""Rows of the stage table: from one stamp of a request to the next. A request's ASR stamps
are its first segment queued, its first batch started and its last batch ended; with windows
(a recording longer than ``VadArgs.segmentation_window_s``) ASR starts before the VAD ends,
and "VAD → ASR queue" goes negative."""


def request_stamps(
    requests: Iterable[tuple[str, float, float]], spans: Iterable[tuple[str, str, float, float]]
) -> dict[str, dict[str, float]]:
    """Per request id: the client's ``sent``/``received`` and the stages' stamps (``GAPS``),
    from the client's ``(id, sent, received)`` and the stages' ``(id, what, start, end)``."""
    out: dict[str, dict[str, float]] = {rid: {"sent": t0, "received": t1} for rid, t0, t1 in requests}

    def first(d: dict[str, float], key: str, t: float) -> None:
        d[key] = min(d.get(key, t), t)

    def last(d: dict[str, float], key: str, t: float) -> None:
        d[key] = max(d.get(key, t), t)

    for rid, what, start, end in spans:
        d = out.get(rid)
        if d is None:  # not one of this run's requests (a warm-up, another app)
            continue
        if what == "asr_queue":
            first(d, "asr_queued", start)
        elif what == "asr_batch":
            first(d, "asr_start", start)
            last(d, "asr_end", end)
        elif what in ("decode", "vad", "post"):
            first(d, f"{what}_start", start)
            last(d, f"{what}_end", end)
    return out


def segment_queue_waits(spans: Iterable[tuple[str, str, float, float]], ids: set[str]) -> list[float]:
    """Every segment's wait in the ASR queue (queued → its batch started), for ``ids``."""
    return [end - start for rid, what, start, end in spans if what == "asr_queue" and rid in ids]


def gap_medians(stamps: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The median of each ``GAPS`` row over the requests that have both its stamps."""
    out = {}
    for name, a, b in GAPS:
        values = [d[b] - d[a] for d in stamps.values() if a in d and b in d]
        if values:
            out[name] = statistics.median(values)
    return out


# --- noise -------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> float:
    """``max / min - 1`` of the rounds' values (0 for one round)."""
    lo, hi = min(values), max(values)
    return hi / lo - 1 if lo > 0 else float("inf")


def noisy(values: Sequence[float]) -> bool:
    return len(values) > 1 and spread(values) > NOISY_SPREAD


def round_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Round ``i``'s ratio, ``num[i] / den[i]`` (the rounds are interleaved: one drift each)."""
    return [n / d for n, d in zip(num, den, strict=True)]


# --- tables ------------------------------------------------------------------------------


def median_of(rounds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Key by key (in the order first seen), the median over rounds (a key missing from a
    round counts as 0 there)."""
    keys = dict.fromkeys(k for r in rounds for k in r)
    return {k: statistics.median(r.get(k, 0.0) for r in rounds) for k in keys}


def markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(lines)


@dataclass
class Accounting:
    """One served run's accounting (what ``bench.run`` keeps in ``Run.extra["accounting"]``)."""

    audio_s: float
    wall_s: float
    cpu: CpuUsage
    loops: dict[str, float]
    gaps: dict[str, float]
    queue_wait_p50_s: float | None

    def cpu_per_audio_s(self) -> dict[str, float]:
        per = self.cpu.per_audio_s(self.audio_s)
        return {
            **per,
            "total": sum(per.values()),
            "cores used": sum(self.cpu.by_group.values()) / self.wall_s,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "cpu_s_per_audio_s": self.cpu_per_audio_s(),
            "cpu_s": self.cpu.by_group,
            "lost": self.cpu.lost,
            "asr_loops": self.loops,
            "stage_gaps_s": self.gaps,
            "segment_queue_wait_p50_s": self.queue_wait_p50_s,
        }


def tables(columns: Mapping[str, Sequence[Accounting]]) -> str:
    """The CPU and stage tables, one column per served arrangement (medians of its rounds)."""
    cpu = {c: median_of([a.cpu_per_audio_s() for a in runs]) for c, runs in columns.items()}
    loops = {c: median_of([a.loops for a in runs]) for c, runs in columns.items()}
    gaps = {c: median_of([a.gaps for a in runs]) for c, runs in columns.items()}
    waits = {
        c: [a.queue_wait_p50_s for a in runs if a.queue_wait_p50_s is not None] for c, runs in columns.items()
    }
    header = ["CPU-s per audio-s", *columns]
    rows = [[g, *(f"{cpu[c].get(g, 0.0):.4f}" for c in columns)] for g in (*GROUPS, "total")]
    rows = [r for r in rows if any(x != "0.0000" for x in r[1:]) or r[0] == "total"]
    rows.append(["cores used (CPU-s / wall-s)", *(f"{cpu[c].get('cores used', 0.0):.2f}" for c in columns)])
    rows += [[f"ASR loops: {k}", *(f"{loops[c].get(k, 0.0):.0%}" for c in columns)] for k in LOOP_KEYS]
    stage_rows = [
        [name, *(f"{gaps[c][name]:.3f}" if name in gaps[c] else "" for c in columns)] for name, _, _ in GAPS
    ]
    stage_rows.append(
        [
            "ASR queue wait, per segment",
            *(f"{statistics.median(waits[c]):.3f}" if waits[c] else "" for c in columns),
        ]
    )
    return (
        markdown(header, rows) + "\n\n" + markdown(["stage time per request, median s", *columns], stage_rows)
    )
