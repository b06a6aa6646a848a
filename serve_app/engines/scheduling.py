"""The ASR queue's policy, Ray-free: priority classes first, then round-robin by request within
a class (deficit round-robin).

A plain FIFO (what ``@serve.batch`` is) lets a 3-hour upload's 360 segments fill every batch
ahead of a 10 s request that arrives a moment later. Here each request keeps its own line, and
the requests of a class take turns: a turn is up to ``quantum`` of work (``weight``: audio
seconds in the ASR stage), at least one item, and a request that arrives joins the end of the
round. A short request is served within one round, whatever is queued ahead of it: it waits
for at most one turn of each request ahead. A long request gets a full turn every round, so it
shares the replica with everything else and is never starved. What a turn does not use is
carried to the request's next turn (an item bigger than what is left waits for it), and
forgotten when the request has nothing left queued.

A batch takes from the most urgent class first, then from the next class while room is left.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Line(Generic[T]):
    items: deque[T]
    deficit: float = 0.0
    """Work this request may still be served in its current turn (carried between turns)."""
    in_turn: bool = False


@dataclass
class FairQueue(Generic[T]):
    quantum: float = 1.0
    """Work per turn. With the default weight (1 per item): one item per turn."""
    _classes: dict[int, OrderedDict[Hashable, _Line[T]]] = field(default_factory=dict)
    _size: int = 0

    def __len__(self) -> int:
        return self._size

    def push(self, request: Hashable, priority: int, items: Sequence[T]) -> None:
        """Queue ``items`` of ``request`` (a new request joins the end of its class's round)."""
        if not items:
            return
        lines = self._classes.setdefault(priority, OrderedDict())
        if request in lines:
            lines[request].items.extend(items)
        else:
            lines[request] = _Line(deque(items))
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
        first item is always taken (so an item costlier than the budget is not stuck)."""
        batch: list[T] = []
        spent = 0.0
        for priority in sorted(self._classes):
            lines = self._classes[priority]
            while lines and len(batch) < max_count:
                request, line = next(iter(lines.items()))
                if not line.in_turn:
                    line.deficit += self.quantum
                    line.in_turn = True
                item = line.items[0]
                w = weight(item)
                if w > line.deficit:  # not this turn: the next request's turn
                    line.in_turn = False
                    lines.move_to_end(request)
                    continue
                item_cost = cost(item)
                if batch and spent + item_cost > max_cost:
                    return batch
                batch.append(line.items.popleft())
                spent += item_cost
                self._size -= 1
                line.deficit -= w
                if not line.items:
                    del lines[request]
                elif line.deficit <= 0:
                    line.in_turn = False
                    lines.move_to_end(request)
            if not lines:
                del self._classes[priority]
            if len(batch) >= max_count:
                break
        return batch


class LoopClock:
    """Where the batch loops' time goes: seconds summed over loops in each phase, read at any
    moment (a phase still open counts up to now). A loop ``enter``s a phase when it starts
    doing something else; the first ``enter`` starts its clock. Cheap: one ``clock()`` call
    and a dict update per switch. ``totals()`` counts from the last ``reset()``, ``lifetime()``
    from the start (what a windowed reader such as ``serve_app.load.LoadMeter`` needs)."""

    def __init__(self, phases: Sequence[str], clock: Callable[[], float]) -> None:
        self._clock = clock
        self._totals = dict.fromkeys(phases, 0.0)
        self._base = dict.fromkeys(phases, 0.0)
        """``lifetime()`` at the last ``reset()``."""
        self._open: dict[Hashable, tuple[str, float]] = {}
        """Each loop's current phase and when it entered it."""

    def enter(self, loop: Hashable, phase: str) -> None:
        now = self._clock()
        if (current := self._open.get(loop)) is not None:
            self._totals[current[0]] += now - current[1]
        if phase not in self._totals:
            raise KeyError(f"unknown phase {phase!r}; phases are {list(self._totals)}")
        self._open[loop] = (phase, now)

    def lifetime(self) -> dict[str, float]:
        """Seconds per phase since the start, summed over loops, the open phases up to now
        included. Never goes back."""
        now = self._clock()
        out = dict(self._totals)
        for phase, since in self._open.values():
            out[phase] += now - since
        return out

    def totals(self) -> dict[str, float]:
        """Seconds per phase since the last ``reset()`` (the start, if none)."""
        return {phase: s - self._base[phase] for phase, s in self.lifetime().items()}

    def reset(self) -> None:
        """Start ``totals()`` again from now (open phases stay open, counted from now)."""
        self._base = self.lifetime()
