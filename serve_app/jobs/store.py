"""The durable store of batch jobs and transcription history: SQLite or PostgreSQL, no Ray.

``JobStore`` is the composition root: one ``Database`` (engine, clock, transactions) and the
stores of one purpose each built on it:

- ``uploads`` (``UploadStore``, ``jobs/uploads.py``): stored audio by content, its owners,
  releasing and forgetting it;
- ``jobs`` (``JobRecords``, ``jobs/records.py``): jobs with idempotency keys and quotas, their
  files and transcripts, deletion and retention;
- ``queue`` (``WorkQueue``, ``jobs/queue.py``): claim, lease and fencing (its module docstring
  explains them);
- ``history`` (``HistoryStore``, ``jobs/history.py``): single transcriptions kept for the user;
- ``usage`` (``UsageStore``, ``jobs/usage.py``): audio transcribed since a moment, what an
  owner holds now.

Locks are always taken files first, then their job (and jobs in id order), then upload rows in
sha order, so concurrent transitions on PostgreSQL never deadlock.

Times come from ``clock`` (UTC), so leases compare against the clock of the process that
writes them: keep hosts' clocks in sync well within a lease. Methods are blocking; call them
from async code through a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import URL

from serve_app.jobs.db import Clock, Database, utc_now
from serve_app.jobs.history import HistoryStore
from serve_app.jobs.migrate import upgrade
from serve_app.jobs.queue import WorkQueue, check_max_attempts
from serve_app.jobs.records import JobRecords
from serve_app.jobs.uploads import UploadStore
from serve_app.jobs.usage import UsageStore


class JobStore:
    """Uploads, jobs, the work queue, history and usage in one database.

    ``target``: a SQLite file path, a ``postgresql://`` URL (psycopg 3) or an engine. The schema
    must be current: use ``JobStore.open`` (which runs the migrations) or call
    ``serve_app.jobs.migrate.upgrade`` first. Thread-safe; one per process is enough."""

    def __init__(
        self,
        target: str | Path | URL | Engine,
        *,
        clock: Clock = utc_now,
        max_attempts: int = 3,
        idempotency_ttl_s: float = 24 * 3600.0,
    ) -> None:
        check_max_attempts(max_attempts)  # before the engine (a SQLite file's folder) exists
        self.db = Database(target, clock=clock)
        self.engine = self.db.engine
        self.uploads = UploadStore(self.db)
        """Stored audio by content and the keys that hold it."""
        self.jobs = JobRecords(self.db, idempotency_ttl_s=idempotency_ttl_s)
        """Jobs, their files and transcripts."""
        self.queue = WorkQueue(self.db, max_attempts=max_attempts)
        """What workers claim, renew, commit and end."""
        self.history = HistoryStore(self.db)
        """Single transcriptions kept for the user (same database)."""
        self.usage = UsageStore(self.db)
        """Audio transcribed since a moment; what an owner holds now."""

    @classmethod
    def open(cls, target: str | Path | URL | Engine, **kwargs: Any) -> JobStore:
        """Migrate the database to the current schema, then open the store on it."""
        store = cls(target, **kwargs)
        upgrade(store.engine)
        return store

    def close(self) -> None:
        self.db.close()
