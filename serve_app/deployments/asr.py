"""ASR stage: segments from many concurrent requests form batches, by one queue policy.

``transcribe`` puts a request's segments into a ``FairQueue`` (priority classes first, then
round-robin by request within a class, turns of ``fair_quantum_s`` audio seconds) and awaits them. ``engine.parallelism`` batch loops
take batches from it, bounded by count and audio seconds (``engines.batching.item_cost``),
each waiting up to ``batch_wait_timeout_s`` for company, and run them on the engine in their
own thread. The knobs come from ``user_config`` and change via ``reconfigure()`` without a
restart. ``stats()`` says where the loops' time went (``LoopClock``): running a batch, idle with
nothing queued, or idle waiting for a batch to fill; ``timings()`` gives each segment's queue
wait and batch by request id (``deployments.timing``). (``@serve.batch`` is a FIFO: a long upload's segments would fill every batch ahead of
requests that arrive after it.)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from serve_app.autoscaling import QUEUED_AUDIO_METRIC
from serve_app.config import BatchConfig, FunasrArgs, WhisperArgs
from serve_app.contracts import SAMPLE_RATE, AsrOptions, AsrResult, Priority, Segmentation, Transcript
from serve_app.deployments.common import WARMUP_AUDIO, logger, pick_device, replica_info
from serve_app.deployments.timing import Span, StageTimes, request_id
from serve_app.engines import build_asr
from serve_app.engines.batching import item_cost, split_on_oom
from serve_app.engines.scheduling import FairQueue, LoopClock
from serve_app.engines.transcript import assemble
from serve_app.gpu import GpuProbe
from serve_app.load import LoadMeter
from serve_app.metrics import asr_metrics, record_gpus

LOOP_PHASES = ("busy", "idle_empty", "idle_fill")
"""What a batch loop is doing: taking and running a batch, waiting for anything to be queued,
or sleeping ``batch_wait_timeout_s`` for a batch to fill."""


@dataclass
class QueuedSegment:
    """One speech segment waiting in the ASR queue for a batch, with the future its caller awaits."""

    samples: np.ndarray
    options: AsrOptions
    seconds: float
    future: asyncio.Future[AsrResult] = field(repr=False)
    request_id: str = ""
    """Serve's id of the request it belongs to (for ``timings()``)."""
    queued_at: float = 0.0
    """When it was queued (``time.time()``)."""


@serve.deployment(name="ASR", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class AsrDeployment:
    def __init__(self, asr: FunasrArgs | WhisperArgs, model_dir: str) -> None:
        self.device = pick_device(asr.device)
        self.engine = build_asr(asr, Path(model_dir), self.device)
        self.language = asr.language
        self._parallelism = self.engine.parallelism
        self._pool = ThreadPoolExecutor(max_workers=self._parallelism, thread_name_prefix="asr")
        self._queue: FairQueue[QueuedSegment] = FairQueue(quantum=BatchConfig().fair_quantum_s)
        self._ready = asyncio.Condition()
        self._loops: list[asyncio.Task[None]] = []
        self._requests = itertools.count()
        self._batch_sizes: Counter[int] = Counter()
        self._batch_audio_s: list[float] = []
        self._config = BatchConfig()
        self._queued_audio_s = 0.0
        self._inflight = 0
        self._busy_s = 0.0
        self._oom_splits = 0
        self._since = time.monotonic()
        self._loop_clock = LoopClock(LOOP_PHASES, time.monotonic)
        # Audio counted per finished call (a request's window, a realtime final): the audio
        # it covered, silence included, as the other stages count it.
        self._load = LoadMeter(self._parallelism, lambda: self._loop_clock.lifetime()["busy"])
        self._times = StageTimes()
        self._metrics = asr_metrics()
        self._gpu = GpuProbe.assigned()
        self.reconfigure({})
        # Warm up before the replica reports ready: the first forward pass is much slower.
        self.engine.transcribe_batch([WARMUP_AUDIO, WARMUP_AUDIO[:8000]], [AsrOptions(), AsrOptions()])
        logger.info("ASR %s ready on %s (%d batch loops)", self.engine.name, self.device, self._parallelism)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self._config = BatchConfig.model_validate({**self._config.model_dump(), **(user_config or {})})
        self._queue.quantum = self._config.fair_quantum_s
        if hasattr(self.engine, "min_fill"):
            self.engine.min_fill = self._config.min_fill

    def _cost(self, job: QueuedSegment) -> float:
        c = self._config
        return item_cost(job.seconds, c.max_batch_count, c.max_batch_audio_s)

    async def transcribe(
        self,
        seg: Segmentation,
        options: AsrOptions,
        priority: Priority = Priority.INTERACTIVE,
        key: str | None = None,
    ) -> Transcript:
        """``seg``'s segments through the queue. Calls with the same ``key`` (the windows of one
        request) share one line of the queue, so a long file is one request, not many."""
        if not self._loops:
            self._loops = [asyncio.create_task(self._batch_loop(i)) for i in range(self._parallelism)]
        loop = asyncio.get_running_loop()
        rid, now = request_id(), time.time()
        jobs = [
            QueuedSegment(s.samples, options, s.duration_s, loop.create_future(), rid, now)
            for s in seg.segments
        ]
        audio_s = sum(j.seconds for j in jobs)
        request = key if key is not None else next(self._requests)
        self._inflight += 1
        self._queued_audio_s += audio_s
        if audio_s > 0:  # Ray's Counter.inc rejects 0
            self._metrics["received"].inc(audio_s)
        self._metrics["queued"].set(self._queued_audio_s)
        start = time.perf_counter()
        try:
            async with self._ready:
                self._queue.push(request, int(priority), jobs)
                self._ready.notify(len(jobs))
            results = await asyncio.gather(*(j.future for j in jobs))
        except BaseException:
            self._queue.drop(request, jobs)  # a cancelled or failed call leaves nothing queued
            raise
        finally:
            self._inflight -= 1
            self._queued_audio_s -= audio_s
            self._metrics["queued"].set(self._queued_audio_s)
        if audio_s > 0:
            self._metrics["rtf"].observe((time.perf_counter() - start) / audio_s)
        self._load.audio(seg.duration_s)
        return assemble(seg, results, options.language or self.language)

    async def _batch_loop(self, loop: int) -> None:
        while True:
            self._loop_clock.enter(loop, "idle_empty")
            async with self._ready:
                await self._ready.wait_for(lambda: len(self._queue) > 0)
            c = self._config
            if len(self._queue) < c.max_batch_count and c.batch_wait_timeout_s > 0:
                self._loop_clock.enter(loop, "idle_fill")
                await asyncio.sleep(c.batch_wait_timeout_s)  # let other requests' segments join
            self._loop_clock.enter(loop, "busy")
            batch = self._queue.take(c.max_batch_count, c.max_batch_audio_s, self._cost, lambda j: j.seconds)
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[QueuedSegment]) -> None:
        audio_s = sum(len(j.samples) for j in batch) / SAMPLE_RATE
        self._batch_sizes[len(batch)] += 1
        self._batch_audio_s.append(audio_s)
        del self._batch_audio_s[:-1000]
        self._metrics["batch_size"].observe(len(batch))
        self._metrics["batch_audio"].observe(audio_s)
        t0, wall0 = time.perf_counter(), time.time()

        def run(jobs: list[QueuedSegment]) -> list[AsrResult]:
            return self.engine.transcribe_batch([j.samples for j in jobs], [j.options for j in jobs])

        try:
            # Out of GPU memory: the batch is split and retried half by half (batching.split_on_oom).
            results = await asyncio.get_running_loop().run_in_executor(
                self._pool, split_on_oom, run, batch, self._free_gpu_memory
            )
        except Exception as e:  # the whole batch fails with it; each caller gets the error
            for j in batch:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        finally:
            self._busy_s += time.perf_counter() - t0
            wall1 = time.time()
            for j in batch:
                self._times.add(j.request_id, "asr_queue", j.queued_at, wall0)
                self._times.add(j.request_id, "asr_batch", wall0, wall1)
        self._metrics["processed"].inc(audio_s)
        for j, r in zip(batch, results, strict=True):
            if not j.future.done():
                j.future.set_result(r)

    def _free_gpu_memory(self) -> None:
        self._oom_splits += 1
        logger.warning("ASR ran out of GPU memory on a batch; splitting it (%d so far)", self._oom_splits)
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def stats(self) -> dict[str, Any]:
        """Batch sizes seen by this replica (for tests, the benchmark and operators)."""
        n = sum(self._batch_sizes.values())
        return {
            **replica_info(),
            "device": self.device,
            "parallelism": self._parallelism,
            "inflight_requests": self._inflight,
            "queued_segments": len(self._queue),
            "queued_audio_s": self._queued_audio_s,
            "batches": n,
            "batch_size_counts": dict(self._batch_sizes),
            "mean_batch_size": sum(k * v for k, v in self._batch_sizes.items()) / n if n else 0.0,
            "mean_batch_audio_s": sum(self._batch_audio_s) / len(self._batch_audio_s)
            if self._batch_audio_s
            else 0.0,
            "busy_s": self._busy_s,
            # Seconds summed over the batch loops since reset_stats(): taking and running a
            # batch, idle with nothing queued, idle waiting for a batch to fill.
            **{f"loop_{phase}_s": s for phase, s in self._loop_clock.totals().items()},
            "oom_splits": self._oom_splits,
            "busy_fraction": self._busy_s / self._parallelism / max(1e-9, time.monotonic() - self._since),
            "config": self._config.model_dump(),
            "load": self._load.figures(),  # never reset: windows of its own (serve_app.load)
        }

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Queued + running audio seconds, for ``serve_app.autoscaling.QueuedAudioPolicy``."""
        record_gpus(self._gpu)
        return {QUEUED_AUDIO_METRIC: self._queued_audio_s}

    def reset_stats(self) -> None:
        self._batch_sizes.clear()
        self._batch_audio_s.clear()
        self._busy_s = 0.0
        self._since = time.monotonic()
        self._loop_clock.reset()

    def timings(self, since: float = 0.0) -> list[Span]:
        """Each segment's ``asr_queue`` (queued → its batch starts) and ``asr_batch`` spans by
        request id, those that ended at or after ``since`` (``time.time()``)."""
        return self._times.since(since)

    def ready(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return replica_info()
