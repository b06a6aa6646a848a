"""Turn a capacity run's Locust CSVs into ``report.md`` and three plots.

    python -m load.report results/load [--p95-slo-s 10] [--max-error-rate 0.01]

Works from the CSVs alone (``<prefix>_stats.csv`` and ``<prefix>_stats_history.csv`` written by
``locust --csv <prefix> --csv-full-history``); ``run.json`` from ``load.capacity`` is optional
and only adds the run's settings to the text.

Where each number comes from:

* **Steps** are the user counts of the run. A request counts in the step whose target user
  count was set when it *completed* (the ``step/u<N>/ok|error`` events, see ``load/metrics.py``).
* **Step duration**: the span of the history rows (one a second) whose User Count is that step's,
  plus one sampling interval. Good to about one second per step.
* **requests/s** = (successes + failures) / duration.
* **audio-s/s** = audio seconds of *successful* requests / duration. Each success event carries
  the exact length of the clip it sent (Request Count x Average Content Size = audio ms), so this
  is the mix actually sent, not the expected mix: with a 300 s clip at weight 0.05, one more or
  one fewer long clip in a step moves the figure far more than the weights would suggest.
* **p50 / p95** are over successful requests (Locust rounds times above 10 s to 1 s, so these are
  good to about 5 %). A fast 429 must not make the latency look better.
* **error rate** = failures / (successes + failures).

When the run had realtime or batch-job users (``RealtimeUser``, ``BatchJobUser``), their figures
follow, per step, from their own events (``load/metrics.py``; how the realtime latencies are taken:
``load/realtime.py``):

* **realtime**: sessions ended in the step and how many failed; first partial, partial latency
  and final-after-end p50 / p95 over all sessions of the step (failed ones' partials included).
* **batch jobs**: jobs ended in the step and how many failed; completion time p50 / p95 and each
  job's audio-s/s p50 over completed jobs; **job audio-s/s** = audio of the jobs completed in the
  step / step duration (a job completes as a whole, so a step short against the jobs is noisy).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from load import metrics

DEFAULT_PREFIX = "locust"
DEFAULT_P95_SLO_S = 10.0
DEFAULT_MAX_ERROR_RATE = 0.01
KNEE_MAX_THROUGHPUT_GAIN = 0.10
KNEE_MIN_P95_GROWTH = 0.25
HOURS_PER_DAY_FACTOR = 86_400 / 3_600  # audio-s/s sustained for a day, in audio hours
TRANSCRIPTIONS_NAME = "/v1/audio/transcriptions"
PLOTS = ("throughput.png", "p95_latency.png", "error_rate.png")
MIN_STEP_REQUESTS = 10
"""Below this many completed requests a step's percentiles are flagged as rough."""


@dataclass(frozen=True)
class StepResult:
    """One user count of the step load and what the server did under it."""

    users: int
    duration_s: float
    ok: int
    errors: int
    audio_s: float
    p50_s: float | None
    p95_s: float | None

    @property
    def requests(self) -> int:
        return self.ok + self.errors

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s

    @property
    def audio_s_per_s(self) -> float:
        return self.audio_s / self.duration_s

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Percentiles:
    """p50 / p95 of one custom event, seconds (Locust's rounding: about 1 % under 10 s)."""

    count: int
    p50_s: float | None
    p95_s: float | None


NO_EVENTS = Percentiles(0, None, None)


@dataclass(frozen=True)
class RealtimeStep:
    """The realtime sessions that ended at one user count."""

    users: int
    sessions: int
    failed: int
    audio_s: float
    first_partial: Percentiles
    partial: Percentiles
    final_after_end: Percentiles


@dataclass(frozen=True)
class JobStep:
    """The batch jobs that ended at one user count."""

    users: int
    duration_s: float
    completed: int
    failed: int
    audio_s: float
    """Audio seconds of the completed jobs."""
    completion: Percentiles
    audio_rate: Percentiles
    """Per completed job, audio-s/s (its p50_s / p95_s hold audio-s/s, not seconds)."""

    @property
    def audio_s_per_s(self) -> float:
        return self.audio_s / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True)
class Capacity:
    """The best step that met the latency and error targets, and its daily audio volume."""

    step: StepResult | None
    audio_hours_per_day: float


def _ms_to_s(value: str) -> float | None:
    return None if value in ("", "N/A") else float(value) / 1000.0


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def step_durations(history_rows: Sequence[dict[str, str]], min_rows: int = 2) -> dict[int, float]:
    """Seconds spent at each user count, from the Aggregated rows of the stats history.

    Counts held for fewer than ``min_rows`` samples are ramps between steps, not steps.
    """
    seen: dict[int, list[int]] = defaultdict(list)
    for row in history_rows:
        if row["Name"] == "Aggregated" and int(row["User Count"]) > 0:
            seen[int(row["User Count"])].append(int(row["Timestamp"]))
    stamps = sorted({t for ts in seen.values() for t in ts})
    interval = statistics.median(b - a for a, b in pairwise(stamps)) if len(stamps) > 1 else 1.0
    return {users: max(ts) - min(ts) + interval for users, ts in sorted(seen.items()) if len(ts) >= min_rows}


def load_steps(results_dir: Path, prefix: str = DEFAULT_PREFIX) -> list[StepResult]:
    """Per-step results from ``<prefix>_stats.csv`` and ``<prefix>_stats_history.csv``."""
    stats = _read_csv(results_dir / f"{prefix}_stats.csv")
    durations = step_durations(_read_csv(results_dir / f"{prefix}_stats_history.csv"))
    ok_rows: dict[int, dict[str, str]] = {}
    error_counts: dict[int, int] = defaultdict(int)
    for row in stats:
        parsed = metrics.parse_step_name(row["Name"]) if row["Type"] == metrics.STEP_TYPE else None
        if parsed is None:
            continue
        users, ok = parsed
        if ok:
            ok_rows[users] = row
        else:
            error_counts[users] += int(row["Request Count"])
    missing = (set(ok_rows) | set(error_counts)) - set(durations)
    if missing:
        raise ValueError(
            f"no stats-history rows for user counts {sorted(missing)}: was --csv-full-history set?"
        )
    if not durations:
        raise ValueError(f"no steps found in {results_dir}: the history has no rows with users > 0")
    steps = []
    for users, duration in durations.items():
        ok_row = ok_rows.get(users)
        n_ok = int(ok_row["Request Count"]) if ok_row else 0
        steps.append(
            StepResult(
                users=users,
                duration_s=duration,
                ok=n_ok,
                errors=error_counts.get(users, 0),
                audio_s=n_ok * float(ok_row["Average Content Size"]) / 1000.0 if ok_row else 0.0,
                p50_s=_ms_to_s(ok_row["50%"]) if ok_row else None,
                p95_s=_ms_to_s(ok_row["95%"]) if ok_row else None,
            )
        )
    return steps


def _percentiles(row: dict[str, str] | None) -> Percentiles:
    if row is None or not int(row["Request Count"]):
        return NO_EVENTS
    return Percentiles(int(row["Request Count"]), _ms_to_s(row["50%"]), _ms_to_s(row["95%"]))


def _kind_rows(
    stats: Sequence[dict[str, str]], family: str, type_: str
) -> dict[int, dict[str, dict[str, str]]]:
    """``{users: {kind: row}}`` of the ``<family>/u<users>/<kind>`` events of ``type_``."""
    out: dict[int, dict[str, dict[str, str]]] = defaultdict(dict)
    for row in stats:
        parsed = metrics.parse_kind_name(row["Name"]) if row["Type"] == type_ else None
        if parsed is not None and parsed[0] == family:
            out[parsed[1]][parsed[2]] = row
    return dict(sorted(out.items()))


def realtime_steps(stats: Sequence[dict[str, str]]) -> list[RealtimeStep]:
    """Per-step realtime figures from the ``realtime/u<N>/<kind>`` rows (none: no realtime users)."""
    steps = []
    for users, rows in _kind_rows(stats, "realtime", metrics.REALTIME_TYPE).items():
        session = rows.get("session")
        count = int(session["Request Count"]) if session else 0
        steps.append(
            RealtimeStep(
                users=users,
                sessions=count,
                failed=int(session["Failure Count"]) if session else 0,
                audio_s=count * float(session["Average Content Size"]) / 1000.0 if session else 0.0,
                first_partial=_percentiles(rows.get("first_partial")),
                partial=_percentiles(rows.get("partial")),
                final_after_end=_percentiles(rows.get("final_after_end")),
            )
        )
    return steps


def job_steps(stats: Sequence[dict[str, str]], durations: dict[int, float]) -> list[JobStep]:
    """Per-step batch-job figures from the ``job/u<N>/<kind>`` rows (none: no batch-job users)."""
    steps = []
    for users, rows in _kind_rows(stats, "job", metrics.JOB_TYPE).items():
        done, failed = rows.get("completion"), rows.get("failed")
        completed = int(done["Request Count"]) if done else 0
        rate = _percentiles(rows.get("audio_rate"))
        steps.append(
            JobStep(
                users=users,
                duration_s=durations.get(users, 0.0),
                completed=completed,
                failed=int(failed["Request Count"]) if failed else 0,
                audio_s=completed * float(done["Average Content Size"]) / 1000.0 if done else 0.0,
                completion=_percentiles(done),
                # audio_rate events hold audio-s/s x 1000 as their "response time".
                audio_rate=rate,
            )
        )
    return steps


def find_knee(
    steps: Sequence[StepResult],
    max_throughput_gain: float = KNEE_MAX_THROUGHPUT_GAIN,
    min_p95_growth: float = KNEE_MIN_P95_GROWTH,
) -> StepResult | None:
    """The first step where more users stopped buying throughput but still cost latency:
    audio-s/s grew by less than ``max_throughput_gain`` (10 %) over the previous step while p95
    latency grew by more than ``min_p95_growth`` (25 %). Past it the server is saturated and extra
    users only queue. Steps without a p95 or with zero throughput are not compared."""
    for prev, cur in pairwise(steps):
        if prev.audio_s_per_s <= 0 or prev.p95_s is None or cur.p95_s is None or prev.p95_s <= 0:
            continue
        gain = cur.audio_s_per_s / prev.audio_s_per_s - 1.0
        growth = cur.p95_s / prev.p95_s - 1.0
        if gain < max_throughput_gain and growth > min_p95_growth:
            return cur
    return None


def capacity_at_slo(
    steps: Sequence[StepResult], p95_slo_s: float, max_error_rate: float = DEFAULT_MAX_ERROR_RATE
) -> Capacity:
    """Max audio-s/s over steps with p95 < ``p95_slo_s`` and error rate <= ``max_error_rate``,
    as audio hours per day (x 86400 / 3600). The error cap keeps a step that shed most of its
    load with 429s from counting as capacity."""
    eligible = [
        s
        for s in steps
        if s.p95_s is not None and s.p95_s < p95_slo_s and s.error_rate <= max_error_rate and s.ok
    ]
    if not eligible:
        return Capacity(step=None, audio_hours_per_day=0.0)
    best = max(eligible, key=lambda s: s.audio_s_per_s)
    return Capacity(step=best, audio_hours_per_day=best.audio_s_per_s * HOURS_PER_DAY_FACTOR)


def write_plots(steps: Sequence[StepResult], out_dir: Path, p95_slo_s: float) -> list[Path]:
    """``throughput.png``, ``p95_latency.png`` and ``error_rate.png`` against users."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    users = [s.users for s in steps]
    paths = [out_dir / name for name in PLOTS]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(users, [s.audio_s_per_s for s in steps], "o-", label="audio-s/s (successes)")
    _users_axis(ax, users)
    ax.set_ylabel("audio seconds per second")
    ax2 = ax.twinx()
    ax2.plot(users, [s.requests_per_s for s in steps], "s--", color="tab:orange", label="requests/s")
    ax2.set_ylabel("requests per second")
    ax2.set_ylim(bottom=0)
    fig.legend(loc="upper left", bbox_to_anchor=(0.12, 0.88))
    ax.set_title("Throughput")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(users, [_nan(s.p95_s) for s in steps], "o-", label="p95")
    ax.plot(users, [_nan(s.p50_s) for s in steps], "s--", label="p50")
    ax.axhline(p95_slo_s, color="tab:red", linestyle=":", label=f"p95 target {p95_slo_s:g} s")
    _users_axis(ax, users)
    ax.set_ylabel("latency of successful requests (s)")
    ax.set_title("Latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(users, [100.0 * s.error_rate for s in steps], "o-", color="tab:red")
    _users_axis(ax, users)
    ax.set_ylabel("failed requests (%)")
    ax.set_title("Error rate")
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths


def _users_axis(ax: Any, users: Sequence[int]) -> None:
    """Ticks at the step user counts; y from zero so growth is not exaggerated."""
    ax.set_xlabel("users")
    ax.set_xticks(list(users))
    ax.set_ylim(bottom=0)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _s_to_ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _sample_warnings(steps: Sequence[StepResult]) -> list[str]:
    """Flag steps too thin to read; the knee rule skips steps without a p95 rather than guess."""
    lines = []
    for s in steps:
        if s.requests == 0:
            lines.append(
                f"- **{s.users} users: no request completed within the step**, so every request in flight "
                "took longer than the step: the server is saturated or the step is too short for the clip "
                "mix (a 300 s clip needs 300 s x RTF alone). Lengthen --step-time."
            )
        elif s.requests < MIN_STEP_REQUESTS:
            lines.append(
                f"- {s.users} users: only {s.requests} requests completed; its percentiles are rough."
            )
    return ["", *lines] if lines else []


def _other_sections(stats: Sequence[dict[str, str]], failures: Sequence[dict[str, str]]) -> list[str]:
    """Whole-run lines: RTF, latency per clip length and the failure causes."""
    lines: list[str] = []
    rtf = next((r for r in stats if r["Type"] == metrics.RTF_TYPE and r["Name"] == metrics.RTF_NAME), None)
    if rtf is not None and int(rtf["Request Count"]):
        # RTF events store RTF x 1000 as their "response time".
        lines += [
            "",
            f"Real-time factor over the whole run (latency / audio length, successes): "
            f"p50 {_fmt(_ms_to_s(rtf['50%']), 3)}, p95 {_fmt(_ms_to_s(rtf['95%']), 3)}.",
        ]
    buckets = [r for r in stats if r["Type"] == metrics.LATENCY_TYPE]
    if buckets:
        buckets.sort(key=lambda r: float(r["Name"].rsplit("/", 1)[-1].rstrip("s") or 0))
        lines += ["", "| clip | successes | p50 s | p95 s |", "|---|---:|---:|---:|"]
        lines += [
            f"| {r['Name'].rsplit('/', 1)[-1]} | {r['Request Count']} | {_fmt(_ms_to_s(r['50%']))} | "
            f"{_fmt(_ms_to_s(r['95%']))} |"
            for r in buckets
        ]
    causes = [r for r in failures if r["Name"] == TRANSCRIPTIONS_NAME]
    if causes:
        lines += ["", "Failures: " + "; ".join(f"{r['Error']} × {r['Occurrences']}" for r in causes) + "."]
    lines += _failure_causes(failures, families=("realtime/", "job/"))
    return lines


def _realtime_section(steps: Sequence[RealtimeStep]) -> list[str]:
    if not steps:
        return []
    lines = [
        "",
        "## Realtime sessions",
        "",
        "FunASR's protocol over a WebSocket, audio paced at real time (`RealtimeUser`). Partial latency is "
        "taken after the latest 600 ms chunk boundary sent (`load/realtime.py`): a lower bound once the "
        "server falls a chunk behind, which final-after-end shows instead.",
        "",
        "| users | sessions | failed | audio s | first partial p50 s | p95 s | partial p50 ms | p95 ms | "
        "final after end p50 s | p95 s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.users} | {s.sessions} | {s.failed} | {s.audio_s:.0f} | {_fmt(s.first_partial.p50_s)} | "
        f"{_fmt(s.first_partial.p95_s)} | {_fmt(_s_to_ms(s.partial.p50_s), 0)} | "
        f"{_fmt(_s_to_ms(s.partial.p95_s), 0)} | {_fmt(s.final_after_end.p50_s)} | {_fmt(s.final_after_end.p95_s)} |"
        for s in steps
    ]
    return lines


def _jobs_section(steps: Sequence[JobStep]) -> list[str]:
    if not steps:
        return []
    lines = [
        "",
        "## Batch jobs",
        "",
        "Multipart `POST /v1/jobs`, polled to the end (`BatchJobUser`). Completion = upload + the server's "
        "`finished_at - created_at`; job audio-s/s = audio of the jobs completed in the step / step duration.",
        "",
        "| users | completed | failed | completion p50 s | p95 s | audio-s/s per job, p50 | job audio-s/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.users} | {s.completed} | {s.failed} | {_fmt(s.completion.p50_s)} | {_fmt(s.completion.p95_s)} | "
        # audio_rate percentiles are audio-s/s (the events' x 1000 undone by _ms_to_s).
        f"{_fmt(s.audio_rate.p50_s)} | {s.audio_s_per_s:.2f} |"
        for s in steps
    ]
    return lines


def _replicas_section(capacity: Capacity, p95_slo_s: float, run: dict[str, Any]) -> list[str]:
    """Say what a replicas-per-GPU figure needs instead of guessing one."""
    gpu = run.get("gpu")
    if not run:
        why = "the CSVs do not record the server's hardware or replica layout"
    elif gpu:
        why = (
            f"this run had a GPU ({gpu}) but measured one replica layout, i.e. one point C(r); "
            "the rule below needs C at r and r + 1 replicas on the same GPU"
        )
    else:
        why = "no GPU was visible on the load host, and the server was on loopback, so it ran on CPU"
    c = f"{capacity.step.audio_s_per_s:.2f}" if capacity.step else "none (no step met the target)"
    return [
        "",
        "## Recommended replicas per GPU",
        "",
        f"**Not determined by this run: {why}.** It needs a GPU run. Repeat this command on a GPU host "
        "with the ASR deployment at r = 1, 2, 3, … replicas sharing one GPU "
        "(`ray_actor_options: {num_gpus: 1/r}` in the deploy YAML) and read C(r), the audio-s/s at "
        f"p95 < {p95_slo_s:g} s, from each report. Then:",
        "",
        "```",
        "replicas_per_gpu = min( smallest r with C(r+1) < 1.10 * C(r),",
        "                        floor(0.9 * GPU memory / peak GPU memory of one ASR replica) )",
        "GPUs for H audio-hours/day = ceil( H * 3600 / 86400 / C(replicas_per_gpu) )",
        "```",
        "",
        f"Inputs this run provides: C = {c} audio-s/s for the layout it ran "
        f"(GPU: {gpu or ('none' if run else 'not recorded')}); per-replica GPU memory: not measured.",
    ]


def render_report(
    steps: Sequence[StepResult],
    p95_slo_s: float,
    max_error_rate: float,
    stats: Sequence[dict[str, str]] = (),
    failures: Sequence[dict[str, str]] = (),
    run: dict[str, Any] | None = None,
    realtime: Sequence[RealtimeStep] = (),
    jobs: Sequence[JobStep] = (),
) -> str:
    run = run or {}
    if not any(s.requests for s in steps) and (realtime or jobs):
        return _render_without_files(run, realtime, jobs, failures)
    knee = find_knee(steps)
    capacity = capacity_at_slo(steps, p95_slo_s, max_error_rate)
    lines = ["# Capacity report", ""]
    if run:
        lines += [
            f"Host {run.get('host', '?')}, users {run.get('users', '?')}, {run.get('step_time_s', '?')} s per step, "
            f"started {run.get('started_at', '?')}.",
            "",
        ]
    lines += [
        "| users | step s | requests | requests/s | audio-s/s | p50 s | p95 s | errors % |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {s.users} | {s.duration_s:.0f} | {s.requests} | {s.requests_per_s:.2f} | {s.audio_s_per_s:.2f} | "
        f"{_fmt(s.p50_s)} | {_fmt(s.p95_s)} | {100.0 * s.error_rate:.1f} |"
        for s in steps
    ]
    lines += _sample_warnings(steps)
    lines += [
        "",
        "Requests count in the step in which they completed; audio-s/s and latencies are over successful "
        "requests only; a long clip that completes in a step adds all its audio to that step, so short "
        "steps are noisy.",
        "",
        "## Knee",
        "",
        f"Rule: the first step where audio-s/s grew by less than {KNEE_MAX_THROUGHPUT_GAIN:.0%} over the "
        f"previous step while p95 latency grew by more than {KNEE_MIN_P95_GROWTH:.0%}.",
        "",
    ]
    if knee is None:
        blind = [s.users for s in steps if s.p95_s is None]
        lines.append(
            "No knee within this plan: throughput kept growing (or latency stayed flat) up to the last step."
            if not blind
            else f"No knee among the steps with a p95; steps at {blind} users had none and were not compared."
        )
    else:
        lines.append(f"**Knee at {knee.users} users**: more users only queue past this point.")
    lines += ["", "## Capacity at the latency target", ""]
    if capacity.step is None:
        lines.append(
            f"No step had p95 < {p95_slo_s:g} s with at most {max_error_rate:.0%} errors: 0 audio hours/day."
        )
    else:
        lines.append(
            f"**{capacity.audio_hours_per_day:.1f} audio hours per day at p95 < {p95_slo_s:g} s** "
            f"= {capacity.step.audio_s_per_s:.2f} audio-s/s (best step: {capacity.step.users} users, "
            f"p95 {capacity.step.p95_s:.2f} s, {100 * capacity.step.error_rate:.1f} % errors) × 86400 / 3600. "
            f"Steps with more than {max_error_rate:.0%} errors do not count."
        )
    lines += _other_sections(stats, failures)
    lines += _realtime_section(realtime)
    lines += _jobs_section(jobs)
    lines += _replicas_section(capacity, p95_slo_s, run)
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS) + "."]
    return "\n".join(lines) + "\n"


def _render_without_files(
    run: dict[str, Any],
    realtime: Sequence[RealtimeStep],
    jobs: Sequence[JobStep],
    failures: Sequence[dict[str, str]],
) -> str:
    """A run of realtime and batch-job users only: their tables, no file-transcription capacity."""
    lines = ["# Capacity report", ""]
    if run:
        lines += [f"Host {run.get('host', '?')}, started {run.get('started_at', '?')}.", ""]
    lines.append(
        "No file transcriptions in this run (no `FileTranscriptionUser`): throughput, knee and "
        "capacity at the latency target need them."
    )
    lines += _realtime_section(realtime)
    lines += _jobs_section(jobs)
    lines += _failure_causes(failures, families=("realtime/", "job/"))
    return "\n".join(lines) + "\n"


def _failure_causes(failures: Sequence[dict[str, str]], families: Sequence[str]) -> list[str]:
    """The failure causes of the realtime and job events, summed over steps."""
    causes: dict[str, int] = defaultdict(int)
    for r in failures:
        if r["Name"].startswith(tuple(families)):
            causes[f"{r['Name'].split('/', 1)[0]}: {r['Error']}"] += int(r["Occurrences"])
    if not causes:
        return []
    return [
        "",
        "Realtime and job failures: " + "; ".join(f"{k} × {n}" for k, n in sorted(causes.items())) + ".",
    ]


def write_report(
    results_dir: str | Path,
    p95_slo_s: float = DEFAULT_P95_SLO_S,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
    prefix: str = DEFAULT_PREFIX,
) -> Path:
    """Write ``report.md`` and the plots into ``results_dir``; return the report's path."""
    out = Path(results_dir)
    steps = load_steps(out, prefix)
    failures_csv = out / f"{prefix}_failures.csv"
    run_json = out / "run.json"
    stats = _read_csv(out / f"{prefix}_stats.csv")
    durations = {s.users: s.duration_s for s in steps}
    text = render_report(
        steps,
        p95_slo_s,
        max_error_rate,
        stats=stats,
        failures=_read_csv(failures_csv) if failures_csv.exists() else [],
        run=json.loads(run_json.read_text()) if run_json.exists() else None,
        realtime=realtime_steps(stats),
        jobs=job_steps(stats, durations),
    )
    write_plots(steps, out, p95_slo_s)
    report = out / "report.md"
    report.write_text(text)
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write report.md and plots from a capacity run's Locust CSVs."
    )
    parser.add_argument("results_dir", type=Path)
    parser.add_argument(
        "--p95-slo-s", type=float, default=DEFAULT_P95_SLO_S, help="p95 latency target, seconds"
    )
    parser.add_argument("--max-error-rate", type=float, default=DEFAULT_MAX_ERROR_RATE, help="0.01 = 1 %%")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="the --csv prefix Locust was given")
    args = parser.parse_args(argv)
    report = write_report(args.results_dir, args.p95_slo_s, args.max_error_rate, args.prefix)
    print(report.read_text(), end="")
    print(f"\nwrote {report} and {', '.join(PLOTS)}")


if __name__ == "__main__":
    main()
