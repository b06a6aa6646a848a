"""Batch maths, Ray-free: what one item costs in a batch bounded by count and audio seconds,
and how a padded batch is cut into sub-batches of similar length."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar


def item_cost(seconds: float, max_batch_count: int, max_batch_audio_s: float) -> float:
    """An item's share of a batch budget of ``max_batch_audio_s``: its audio seconds, but at
    least ``max_batch_audio_s / max_batch_count`` (so no more than ``max_batch_count`` items
    fit) and at most the whole budget (so an over-long item still forms a batch of its own)."""
    return min(max(seconds, max_batch_audio_s / max_batch_count), max_batch_audio_s)


def batch_cost(costs: Iterable[float]) -> int:
    """Whole budget units a batch uses (Serve's ``batch_size_fn`` wants an int)."""
    return math.ceil(sum(costs))


def length_buckets(lengths: Sequence[int], min_fill: float) -> list[list[int]]:
    """Split a batch into sub-batches of similar length.

    A padded forward pass costs about ``longest × count``; mixing a 2 s segment with a 30 s one
    wastes 28 s of compute, and on a CPU that waste is wall time. Indices are sorted longest
    first and a sub-batch grows while its real audio fills at least ``min_fill`` of its padded
    area. ``min_fill=0`` keeps the whole batch together.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        if buckets:
            b = buckets[-1]
            longest = lengths[b[0]]
            if sum(lengths[j] for j in b) + lengths[i] >= min_fill * longest * (len(b) + 1):
                b.append(i)
                continue
        buckets.append([i])
    return buckets


R = TypeVar("R")
T = TypeVar("T")


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's out-of-memory error (``torch.cuda.OutOfMemoryError``, or CTranslate2's
    ``RuntimeError: CUDA failed ... out of memory``)."""
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


def split_on_oom(run: Callable[[list[T]], list[R]], items: list[T], on_oom: Callable[[], None]) -> list[R]:
    """``run(items)``; when the device runs out of memory, free what it can (``on_oom``) and
    run each half on its own, down to single items (whose own failure is raised). Results keep
    the items' order."""
    try:
        return run(items)
    except Exception as e:
        if len(items) < 2 or not is_out_of_memory(e):
            raise
        on_oom()
        mid = len(items) // 2
        return split_on_oom(run, items[:mid], on_oom) + split_on_oom(run, items[mid:], on_oom)
