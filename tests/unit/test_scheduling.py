"""The ASR queue policy: priority classes first, round-robin by request within a class."""

from __future__ import annotations

import itertools

from serve_app.contracts import Priority
from serve_app.engines.scheduling import FairQueue


def names(batch: list[str]) -> str:
    return " ".join(batch)


def test_round_robin_between_requests() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("long", Priority.INTERACTIVE, [f"L{i}" for i in range(6)])
    q.push("a", Priority.INTERACTIVE, ["a0", "a1"])
    q.push("b", Priority.INTERACTIVE, ["b0"])
    assert names(q.take(4, 1e9, lambda _: 1.0)) == "L0 a0 b0 L1"
    # The round goes on where it stopped: a was not served last.
    assert names(q.take(4, 1e9, lambda _: 1.0)) == "a1 L2 L3 L4"
    assert names(q.take(4, 1e9, lambda _: 1.0)) == "L5" and len(q) == 0


def test_a_request_arriving_behind_a_long_one_waits_one_turn() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("long", Priority.INTERACTIVE, [f"L{i}" for i in range(100)])
    assert q.take(1, 1e9, lambda _: 1.0) == ["L0"]
    q.push("short", Priority.INTERACTIVE, ["s0"])
    # The long request's next turn, then the newcomer: FIFO would serve 99 L's first.
    assert q.take(2, 1e9, lambda _: 1.0) == ["L1", "s0"]


def test_priority_classes_first_then_the_rest_fills_the_batch() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("job", Priority.BATCH, ["j0", "j1", "j2"])
    q.push("live", Priority.INTERACTIVE, ["i0"])
    q.push("http", Priority.INTERACTIVE, ["h0", "h1"])
    assert names(q.take(3, 1e9, lambda _: 1.0)) == "i0 h0 h1"
    assert names(q.take(3, 1e9, lambda _: 1.0)) == "j0 j1 j2"
    q.push("job", Priority.BATCH, ["j3"])
    q.push("http", Priority.INTERACTIVE, ["h2"])
    assert names(q.take(8, 1e9, lambda _: 1.0)) == "h2 j3"


def test_budget_bounds_a_batch_but_never_blocks_a_costly_item() -> None:
    q: FairQueue[str] = FairQueue()
    cost = {"big": 500.0, "x": 30.0, "y": 30.0, "z": 30.0}
    q.push(1, 0, ["big"])
    q.push(2, 0, ["x", "y", "z"])
    assert q.take(16, 240.0, cost.__getitem__) == ["big"]  # over budget alone: still taken
    assert q.take(16, 60.0, cost.__getitem__) == ["x", "y"]
    assert q.take(16, 60.0, cost.__getitem__) == ["z"]


def test_drop_removes_what_a_departed_caller_left() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("gone", 0, ["g0", "g1"])
    q.push("here", 0, ["h0"])
    assert q.drop("gone") == ["g0", "g1"] and len(q) == 1 and q.drop("gone") == []
    assert q.take(8, 1e9, lambda _: 1.0) == ["h0"]


def test_a_long_request_is_never_starved() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("long", Priority.INTERACTIVE, [f"L{i}" for i in range(3)])
    served = []
    for n in range(30):  # a new short request arrives before every batch
        q.push(f"s{n}", Priority.INTERACTIVE, [f"s{n}"])
        served += q.take(2, 1e9, lambda _: 1.0)
    assert {"L0", "L1", "L2"} <= set(served[:12]), served[:12]


def test_a_turn_is_a_quantum_of_audio_seconds() -> None:
    """A request of 3 s segments gets ten of them in a 30 s turn; one of 30 s segments, one."""
    q: FairQueue[float] = FairQueue(quantum=30.0)
    q.push("long", Priority.INTERACTIVE, [30.0] * 5)
    q.push("short", Priority.INTERACTIVE, [3.0] * 40)
    served = [q.take(1, 1e9, lambda _: 1.0, weight=lambda s: s)[0] for _ in range(22)]
    assert served == [30.0] + [3.0] * 10 + [30.0] + [3.0] * 10, served


def test_what_a_turn_leaves_is_carried_and_big_items_wait_for_it() -> None:
    q: FairQueue[float] = FairQueue(quantum=30.0)
    q.push("a", 0, [20.0, 20.0, 20.0])  # 20 + 20 > 30: the second waits for the next turn
    q.push("b", 0, [40.0])  # bigger than a turn: served once two turns' worth is there
    served = [q.take(1, 1e9, lambda _: 1.0, weight=lambda s: (s, s)[0]) for _ in range(4)]
    # a: 20 (10 carried); b: 40 > 30, waits; a: 10 + 30 = 40 → 20 and 20; b: 60 → 40.
    assert [x[0] for x in served] == [20.0, 20.0, 20.0, 40.0], served


def test_drop_some_items_of_a_shared_line() -> None:
    """The windows of one request share a line; one window's call going away removes only its items."""
    q: FairQueue[str] = FairQueue()
    q.push("req", 0, ["w1a", "w1b"])
    q.push("req", 0, ["w2a"])
    assert q.drop("req", ["w1a", "w1b"]) == ["w1a", "w1b"] and len(q) == 1
    assert q.take(8, 1e9, lambda _: 1.0) == ["w2a"]


def test_closed_loop_short_requests_do_not_starve_a_long_one() -> None:
    """Four closed-loop clients (each sends its next 3 s request as soon as the last is served)
    beside one request of ten 30 s segments: each round serves each client once and the long
    request one 30 s turn, so it is never starved and no short request waits for more than one
    of its segments. (Shares counted per item starved it in an earlier version of this queue.)"""
    q: FairQueue[tuple[str, float]] = FairQueue(quantum=30.0)
    q.push("long", Priority.INTERACTIVE, [("long", 30.0)] * 10)
    for c in range(4):
        q.push(f"c{c}-0", Priority.INTERACTIVE, [(f"c{c}", 3.0)])
    served: list[str] = []
    for n in range(1, 200):
        [(who, _)] = q.take(1, 1e9, lambda _: 1.0, weight=lambda item: item[1])
        served.append(who)
        if who != "long":  # that client sends its next request
            q.push(f"{who}-{n}", Priority.INTERACTIVE, [(who, 3.0)])
        if served.count("long") == 10:
            break
    assert served.count("long") == 10 and len(served) <= 10 + 10 * 4, (
        f"{served.count('long')} long items in {len(served)}"
    )
    gaps = [len(list(g)) for k, g in itertools.groupby(served, key=lambda w: w == "long") if not k]
    assert max(gaps) <= 4, gaps  # between two long segments, each client at most once
    long_s, short_s = 300.0, 3.0 * (len(served) - 10)
    assert long_s / (long_s + short_s) >= 0.5, (long_s, short_s)
