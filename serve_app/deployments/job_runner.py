"""Job runner: claims job files from the database and feeds them through the shared pipeline,
window by window, in the batch-job class of the ASR queue (``serve_app.jobs.worker``). Any
number of replicas: the database hands each file to one of them, and a replica that dies
leaves its files to be claimed again when their leases expire. One replica also applies the
retention settings (old history entries, old jobs and their audio) once an hour."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from ray import serve

from serve_app.config import JobsArgs, RetryArgs
from serve_app.deployments.common import logger, replica_info
from serve_app.engines.decode import probe_duration
from serve_app.jobs import JobStore
from serve_app.jobs.housekeeping import HOUSEKEEPING_S, Swept, housekeep
from serve_app.jobs.worker import JobWorker
from serve_app.settings import StorageArgs
from serve_app.stages import Stages


@serve.deployment(name="JobRunner", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=16)
class JobRunnerDeployment:
    # Async, so the worker loops start on the replica's event loop (Serve awaits it).
    async def __init__(  # type: ignore[misc]
        self, stages: Stages, retry: RetryArgs, jobs: JobsArgs, storage: StorageArgs
    ) -> None:
        storage.data_dir.mkdir(parents=True, exist_ok=True)
        self.storage = storage
        self.store = JobStore.open(storage.database)
        pipeline = stages.pipeline(retry)
        info = replica_info()
        self.worker = JobWorker(
            self.store,
            pipeline.transcribe_source,
            jobs,
            storage.data_dir,
            worker_id=f"{info['replica']}:{info['pid']}",
            probe_duration=probe_duration,
            keep_audio=storage.keep_job_audio,
        )
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self.worker.run(self._stop)),
            asyncio.create_task(self._housekeeping()),
        ]
        logger.info("job runner %s ready (%d files at a time)", self.worker.worker_id, jobs.concurrency)

    async def _housekeeping(self) -> None:
        while not self._stop.is_set():
            try:
                swept = await asyncio.to_thread(housekeep, self.store, self.storage)
                if swept != Swept():
                    logger.info("job runner: housekeeping removed %s", swept)
            except Exception:
                logger.exception("job runner: housekeeping failed; trying again in an hour")
            try:
                await asyncio.wait_for(self._stop.wait(), HOUSEKEEPING_S)
            except TimeoutError:
                pass

    def stats(self) -> dict[str, Any]:
        return {
            **replica_info(),
            **dataclasses.asdict(self.worker.stats),
            "in_flight": dict(self.worker.current),
        }

    def ready(self) -> bool:
        return all(not t.done() for t in self._tasks)

    def info(self) -> dict[str, Any]:
        return replica_info()

    def check_health(self) -> None:
        for t in self._tasks:
            if t.done():
                raise RuntimeError(
                    f"a job-runner loop stopped: {t.exception() if not t.cancelled() else 'cancelled'}"
                )
