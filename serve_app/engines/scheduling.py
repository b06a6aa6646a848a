"""The ASR queue's policy, Ray-free: priority classes first, then round-robin by request within
a class.

A plain FIFO (what ``@serve.batch`` is) lets a 3-hour upload's 360 segments fill every batch
ahead of a 10 s request that arrives a moment later. Here each request keeps its own line and
the work served to it so far (``weight``: audio seconds in the ASR stage, so a request of 3 s
segments is not charged like one of 30 s segments). A batch takes items from the most urgent
class first (then the next class, while room is left), each time from the request served least
so far, and among equals the one served longest ago (a request never served comes first). A
newcomer starts at the class's current least, so it goes next but cannot overtake the others
for long: a long request keeps its share and is never starved.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Line(Generic[T]):
    items: deque[T]
    served: float
    last: int = -1
    """When it was last served (a tick of the queue); -1: never."""
    arrival: int = 0


@dataclass
class FairQueue(Generic[T]):
    _classes: dict[int, dict[Hashable, _Line[T]]] = field(default_factory=dict)
    _size: int = 0
    _tick: itertools.count[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return self._size

    def push(self, request: Hashable, priority: int, items: Sequence[T]) -> None:
        """Queue ``items`` of ``request``."""
        if not items:
            return
        lines = self._classes.setdefault(priority, {})
        if request in lines:
            lines[request].items.extend(items)
        else:
            floor = min((line.served for line in lines.values()), default=0.0)
            lines[request] = _Line(deque(items), served=floor, arrival=next(self._tick))
        self._size += len(items)

    def drop(self, request: Hashable, items: Collection[T] | None = None) -> list[T]:
        """Remove what is still queued for ``request`` (its caller went away), or only those of
        ``items`` (one of several calls sharing the request's line went away)."""
        for lines in self._classes.values():
            if request in lines:
                line = lines[request]
                if items is None:
                    gone = list(line.items)
                    line.items.clear()
                else:
                    ids = {id(i) for i in items}
                    gone = [i for i in line.items if id(i) in ids]
                    line.items = deque(i for i in line.items if id(i) not in ids)
                if not line.items:
                    del lines[request]
                self._size -= len(gone)
                return gone
        return []

    def take(
        self,
        max_count: int,
        max_cost: float,
        cost: Callable[[T], float],
        weight: Callable[[T], float] = lambda _: 1.0,
    ) -> list[T]:
        """The next batch: at most ``max_count`` items and ``max_cost`` in all, except that the
        first item is always taken (so an item costlier than the budget is not stuck). Each
        item taken is charged ``weight`` to its request."""
        batch: list[T] = []
        spent = 0.0
        for priority in sorted(self._classes):
            lines = self._classes[priority]
            while lines and len(batch) < max_count:
                request, line = min(lines.items(), key=lambda kv: (kv[1].served, kv[1].last, kv[1].arrival))
                item_cost = cost(line.items[0])
                if batch and spent + item_cost > max_cost:
                    return batch
                batch.append(line.items.popleft())
                spent += item_cost
                self._size -= 1
                line.served += weight(batch[-1])
                line.last = next(self._tick)
                if not line.items:
                    del lines[request]
            if not lines:
                del self._classes[priority]
            if len(batch) >= max_count:
                break
        return batch
