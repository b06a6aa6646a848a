"""Helpers shared by the deployments."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np

from serve_app.contracts import SAMPLE_RATE
from serve_app.errors import ModelUnavailable

T = TypeVar("T")
logger = logging.getLogger("ray.serve")

WARMUP_AUDIO = np.zeros(SAMPLE_RATE, dtype=np.float32)
"""One second of silence: every stage runs it once in ``__init__`` before reporting ready."""


class BusyClock:
    """Seconds spent in calls run through ``timed``, summed over threads since start (never
    reset): a stage's busy figure for ``serve_app.load.LoadMeter``. Timed inside the thread,
    so a call waiting for the thread does not count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy_s = 0.0

    @property
    def busy_s(self) -> float:
        return self._busy_s

    def timed(self, fn: Callable[..., T]) -> Callable[..., T]:
        def run(*args: object) -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._busy_s += time.perf_counter() - t0

        return run


class Worker:
    """One thread for a stage's blocking model calls, so the replica's event loop stays free
    to accept (and batch) the next requests while the model runs."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.clock = BusyClock()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.clock.timed(fn), *args)


E = TypeVar("E")


class EnginePool(Generic[E]):
    """``size`` instances of a stage's engine (each not thread-safe), each used by one thread at
    a time: a short request's call runs beside a long one's instead of queueing behind it."""

    def __init__(self, name: str, engines: list[E]) -> None:
        self._free: asyncio.Queue[E] = asyncio.Queue()
        for e in engines:
            self._free.put_nowait(e)
        self._pool = ThreadPoolExecutor(max_workers=len(engines), thread_name_prefix=name)
        self.size = len(engines)
        self.clock = BusyClock()

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[E]:
        """One engine for as long as the caller needs it (e.g. a window-by-window stream)."""
        engine = await self._free.get()
        try:
            yield engine
        finally:
            self._free.put_nowait(engine)

    async def call(self, engine: E, fn: Callable[[E], T]) -> T:
        """``fn(engine)`` in the pool's threads (the caller holds ``engine``'s lease)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.clock.timed(fn), engine)

    async def run(self, fn: Callable[[E], T]) -> T:
        async with self.lease() as engine:
            return await self.call(engine, fn)


def pick_device(preference: str) -> str:
    """CUDA when Ray assigned this replica a GPU and CUDA works; CPU otherwise."""
    if preference == "cpu":
        return "cpu"
    import ray
    import torch

    if ray.get_gpu_ids() and torch.cuda.is_available():
        return "cuda"
    if preference == "cuda":
        raise ModelUnavailable("asr.device is 'cuda' but this replica has no usable GPU")
    return "cpu"


def load_stats(meter: Any) -> dict[str, Any]:
    """``stats()`` of a stage whose only figures are its ``LoadMeter``'s (the Status page)."""
    return {**replica_info(), "load": meter.figures()}


class MeteredStage:
    """What every offline stage answers besides its work: ``stats()`` (its ``LoadMeter``'s
    figures, for the Status page), ``timings()`` (its spans by request id, for the benchmark),
    ``ready()`` (warmed up in ``__init__``) and ``info()``. A stage sets ``_load`` and
    ``_times`` in its ``__init__``."""

    _load: Any  # serve_app.load.LoadMeter
    _times: Any  # serve_app.deployments.timing.StageTimes

    def stats(self) -> dict[str, Any]:
        """This replica's load (``serve_app.load``): CPU, audio handled, busy seconds."""
        return load_stats(self._load)

    def timings(self, since: float = 0.0) -> list[Any]:
        """This replica's spans by request id (``deployments.timing``) that ended since ``since``."""
        return list(self._times.since(since))

    def ready(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return replica_info()


def replica_info() -> dict[str, Any]:
    """Which replica and process answered: operators and the fault tests read it."""
    from ray import serve

    try:
        replica = serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (an engine driven in-process)
        replica = None
    return {"replica": replica, "pid": os.getpid()}
