"""Usage: audio transcribed since a moment (history and job windows), what an owner holds now,
and the owner quota checks the upload and job stores make inside their own transactions.

An owner is an API key's label; ``''`` is a server without API keys (stored as NULL on jobs)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select, text

from serve_app.errors import QuotaExceeded
from serve_app.jobs.db import Database
from serve_app.jobs.models import JobQuota, OwnerUsage, Usage
from serve_app.jobs.rows import LIVE_JOB, OPEN
from serve_app.jobs.schema import files, jobs, upload_owners, uploads, windows
from serve_app.jobs.schema import history as history_rows
from serve_app.jobs.states import FileState


class UsageStore:
    """Usage queries (``JobStore.usage``); they only read."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def since(self, since: datetime) -> Usage:
        """Audio transcribed since ``since`` (history entries and committed job windows, of
        every owner; deleted ones no longer count) and the files queued or running now."""
        with self._db.read() as conn:
            h = conn.execute(
                select(func.coalesce(func.sum(history_rows.c.duration_s), 0.0), func.count()).where(
                    history_rows.c.created_at >= since
                )
            ).one()
            # TODO: index windows.created_at (a migration) if this scan shows on a large store.
            w = conn.execute(
                select(func.coalesce(func.sum(windows.c.end_s - windows.c.start_s), 0.0), func.count()).where(
                    windows.c.created_at >= since
                )
            ).one()
            by_state: dict[str, int] = dict(
                conn.execute(
                    select(files.c.state, func.count()).where(files.c.state.in_(OPEN)).group_by(files.c.state)
                )
                .tuples()
                .all()
            )
        return Usage(
            since=since,
            history_audio_s=float(h[0]),
            history_entries=int(h[1]),
            job_audio_s=float(w[0]),
            job_windows=int(w[1]),
            pending_files=int(by_state.get(FileState.PENDING.value, 0)),
            running_files=int(by_state.get(FileState.RUNNING.value, 0)),
        )

    def of_owner(self, owner: str | None) -> OwnerUsage:
        """What ``owner`` holds now: live jobs, queued audio, stored upload bytes."""
        who = owner or ""
        with self._db.read() as conn:
            return OwnerUsage(
                live_jobs=_live_jobs(conn, who),
                queued_audio_s=_queued_audio_s(conn, who),
                stored_bytes=_stored_bytes(conn, who),
            )


# ---------------------------------------------------------------------- quota checks


def lock_owner(conn: Connection, owner: str) -> None:
    """Serialise quota checks of one owner across processes (PostgreSQL: a transaction-scoped
    advisory lock; SQLite's write transactions are serial already)."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"funasr-serve owner:{owner}".encode()).digest()
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": int.from_bytes(digest[:8], "big", signed=True)}
        )


def check_stored(conn: Connection, owner: str, sha256: str, size_bytes: int, limit: int) -> None:
    used = _stored_bytes(conn, owner, excluding=sha256)
    if used + size_bytes > limit:
        raise QuotaExceeded(
            f"quota stored_upload_gb exceeded: this key stores {used / 1e9:.2f} GB of uploads and "
            f"{size_bytes / 1e9:.2f} GB more would pass its {limit / 1e9:.2f} GB; delete finished jobs "
            "(their audio goes) or wait for running ones"
        )


def check_job_quota(conn: Connection, owner: str, quota: JobQuota, new_audio_s: float) -> None:
    if quota.max_live_jobs is not None:
        live = _live_jobs(conn, owner)
        if live >= quota.max_live_jobs:
            raise QuotaExceeded(
                f"quota concurrent_jobs exceeded: this key has {live} jobs queued or running, "
                f"the most it may have at once is {quota.max_live_jobs}; retry when one has ended"
            )
    if quota.max_queued_audio_s is not None:
        queued = _queued_audio_s(conn, owner)
        if queued + new_audio_s > quota.max_queued_audio_s:
            raise QuotaExceeded(
                f"quota queued_audio_h exceeded: this key has {queued / 3600:.2f} h of audio queued and "
                f"the job adds {new_audio_s / 3600:.2f} h, over its {quota.max_queued_audio_s / 3600:.2f} h; "
                "retry when some has been transcribed"
            )


def _owner_is(column: Any, owner: str) -> ColumnElement[bool]:
    """Rows of ``owner`` ('' is a server without API keys, stored as NULL on jobs)."""
    return column.is_(None) if owner == "" else column == owner


def _live_jobs(conn: Connection, owner: str) -> int:
    return int(
        conn.execute(
            select(func.count()).where(_owner_is(jobs.c.owner, owner), jobs.c.state.in_(LIVE_JOB))
        ).scalar_one()
    )


def _stored_bytes(conn: Connection, owner: str, excluding: str | None = None) -> int:
    query = (
        select(func.coalesce(func.sum(uploads.c.size_bytes), 0))
        .select_from(uploads.join(upload_owners, upload_owners.c.sha256 == uploads.c.sha256))
        .where(upload_owners.c.owner == owner, uploads.c.released_at.is_(None))
    )
    if excluding is not None:
        query = query.where(uploads.c.sha256 != excluding)
    return int(conn.execute(query).scalar_one())


def _queued_audio_s(conn: Connection, owner: str) -> float:
    total = conn.execute(
        select(func.coalesce(func.sum(files.c.duration_s - files.c.progress_s), 0.0))
        .select_from(files.join(jobs, jobs.c.id == files.c.job_id))
        .where(_owner_is(jobs.c.owner, owner), files.c.state.in_(OPEN), files.c.duration_s.is_not(None))
    ).scalar_one()
    return max(float(total), 0.0)
