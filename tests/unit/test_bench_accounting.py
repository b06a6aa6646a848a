"""The benchmark's accounting (bench.accounting): classifying processes, CPU deltas, the ASR
loops' shares, stage gaps from spans, the tables and the noisy rule, from fake samples."""

from __future__ import annotations

import pytest

from bench import accounting
from bench.accounting import Accounting, CpuSample, CpuUsage, Snapshot


@pytest.mark.parametrize(
    ("class_name", "group"),
    [
        ("ServeReplica:bench-w2:ASR", "ASR"),
        ("ServeReplica:bench-w2:Postprocess", "Postprocess"),
        ("ServeReplica:bench-w1:ASR", "other apps"),  # the other shape, idle meanwhile
        ("ServeController", "Serve controller"),
        ("ProxyActor", "HTTP proxy"),
        ("SomeoneElsesActor", None),
    ],
)
def test_actors_are_grouped_by_class_name(class_name: str, group: str | None) -> None:
    assert accounting.actor_group(class_name, "bench-w2") == group


@pytest.mark.parametrize(
    ("name", "cmdline", "group"),
    [
        (
            "raylet",
            ["/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet", "--node_id=x"],
            "raylet",
        ),
        ("gcs_server", ["/venv/.../ray/core/src/ray/gcs/gcs_server", "--gcs_server_port=1"], "gcs_server"),
        ("python", ["/venv/bin/python", "-u", "/venv/.../ray/_private/log_monitor.py"], "Ray, other"),
        ("ray::IDLE", ["ray::IDLE"], "Ray, other"),
        ("haproxy", ["/usr/sbin/haproxy", "-f", "cfg"], "HTTP proxy"),
    ],
)
def test_other_processes_by_name_and_cmdline(name: str, cmdline: list[str], group: str) -> None:
    assert accounting.process_group(name, cmdline) == group


def snap(t: float, *samples: tuple[int, str, float, float]) -> Snapshot:
    return Snapshot(t, {pid: CpuSample(pid, g, born, cpu) for pid, g, born, cpu in samples})


def test_cpu_usage_counts_deltas_newborns_from_zero_and_lists_the_dead() -> None:
    before = snap(
        100.0, (1, "ASR", 10.0, 5.0), (2, "ASR", 10.0, 1.0), (3, "raylet", 5.0, 2.0), (4, "VAD", 10.0, 3.0)
    )
    end = snap(
        130.0,
        (1, "ASR", 10.0, 25.0),  # +20
        (2, "ASR", 10.0, 1.5),  # +0.5
        (3, "raylet", 5.0, 2.25),  # +0.25
        (5, "Ray, other", 110.0, 0.5),  # born during the run: all of it
        (6, "Ray, other", 50.0, 9.0),  # older but unseen before: not this run's
    )
    u = accounting.usage(before, end)
    assert u.by_group == {"ASR": 20.5, "raylet": 0.25, "Ray, other": 0.5}, u
    assert u.lost == ["VAD 4"], u


def test_a_reused_pid_is_another_process() -> None:
    before = snap(100.0, (7, "Decode", 10.0, 50.0))
    end = snap(130.0, (7, "Decode", 120.0, 0.75))
    assert accounting.usage(before, end).by_group == {"Decode": 0.75}


def test_loop_shares_are_the_differences_over_the_run() -> None:
    before = {"loop_busy_s": 10.0, "loop_idle_empty_s": 5.0, "loop_idle_fill_s": 1.0}
    end = {"loop_busy_s": 17.0, "loop_idle_empty_s": 7.0, "loop_idle_fill_s": 2.0}
    shares = accounting.loop_shares(before, end)
    assert shares == pytest.approx({"busy": 0.7, "nothing queued": 0.2, "waiting to fill": 0.1}), shares
    assert accounting.loop_shares({}, {}) == {"busy": 0.0, "nothing queued": 0.0, "waiting to fill": 0.0}


SPANS = [
    ("r1", "decode", 10.1, 10.2),
    ("r1", "vad", 10.25, 10.45),
    ("r1", "asr_queue", 10.5, 10.6),
    ("r1", "asr_queue", 10.5, 10.9),  # its second segment waits for the next batch
    ("r1", "asr_batch", 10.6, 10.9),
    ("r1", "asr_batch", 10.9, 11.2),
    ("r1", "post", 11.3, 11.35),
    ("warm-up", "decode", 9.0, 9.1),  # not one of the run's requests
]


def test_request_stamps_join_spans_by_request_id() -> None:
    stamps = accounting.request_stamps([("r1", 10.0, 11.5)], SPANS)
    assert set(stamps) == {"r1"}
    assert stamps["r1"] == {
        "sent": 10.0,
        "received": 11.5,
        "decode_start": 10.1,
        "decode_end": 10.2,
        "vad_start": 10.25,
        "vad_end": 10.45,
        "asr_queued": 10.5,
        "asr_start": 10.6,
        "asr_end": 11.2,
        "post_start": 11.3,
        "post_end": 11.35,
    }
    gaps = accounting.gap_medians(stamps)
    assert gaps == pytest.approx(
        {
            "client → decode": 0.1,
            "decode": 0.1,
            "decode → VAD": 0.05,
            "VAD": 0.2,
            "VAD → ASR queue": 0.05,
            "ASR queue wait": 0.1,
            "ASR batches": 0.6,
            "ASR → postprocess": 0.1,
            "postprocess": 0.05,
            "postprocess → client": 0.15,
            "end to end": 1.5,
        }
    ), gaps
    # The consecutive gaps add up to the end-to-end time.
    assert sum(v for k, v in gaps.items() if k != "end to end") == pytest.approx(gaps["end to end"])
    assert accounting.segment_queue_waits(SPANS, {"r1"}) == pytest.approx([0.1, 0.4])


def test_a_request_without_stage_spans_keeps_only_the_client_rows() -> None:
    gaps = accounting.gap_medians(accounting.request_stamps([("r2", 1.0, 3.0)], SPANS))
    assert gaps == {"end to end": 2.0}, gaps


@pytest.mark.parametrize(
    ("rounds", "is_noisy"),
    [
        ([0.67], False),  # one round: no spread to judge
        ([0.80, 0.90, 1.00], False),  # 1.00 / 0.80 - 1 = 0.25: not more than 25 %
        ([0.79, 0.90, 1.00], True),
        ([1.08, 0.92, 1.61], True),
    ],
)
def test_noisy_when_rounds_spread_more_than_a_quarter(rounds: list[float], is_noisy: bool) -> None:
    assert accounting.noisy(rounds) is is_noisy, accounting.spread(rounds)


def test_round_ratios_pair_the_interleaved_rounds() -> None:
    assert accounting.round_ratios([10.0, 12.0], [20.0, 16.0]) == [0.5, 0.75]
    with pytest.raises(ValueError):
        accounting.round_ratios([1.0], [1.0, 2.0])


def run_accounting(asr_cpu: float, wall_s: float = 10.0) -> Accounting:
    return Accounting(
        audio_s=100.0,
        wall_s=wall_s,
        cpu=CpuUsage({"ASR": asr_cpu, "Decode": 1.0, "raylet": 0.5, "client": 2.5}),
        loops={"busy": 0.7, "nothing queued": 0.2, "waiting to fill": 0.1},
        gaps={"decode": 0.02, "end to end": 1.0},
        queue_wait_p50_s=0.05,
    )


def test_cpu_per_audio_second_total_and_cores_used() -> None:
    per = run_accounting(asr_cpu=16.0).cpu_per_audio_s()
    assert per["ASR"] == pytest.approx(0.16) and per["client"] == pytest.approx(0.025), per
    assert per["total"] == pytest.approx(0.2), per
    assert per["cores used"] == pytest.approx(2.0), per  # 20 CPU-s over 10 s


def test_tables_print_medians_of_rounds_per_column() -> None:
    text = accounting.tables(
        {
            "2×1 threads, c=1": [run_accounting(10.0), run_accounting(16.0), run_accounting(40.0)],
            "2×1 threads, c=2": [run_accounting(20.0)],
        }
    )
    cpu_table, stage_table = text.split("\n\n")
    cpu_rows = {line.split(" | ")[0].lstrip("| "): line for line in cpu_table.splitlines()}
    assert "VAD" not in cpu_rows, "a group with no CPU is left out"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    assert rows["ASR"] == "| ASR | 0.1600 | 0.2000 |", text  # median of 0.10, 0.16, 0.40
    assert rows["total"] == "| total | 0.2000 | 0.2400 |", text
    assert rows["ASR loops: waiting to fill"] == "| ASR loops: waiting to fill | 10% | 10% |", text
    assert rows["decode"] == "| decode | 0.020 | 0.020 |", text
    assert rows["decode → VAD"] == "| decode → VAD |  |  |", text
    assert rows["ASR queue wait, per segment"].endswith("| 0.050 | 0.050 |"), text


def test_median_of_rounds_keeps_the_order_and_counts_a_missing_key_as_zero() -> None:
    got = accounting.median_of([{"b": 1.0, "a": 4.0}, {"b": 3.0}, {"b": 2.0, "a": 2.0}])
    assert list(got) == ["b", "a"] and got == {"b": 2.0, "a": 2.0}, got
