"""Stage timestamps by Serve request id: where a request's time goes between stages.

Serve gives every HTTP request an id (``x-request-id``, or one it makes) and passes it to every
handle call made while serving it, so each stage can note when it started and finished its part
of a request without any message carrying the times. Each replica keeps the last ``size`` spans;
``timings(since)`` hands them over (the benchmark joins them by request id). Times are
``time.time()``: comparable between the processes of one machine, roughly across machines.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple


class Span(NamedTuple):
    """One stage's part of one request: ``what`` (``decode``, ``vad``, ``asr_queue``, ...)
    from ``start`` to ``end`` (``time.time()`` seconds)."""

    request_id: str
    what: str
    start: float
    end: float


def request_id() -> str:
    """The Serve request id of the call being served ("" outside a request)."""
    from ray.serve.context import _get_serve_request_context

    return str(_get_serve_request_context().request_id or "")


class StageTimes:
    """The last ``size`` spans of this replica (a deque append per span: cheap enough to keep on)."""

    def __init__(self, size: int = 20_000) -> None:
        self._spans: deque[Span] = deque(maxlen=size)

    def add(self, request: str, what: str, start: float, end: float) -> None:
        self._spans.append(Span(request, what, start, end))

    @contextlib.contextmanager
    def span(self, what: str) -> Iterator[None]:
        """Time the block as ``what`` of the request being served."""
        rid, start = request_id(), time.time()
        try:
            yield
        finally:
            self.add(rid, what, start, time.time())

    def since(self, t: float) -> list[Span]:
        """The spans that ended at or after ``t``."""
        return [s for s in self._spans if s.end >= t]
