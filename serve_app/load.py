"""A replica's live load, cheap enough to keep on: process CPU seconds, audio seconds handled
and busy seconds, as running sums, with a few timed samples of them so that ``figures()`` can
say what the last minute or so cost, and a per-minute ring of audio seconds (the Status
page's throughput plot). Ray-free; each stage replica (``serve_app.deployments``) owns one
``LoadMeter`` and returns ``figures()`` under ``"load"`` in its ``stats()``.

Samples are taken when the meter is touched (audio counted or figures read), at most one per
``SAMPLE_EVERY_S``: no timer thread. A window therefore reaches back to the newest sample at
least ``RECENT_S`` old, or to the oldest kept (the replica's start, on a young or long-idle
replica), and says how long it is (``window_s``).
"""

from __future__ import annotations

import math
import resource
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

RECENT_S = 60.0
"""The recent window the figures cover: at least this long, once the replica is this old."""
SAMPLE_EVERY_S = 10.0
"""At most one sample of the running sums per this many seconds."""
MAX_SAMPLES = 32
"""Samples kept (with ``SAMPLE_EVERY_S``: at least five minutes of them)."""
MINUTE_S = 60.0
"""The throughput ring's bucket."""
MINUTES_KEPT = 15
"""Buckets the throughput ring keeps: the last 15 minutes, the current one included."""


def process_cpu_s() -> float:
    """User + system CPU seconds of this process and of its children that ended (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Sample(NamedTuple):
    """The running sums at one moment (``t``: the meter's monotonic clock)."""

    t: float
    cpu_s: float
    audio_s: float
    busy_s: float


class MinuteRing:
    """Audio seconds handled per wall-clock minute, the last ``MINUTES_KEPT`` minutes. Minutes
    are ``floor(time.time() / 60)``: the same minute on every replica of one machine, so the
    Ingress can add replicas' rings bucket by bucket."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._buckets: dict[int, float] = {}

    @staticmethod
    def minute(t: float) -> int:
        return math.floor(t / MINUTE_S)

    def add(self, seconds: float) -> None:
        now = self.minute(self._wall())
        self._buckets[now] = self._buckets.get(now, 0.0) + seconds
        for m in [m for m in self._buckets if m <= now - MINUTES_KEPT]:
            del self._buckets[m]

    def buckets(self) -> dict[int, float]:
        """Audio seconds by minute, the last ``MINUTES_KEPT`` minutes that saw any."""
        now = self.minute(self._wall())
        return {m: s for m, s in sorted(self._buckets.items()) if m > now - MINUTES_KEPT}


class LoadMeter:
    """One replica's load. ``capacity``: how many calls it runs at once (batch loops, engines,
    worker threads), so that ``busy_s / (capacity × window_s)`` is its busy share. ``busy``
    reads a running sum of busy seconds that never goes back (a loop clock's lifetime, a
    worker's busy sum); without it the meter reports no busy figures."""

    def __init__(
        self,
        capacity: int,
        busy: Callable[[], float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        cpu: Callable[[], float] = process_cpu_s,
    ) -> None:
        self.capacity = max(1, capacity)
        self._busy = busy
        self._clock, self._cpu = clock, cpu
        self._audio_s = 0.0
        self.minutes = MinuteRing(wall)
        self._samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
        self._samples.append(self._now())

    def _now(self) -> Sample:
        busy = self._busy() if self._busy is not None else 0.0
        return Sample(self._clock(), self._cpu(), self._audio_s, busy)

    def _sample(self) -> Sample:
        now = self._now()
        if now.t - self._samples[-1].t >= SAMPLE_EVERY_S:
            self._samples.append(now)
        return now

    def audio(self, seconds: float) -> None:
        """``seconds`` of audio handled (counted when the stage is done with it)."""
        if seconds > 0:
            self._audio_s += seconds
            self.minutes.add(seconds)
            self._sample()

    def window_start(self, now: float) -> Sample:
        """The newest sample at least ``RECENT_S`` before ``now``, else the oldest kept."""
        older = [s for s in self._samples if now - s.t >= RECENT_S]
        return older[-1] if older else self._samples[0]

    def figures(self) -> dict[str, Any]:
        """Running sums and the recent window's differences (plain JSON; ``minutes``: audio
        seconds by wall-clock minute index, for the Ingress to add up)::

            {"capacity": 1, "cpu_s": 12.5, "audio_s": 300.0, "busy_s": 40.1,
             "window_s": 64.2, "window_cpu_s": 3.1, "window_audio_s": 30.0,
             "window_busy_s": 9.8, "minutes": {29012345: 30.0}}

        ``busy_s`` and ``window_busy_s`` are ``None`` for a meter without a busy source."""
        now = self._sample()
        start = self.window_start(now.t)
        has_busy = self._busy is not None
        return {
            "capacity": self.capacity,
            "cpu_s": now.cpu_s,
            "audio_s": now.audio_s,
            "busy_s": now.busy_s if has_busy else None,
            "window_s": now.t - start.t,
            "window_cpu_s": now.cpu_s - start.cpu_s,
            "window_audio_s": now.audio_s - start.audio_s,
            "window_busy_s": now.busy_s - start.busy_s if has_busy else None,
            "minutes": self.minutes.buckets(),
        }
