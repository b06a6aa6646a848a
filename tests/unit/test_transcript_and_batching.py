"""Transcript assembly and batch maths, Ray-free."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.contracts import AsrResult, Segmentation, SpeechSegment, Word
from serve_app.engines.batching import batch_cost, item_cost, length_buckets
from serve_app.engines.transcript import assemble


def seg(start: float, end: float) -> SpeechSegment:
    return SpeechSegment(start, end, np.zeros(int((end - start) * 16000), np.float32))


def test_word_times_become_absolute() -> None:
    s = Segmentation(
        duration_s=100.0, segments=[seg(10.0, 12.0), seg(50.0, 51.0)], offset_s=0.0, next_start_s=60.0
    )
    results = [
        AsrResult("a b", [Word(0.1, 0.5, "a"), Word(0.6, 1.0, "b")]),
        AsrResult("c", [Word(0.0, 0.4, "c")]),
    ]
    t = assemble(s, results, "en")
    assert [(w.start_s, w.end_s, w.word) for w in t.words] == [
        (10.1, 10.5, "a"),
        (10.6, 11.0, "b"),
        (50.0, 50.4, "c"),
    ]
    assert [(x.start_s, x.end_s, x.text) for x in t.segments] == [(10.0, 12.0, "a b"), (50.0, 51.0, "c")]
    assert t.duration_s == 100.0 and t.next_start_s == 60.0 and t.text == "a b c"


def test_assembly_refuses_a_count_mismatch() -> None:
    with pytest.raises(ValueError, match="1 results for 2 segments"):
        assemble(Segmentation(2.0, [seg(0, 1), seg(1, 2)]), [AsrResult("x")], "en")


def test_item_cost_bounds_count_and_seconds() -> None:
    # 8 items at most per 240 s batch: a short item costs 30 s of budget.
    assert item_cost(2.0, 8, 240.0) == 30.0
    assert item_cost(45.0, 8, 240.0) == 45.0
    assert item_cost(600.0, 8, 240.0) == 240.0  # alone in its batch, never stuck
    assert batch_cost([30.0, 30.0, 0.5]) == 61


def test_length_buckets_bound_padding() -> None:
    lengths = [30, 2, 29, 3, 28, 10, 9, 2]
    buckets = length_buckets(lengths, min_fill=0.8)
    assert sorted(i for b in buckets for i in b) == list(range(len(lengths)))
    for b in buckets:
        assert sum(lengths[i] for i in b) >= 0.8 * max(lengths[i] for i in b) * len(b), b
    # 30 s and 2 s segments never share a forward pass.
    assert [sorted(lengths[i] for i in b) for b in buckets] == [[10, 28, 29, 30], [9], [2, 3], [2]]
    assert length_buckets(lengths, min_fill=0.0) == [sorted(range(8), key=lambda i: -lengths[i])]


def test_merge_tiles_windows() -> None:
    from serve_app.contracts import Transcript, TranscriptSegment
    from serve_app.engines.transcript import merge

    a = Transcript("en", 60.0, [TranscriptSegment(1.0, 2.0, "a")], offset_s=0.0, next_start_s=60.0)
    b = Transcript("en", 30.5, [TranscriptSegment(61.0, 62.0, "b")], offset_s=60.0, next_start_s=None)
    m = merge([a, b])
    assert (m.duration_s, m.text, m.offset_s, m.next_start_s) == (90.5, "a b", 0.0, None)


def test_out_of_memory_splits_the_batch_and_keeps_the_order() -> None:
    """Injected CUDA out-of-memory: any batch of more than two items fails, as a real GPU
    would past its memory; the batch is split until it fits and every item is answered."""
    import torch

    from serve_app.engines.batching import split_on_oom

    calls: list[int] = []
    freed: list[int] = []

    def run(items: list[int]) -> list[str]:
        calls.append(len(items))
        if len(items) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [f"r{i}" for i in items]

    assert split_on_oom(run, list(range(7)), lambda: freed.append(1)) == [f"r{i}" for i in range(7)]
    assert calls == [7, 3, 1, 2, 4, 2, 2] and len(freed) == 3  # 7, then its halves 3 and 4
    # One item that does not fit is the caller's error; other errors are never split.
    with pytest.raises(torch.cuda.OutOfMemoryError):
        split_on_oom(lambda items: run(items * 3), [1], lambda: None)
    with pytest.raises(ValueError):
        split_on_oom(lambda items: (_ for _ in ()).throw(ValueError("bad")), [1, 2, 3], lambda: None)
