"""ASR stage: segments from many concurrent requests form one batch.

Each request's segments enter ``_infer`` one by one; ``@serve.batch`` gathers items from all
requests on the replica. A batch is bounded by count *and* by audio seconds
(``engines.batching.item_cost``). The knobs come from ``user_config`` and change via
``reconfigure()`` without a restart.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from ray import serve

from serve_app.autoscaling import QUEUED_AUDIO_METRIC
from serve_app.config import FunasrArgs, WhisperArgs
from serve_app.contracts import SAMPLE_RATE, AsrOptions, AsrResult, Priority, Segmentation, Transcript
from serve_app.deployments.common import WARMUP_AUDIO, Worker, logger, pick_device, replica_info
from serve_app.engines import build_asr
from serve_app.engines.batching import batch_cost, item_cost
from serve_app.engines.transcript import assemble
from serve_app.gpu import GpuProbe
from serve_app.metrics import asr_metrics, record_gpus


class BatchConfig(BaseModel):
    """``user_config`` of the ASR deployment."""

    max_batch_count: int = Field(16, ge=1)
    """Most segments in one forward pass."""
    max_batch_audio_s: float = Field(240.0, gt=0)
    """Most audio seconds in one forward pass (bounds padded memory on the GPU)."""
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    """How long the first item of a batch waits for company."""
    min_fill: float = Field(0.9, ge=0, le=1)
    """Engines that pad (FunASR): a batch is cut into sub-batches of similar length whose real
    audio fills at least this share of the padded area. High on CPUs, where padding costs
    wall time; lower on GPUs, where bigger batches matter more than padding."""


@dataclass(frozen=True)
class _Item:
    samples: np.ndarray
    options: AsrOptions
    cost: float


def _batch_cost(items: list[_Item]) -> int:
    return batch_cost(i.cost for i in items)


@serve.deployment(name="ASR", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class AsrDeployment:
    def __init__(self, asr: FunasrArgs | WhisperArgs, model_dir: str) -> None:
        self.device = pick_device(asr.device)
        self.engine = build_asr(asr, Path(model_dir), self.device)
        self.language = asr.language
        self._worker = Worker("asr")
        self._batch_sizes: Counter[int] = Counter()
        self._batch_audio_s: list[float] = []
        self._config = BatchConfig()
        self._queued_audio_s = 0.0
        self._inflight = 0
        self._busy_s = 0.0
        self._since = time.monotonic()
        self._metrics = asr_metrics()
        self._gpu = GpuProbe.assigned()
        self.reconfigure({})
        # Warm up before the replica reports ready: the first forward pass is much slower.
        self.engine.transcribe_batch([WARMUP_AUDIO, WARMUP_AUDIO[:8000]], [AsrOptions(), AsrOptions()])
        logger.info("ASR %s ready on %s", self.engine.name, self.device)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._config = BatchConfig.model_validate({**self._config.model_dump(), **(user_config or {})})
        # @serve.batch adds these setters at run time; its type stubs do not show them.
        self._infer.set_max_batch_size(math.ceil(self._config.max_batch_audio_s))  # type: ignore[attr-defined]
        self._infer.set_batch_wait_timeout_s(self._config.batch_wait_timeout_s)  # type: ignore[attr-defined]
        if hasattr(self.engine, "min_fill"):
            self.engine.min_fill = self._config.min_fill

    @serve.batch(max_batch_size=240, batch_wait_timeout_s=0.01, batch_size_fn=_batch_cost)
    async def _infer(self, items: list[_Item]) -> list[AsrResult]:
        audio_s = sum(len(i.samples) for i in items) / SAMPLE_RATE
        self._batch_sizes[len(items)] += 1
        self._batch_audio_s.append(audio_s)
        del self._batch_audio_s[:-1000]
        self._metrics["batch_size"].observe(len(items))
        self._metrics["batch_audio"].observe(audio_s)
        t0 = time.perf_counter()
        results = await self._worker.run(
            self.engine.transcribe_batch, [i.samples for i in items], [i.options for i in items]
        )
        self._busy_s += time.perf_counter() - t0
        self._metrics["processed"].inc(audio_s)
        return results

    async def transcribe(
        self, seg: Segmentation, options: AsrOptions, priority: Priority = Priority.INTERACTIVE
    ) -> Transcript:
        audio_s = sum(s.duration_s for s in seg.segments)
        self._inflight += 1
        self._queued_audio_s += audio_s
        if audio_s > 0:  # Ray's Counter.inc rejects 0
            self._metrics["received"].inc(audio_s)
        self._metrics["queued"].set(self._queued_audio_s)
        start = time.perf_counter()
        c = self._config
        try:
            results = await asyncio.gather(
                *(
                    self._infer(
                        _Item(
                            s.samples,
                            options,
                            item_cost(s.duration_s, c.max_batch_count, c.max_batch_audio_s),
                        )
                    )
                    for s in seg.segments
                )
            )
        finally:
            self._inflight -= 1
            self._queued_audio_s -= audio_s
            self._metrics["queued"].set(self._queued_audio_s)
        if audio_s > 0:
            self._metrics["rtf"].observe((time.perf_counter() - start) / audio_s)
        return assemble(seg, results, options.language or self.language)

    def stats(self) -> dict[str, Any]:
        """Batch sizes seen by this replica (for tests, the benchmark and operators)."""
        n = sum(self._batch_sizes.values())
        return {
            **replica_info(),
            "device": self.device,
            "inflight_requests": self._inflight,
            "queued_audio_s": self._queued_audio_s,
            "batches": n,
            "batch_size_counts": dict(self._batch_sizes),
            "mean_batch_size": sum(k * v for k, v in self._batch_sizes.items()) / n if n else 0.0,
            "mean_batch_audio_s": sum(self._batch_audio_s) / len(self._batch_audio_s)
            if self._batch_audio_s
            else 0.0,
            "busy_s": self._busy_s,
            "busy_fraction": self._busy_s / max(1e-9, time.monotonic() - self._since),
            "config": self._config.model_dump(),
        }

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Queued + running audio seconds, for ``serve_app.autoscaling.QueuedAudioPolicy``
        (read from our own counter, never from @serve.batch internals)."""
        record_gpus(self._gpu)
        return {QUEUED_AUDIO_METRIC: self._queued_audio_s}

    def reset_stats(self) -> None:
        self._batch_sizes.clear()
        self._batch_audio_s.clear()
        self._busy_s = 0.0
        self._since = time.monotonic()

    def ready(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return replica_info()
