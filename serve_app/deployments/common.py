"""Helpers shared by the deployments."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from serve_app.contracts import SAMPLE_RATE

T = TypeVar("T")
logger = logging.getLogger("ray.serve")

WARMUP_AUDIO = np.zeros(SAMPLE_RATE, dtype=np.float32)
"""One second of silence: every stage runs it once in ``__init__`` before reporting ready."""


class Worker:
    """One thread for a stage's blocking model calls, so the replica's event loop stays free
    to accept (and batch) the next requests while the model runs."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
