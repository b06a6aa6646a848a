"""Helpers shared by the deployments."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from serve_app.contracts import SAMPLE_RATE
from serve_app.errors import ModelUnavailable

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


def replica_info() -> dict[str, Any]:
    """Which replica and process answered: operators and the fault tests read it."""
    from ray import serve

    try:
        replica = serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (an engine driven in-process)
        replica = None
    return {"replica": replica, "pid": os.getpid()}
