"""The capacity report (``load/report.py``) from synthetic Locust CSVs; no server, no Ray, and no
Locust import (it monkey-patches the whole test process with gevent)."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from load import metrics, report
from load.hosts import RemoteHostRefused, check_host
from load.plan import StepPlan

# Column headers exactly as Locust 2.x writes them (locust/stats.py, StatsCSV and
# StatsCSVFileWriter, default percentiles); checked against a real headless run.
PERCENTILES = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
STATS_COLUMNS = [
    "Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time",
    "Min Response Time", "Max Response Time", "Average Content Size", "Requests/s", "Failures/s", *PERCENTILES,
]  # fmt: skip
HISTORY_COLUMNS = [
    "Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *PERCENTILES,
    "Total Request Count", "Total Failure Count", "Total Median Response Time", "Total Average Response Time",
    "Total Min Response Time", "Total Max Response Time", "Total Average Content Size",
]  # fmt: skip
FAILURES_COLUMNS = ["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"]
T0 = 1_795_243_483


@dataclass(frozen=True)
class FakeStep:
    """What the server did at one user count, as the synthetic CSVs will report it."""

    users: int
    ok: int
    p95_ms: int
    errors: int = 0
    mean_audio_s: float = 30.0
    seconds: int = 30


def _stats_row(
    type_: str, name: str, count: int, failures: int, p50: int, p95: int, size: float
) -> list[object]:
    pct = [p50, p50, p50, p50, p95, p95, p95, p95, p95, p95, p95] if count else ["N/A"] * len(PERCENTILES)
    return [
        type_,
        name,
        count,
        failures,
        p50,
        (p50 + p95) / 2,
        p50 / 2,
        p95,
        size,
        count / 60,
        failures / 60,
        *pct,
    ]


def _write(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_locust_csvs(out: Path, steps: Sequence[FakeStep]) -> Path:
    """``locust_stats.csv``, ``locust_stats_history.csv`` and ``locust_failures.csv`` as a
    ``--csv out/locust --csv-full-history`` run of the locustfile would leave them."""
    stats: list[list[object]] = []
    for s in steps:
        audio_ms = s.mean_audio_s * 1000  # the locustfile's ok events carry audio ms as content size
        stats.append(
            _stats_row(
                metrics.STEP_TYPE,
                metrics.step_name(s.users, True),
                s.ok,
                0,
                s.p95_ms // 2,
                s.p95_ms,
                audio_ms,
            )
        )
        if s.errors:
            error_name = metrics.step_name(s.users, False)
            stats.append(_stats_row(metrics.STEP_TYPE, error_name, s.errors, s.errors, 50, 90, 0))
    total_ok, total_err = sum(s.ok for s in steps), sum(s.errors for s in steps)
    stats += [
        _stats_row("POST", "/v1/audio/transcriptions", total_ok + total_err, total_err, 900, 3000, 180.5),
        _stats_row(metrics.RTF_TYPE, metrics.RTF_NAME, total_ok, 0, 80, 150, 0.0),
        _stats_row(metrics.LATENCY_TYPE, metrics.final_latency_name("300s"), 2, 0, 30000, 31000, 0.0),
        _stats_row(metrics.LATENCY_TYPE, metrics.final_latency_name("2s"), 9, 0, 300, 400, 0.0),
        _stats_row("", "Aggregated", 3 * total_ok + total_err, total_err, 500, 3000, 9000.0),
    ]
    _write(out / "locust_stats.csv", STATS_COLUMNS, stats)

    history: list[list[object]] = [
        [T0, 0, "", "Aggregated", "0.000000", "0.000000", *["N/A"] * 11, 0, 0, 0, 0.0, 0, 0, 0]
    ]
    t = T0 + 1
    for s in steps:
        for _ in range(s.seconds):  # one Aggregated row a second, plus a per-entry row (full history)
            history.append([t, s.users, metrics.STEP_TYPE, metrics.step_name(s.users, True), "1.0", "0.0",
                            *[1000] * 11, s.ok, 0, 1000, 1000.0, 500, 2000, s.mean_audio_s * 1000])  # fmt: skip
            history.append(
                [t, s.users, "", "Aggregated", "1.0", "0.0", *[1000] * 11, 1, 0, 1000, 1000.0, 500, 2000, 1]
            )
            t += 1
    history.append([t, 0, "", "Aggregated", "0.0", "0.0", *["N/A"] * 11, 1, 0, 1000, 1000.0, 500, 2000, 1])
    _write(out / "locust_stats_history.csv", HISTORY_COLUMNS, history)

    failures = [
        ["POST", "/v1/audio/transcriptions", "TranscriptionFailed('429 overloaded')", total_err, "", ""]
    ]
    _write(out / "locust_failures.csv", FAILURES_COLUMNS, failures if total_err else [])
    return out


CsvFactory = Callable[[Sequence[FakeStep]], Path]


@pytest.fixture
def locust_csvs(tmp_path: Path) -> CsvFactory:
    return lambda steps: write_locust_csvs(tmp_path, steps)


# Audio-s/s 10, 19, 27, 28, 40: the 8-user step gains 3.7 % throughput for 54 % more p95 (the knee);
# the 16-user step is fastest but fails 20 % of its requests.
SATURATING = [
    FakeStep(users=1, ok=10, p95_ms=2000),
    FakeStep(users=2, ok=19, p95_ms=2200),
    FakeStep(users=4, ok=27, p95_ms=2600),
    FakeStep(users=8, ok=28, p95_ms=4000),
    FakeStep(users=16, ok=40, errors=10, p95_ms=5000),
]


def test_steps_are_read_from_the_csvs(locust_csvs: CsvFactory) -> None:
    steps = report.load_steps(locust_csvs(SATURATING))
    assert [s.users for s in steps] == [1, 2, 4, 8, 16], f"got {steps}"
    four = steps[2]
    assert four.duration_s == pytest.approx(30.0), f"got {four}"
    assert four.audio_s_per_s == pytest.approx(27.0), f"got {four}"
    assert four.requests_per_s == pytest.approx(0.9), f"got {four}"
    assert (four.p50_s, four.p95_s) == (pytest.approx(1.3), pytest.approx(2.6)), f"got {four}"
    assert steps[-1].error_rate == pytest.approx(0.2), f"got {steps[-1]}"


def test_knee_is_the_first_step_that_buys_latency_not_throughput(locust_csvs: CsvFactory) -> None:
    knee = report.find_knee(report.load_steps(locust_csvs(SATURATING)))
    assert knee is not None and knee.users == 8, f"got {knee}"


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(FakeStep(users=2, ok=10, p95_ms=2100), id="flat-throughput-flat-latency"),
        pytest.param(FakeStep(users=2, ok=15, p95_ms=4000), id="latency-up-but-throughput-too"),
    ],
)
def test_no_knee_unless_both_conditions_hold(locust_csvs: CsvFactory, second: FakeStep) -> None:
    steps = report.load_steps(locust_csvs([FakeStep(users=1, ok=10, p95_ms=2000), second]))
    assert report.find_knee(steps) is None, f"got {steps}"


@pytest.mark.parametrize(
    ("slo_s", "best_users", "hours"),
    [
        (10.0, 8, 28 * 24.0),  # the 16-user step is faster but over the 1 % error cap
        (3.0, 4, 27 * 24.0),  # the 8-user step's p95 of 4 s misses a 3 s target
        (1.0, None, 0.0),
    ],
)
def test_audio_hours_per_day_at_the_p95_target(
    locust_csvs: CsvFactory, slo_s: float, best_users: int | None, hours: float
) -> None:
    capacity = report.capacity_at_slo(report.load_steps(locust_csvs(SATURATING)), p95_slo_s=slo_s)
    got_users = capacity.step.users if capacity.step else None
    assert (got_users, capacity.audio_hours_per_day) == (best_users, pytest.approx(hours)), f"got {capacity}"


def test_report_and_plots_are_written(locust_csvs: CsvFactory) -> None:
    out = locust_csvs(SATURATING)
    path = report.write_report(out, p95_slo_s=10.0)
    text = path.read_text()
    assert path == out / "report.md"
    for expected in (
        "| 4 | 30 | 27 | 0.90 | 27.00 | 1.30 | 2.60 | 0.0 |",
        "**Knee at 8 users**",
        "**672.0 audio hours per day at p95 < 10 s**",
        "Not determined by this run",
        "429 overloaded",
    ):
        assert expected in text, f"{expected!r} not in:\n{text}"
    for name in report.PLOTS:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"


def test_report_needs_the_full_history(locust_csvs: CsvFactory) -> None:
    out = locust_csvs(SATURATING)
    rows = (out / "locust_stats_history.csv").read_text().splitlines()
    (out / "locust_stats_history.csv").write_text("\n".join(r for r in rows if ",8," not in r) + "\n")
    with pytest.raises(ValueError, match="--csv-full-history"):
        report.load_steps(out)


@pytest.mark.parametrize(
    ("max_users", "step_users", "expected"),
    [(16, 2, (1, 2, 4, 6, 8, 10, 12, 14, 16)), (16, 0, (1, 2, 4, 8, 16)), (6, 0, (1, 2, 4, 6)), (1, 2, (1,))],
)
def test_step_plan(max_users: int, step_users: int, expected: tuple[int, ...]) -> None:
    plan = StepPlan.ramp(max_users, step_users, 30)
    assert plan.users == expected, f"got {plan}"
    assert StepPlan.from_env(plan.to_env()) == plan


@pytest.mark.parametrize(
    "host", ["http://127.0.0.1:8000", "http://127.3.2.1", "http://localhost:80", "http://[::1]:8000"]
)
def test_loopback_hosts_are_allowed(host: str) -> None:
    assert check_host(host, environ={}) == host


@pytest.mark.parametrize("host", ["http://10.0.0.5:8000", "http://example.com", "http://0.0.0.0:8000"])
def test_other_hosts_are_refused_unless_allowed(host: str) -> None:
    with pytest.raises(RemoteHostRefused):
        check_host(host, environ={})
    assert check_host(host, environ={"FUNASR_LOAD_ALLOW_REMOTE": "1"}) == host


def test_clips_are_exact_length_16k_mono(tmp_path: Path) -> None:
    assert shutil.which("espeak-ng"), "espeak-ng missing (make system-test-deps)"
    import wave

    from load.clips import build_clip_mix

    clips = build_clip_mix(tmp_path, mix=[(2.0, 0.5), (10.0, 0.5)])
    for clip in clips:
        with wave.open(str(clip.path)) as w:
            got = (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes())
        assert got == (16000, 1, 2, round(clip.duration_s * 16000)), f"{clip}: got {got}"
    assert [c.label for c in clips] == ["2s", "10s"]
