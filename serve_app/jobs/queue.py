"""The work queue: workers claim files, hold them under a lease, commit their transcript window
by window and end them; the fencing that keeps a file ``done`` exactly once.

The queue lives in the database. A worker calls ``claim(worker_id, lease_s)``, which takes the
next file in ONE statement (``UPDATE files ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)
RETURNING ...``; SQLAlchemy drops the lock clause on SQLite, where the UPDATE holds the write
lock), and then holds it while it renews the lease. Every claim increments ``attempts``; that
number is the fencing token: ``renew``, ``commit_window``, ``set_duration``, ``complete`` and
``fail`` write only while the file is still ``running`` under that attempt, and answer
``WriteResult.STALE`` (another worker took it over, it ended, or it is gone) or
``WriteResult.CANCELLED`` otherwise. A lease that expired but that nobody took over is still
honoured: the attempt, not the clock, decides. So a file ends ``done`` exactly once: a stale
worker's late ``complete`` is refused.

Long files are committed window by window (``commit_window``), in order; a worker that takes
over a file resumes at ``Claim.progress_s``.

Which file next (fair share, then FIFO): among claimable files of jobs that are not ended, the
job with the fewest files in flight goes first, then the oldest job, then the file's position
in its job. Two jobs therefore share the workers instead of the later one waiting behind the
whole of the earlier one. Claimable: ``pending``, or ``running`` with an expired lease (its
worker died). A file whose lease expired ``max_attempts`` times is failed, not retried forever.

Every transition locks files first, then their job (``_refresh_jobs``: jobs in id order), and
the job row is locked before its state is derived, so two files ending at once cannot both see
the other still running."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, func, insert, or_, select, update

from serve_app.jobs.db import Database
from serve_app.jobs.errors import WindowOutOfOrder
from serve_app.jobs.models import Claim, JobOptions, Window, WriteResult
from serve_app.jobs.rows import LIVE_JOB, file_of, released
from serve_app.jobs.schema import files, jobs, uploads, windows
from serve_app.jobs.states import FileState, JobState, derive_job_state

_EPS_S = 1e-6
"""Tolerance when matching a window's start with the committed progress (seconds)."""


class WorkQueue:
    """The claim/lease/fence queue over the jobs' files (``JobStore.queue``)."""

    def __init__(self, db: Database, *, max_attempts: int = 3) -> None:
        self._db = db
        self.max_attempts = check_max_attempts(max_attempts)
        """Claims a file gets in all (its worker died or it was handed back) before it fails."""

    def claim(self, worker_id: str, lease_s: float) -> Claim | None:
        """Take the next file (see the module docstring for which) for ``lease_s`` seconds, or
        ``None`` when there is nothing to do. The claim's ``attempt`` fences later writes."""
        _check_lease(lease_s)
        now = self._db.now()
        self._fail_exhausted(now)
        f = files.alias("f")
        busy = files.alias("busy")
        in_flight = (
            select(func.count())
            .where(busy.c.job_id == f.c.job_id, busy.c.state == FileState.RUNNING.value)
            .scalar_subquery()
        )
        pick = (
            select(f.c.id)
            .join(jobs, jobs.c.id == f.c.job_id)
            .where(
                _claimable(f.c.state, f.c.lease_expires_at, now),
                f.c.attempts < self.max_attempts,
                jobs.c.state.in_(LIVE_JOB),
            )
            .order_by(in_flight, jobs.c.created_at, jobs.c.id, f.c.position)
            .limit(1)
            .with_for_update(skip_locked=True, of=f)
            .scalar_subquery()
        )
        lease_until = now + timedelta(seconds=lease_s)
        stmt = (
            update(files)
            .where(files.c.id == pick, _claimable(files.c.state, files.c.lease_expires_at, now))
            .values(
                state=FileState.RUNNING.value,
                attempts=files.c.attempts + 1,
                lease_owner=worker_id,
                lease_expires_at=lease_until,
                updated_at=now,
            )
            .returning(*files.c)
        )
        with self._db.write() as conn:
            row = conn.execute(stmt).one_or_none()
            if row is None:
                return None
            _refresh_jobs(conn, [row.job_id], now)
            options, path = conn.execute(
                select(jobs.c.options, func.coalesce(row.source_path, uploads.c.path))
                .select_from(jobs)
                .join(uploads, uploads.c.sha256 == row.sha256)
                .where(jobs.c.id == row.job_id)
            ).one()
        return Claim(
            file=file_of(row),
            options=JobOptions.from_json(options),
            upload_path=path,
            lease_expires_at=lease_until,
        )

    def _fail_exhausted(self, now: datetime) -> None:
        """Fail files whose lease expired on their last allowed attempt (a file that kills its
        worker every time must not be retried forever). Its own short transaction, before the
        claim's, so a claim never holds more than one job's lock."""
        f = files.alias("f")
        doomed = (
            select(f.c.id)
            .where(
                f.c.state == FileState.RUNNING.value,
                f.c.lease_expires_at < now,
                f.c.attempts >= self.max_attempts,
            )
            .with_for_update(skip_locked=True, of=f)
        )
        with self._db.write() as conn:
            job_ids = conn.execute(
                update(files)
                .where(files.c.id.in_(doomed))
                .values(
                    **released(FileState.FAILED, now),
                    error=f"its worker stopped renewing the lease on all {self.max_attempts} attempts",
                )
                .returning(files.c.job_id)
            ).scalars()
            _refresh_jobs(conn, job_ids, now)

    def renew(self, file_id: str, worker_id: str, attempt: int, lease_s: float) -> WriteResult:
        """Extend the lease of a claim this worker still holds."""
        _check_lease(lease_s)
        now = self._db.now()
        with self._db.write() as conn:
            done = conn.execute(
                update(files)
                .where(*_held(file_id, attempt), files.c.lease_owner == worker_id)
                .values(lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
            ).rowcount
            return WriteResult.OK if done else _why_refused(conn, file_id)

    def set_duration(self, file_id: str, attempt: int, duration_s: float) -> WriteResult:
        """Record the file's audio duration once the worker has probed it (for totals/ETA)."""
        now = self._db.now()
        with self._db.write() as conn:
            done = conn.execute(
                update(files).where(*_held(file_id, attempt)).values(duration_s=duration_s, updated_at=now)
            ).rowcount
            return WriteResult.OK if done else _why_refused(conn, file_id)

    def commit_window(self, file_id: str, attempt: int, window: Window) -> WriteResult:
        """Store one window's transcript and advance the file's progress to ``window.end_s``.

        Windows come in order: ``window.start_s`` must equal the committed progress
        (``WindowOutOfOrder`` otherwise), except that re-sending the last committed window
        (a retry after a lost reply) is answered ``OK`` without storing it twice."""
        if window.end_s < window.start_s:
            raise ValueError(f"window ends ({window.end_s}) before it starts ({window.start_s})")
        now = self._db.now()
        with self._db.write() as conn:
            row = conn.execute(
                select(files.c.state, files.c.attempts, files.c.progress_s, files.c.windows)
                .where(files.c.id == file_id)
                .with_for_update()
            ).one_or_none()
            if row is None or row.state != FileState.RUNNING.value or row.attempts != attempt:
                return _why_refused(conn, file_id)
            if abs(window.start_s - row.progress_s) > _EPS_S:
                if _is_last_window(conn, file_id, row.windows, window):
                    return WriteResult.OK
                raise WindowOutOfOrder(
                    f"file {file_id}: window starts at {window.start_s}s, progress is {row.progress_s}s"
                )
            conn.execute(
                insert(windows).values(
                    file_id=file_id,
                    seq=row.windows,
                    start_s=window.start_s,
                    end_s=window.end_s,
                    language=window.language,
                    segments=list(window.segments),
                    attempt=attempt,
                    created_at=now,
                )
            )
            conn.execute(
                update(files)
                .where(files.c.id == file_id)
                .values(progress_s=window.end_s, windows=files.c.windows + 1, updated_at=now)
            )
            return WriteResult.OK

    def complete(self, file_id: str, attempt: int) -> WriteResult:
        """Mark the file ``done`` after its last window was committed. Exactly one claim
        succeeds; repeating the successful call answers ``OK`` again without a second
        transition. An unknown duration becomes the committed progress."""
        now = self._db.now()
        with self._db.write() as conn:
            job_id = conn.execute(
                update(files)
                .where(*_held(file_id, attempt))
                .values(
                    **released(FileState.DONE, now),
                    duration_s=func.coalesce(files.c.duration_s, files.c.progress_s),
                )
                .returning(files.c.job_id)
            ).scalar_one_or_none()
            if job_id is None:
                return _replayed(conn, file_id, attempt, FileState.DONE)
            _refresh_jobs(conn, [job_id], now)
            return WriteResult.OK

    def fail(self, file_id: str, attempt: int, reason: str, *, retry: bool = False) -> WriteResult:
        """End the file as ``failed`` with ``reason``; or, with ``retry=True`` and attempts left,
        hand it back as ``pending`` (keeping its windows) for any worker to claim again, e.g.
        on a transient error or a graceful shutdown."""
        now = self._db.now()
        with self._db.write() as conn:
            row = conn.execute(
                select(files.c.job_id, files.c.attempts).where(*_held(file_id, attempt)).with_for_update()
            ).one_or_none()
            if row is None:
                return _replayed(conn, file_id, attempt, FileState.FAILED)
            back = retry and row.attempts < self.max_attempts
            conn.execute(
                update(files)
                .where(files.c.id == file_id)
                .values(
                    **released(FileState.PENDING if back else FileState.FAILED, now),
                    error=reason,
                )
            )
            _refresh_jobs(conn, [row.job_id], now)
            return WriteResult.OK


# ---------------------------------------------------------------------- SQL helpers


def check_max_attempts(max_attempts: int) -> int:
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    return max_attempts


def _check_lease(lease_s: float) -> None:
    if not lease_s > 0:
        raise ValueError(f"lease_s must be positive, got {lease_s}")


def _claimable(state: Any, lease_expires_at: Any, now: datetime) -> ColumnElement[bool]:
    return or_(
        state == FileState.PENDING.value,
        and_(state == FileState.RUNNING.value, lease_expires_at < now),
    )


def _held(file_id: str, attempt: int) -> list[ColumnElement[bool]]:
    """The fence: the file is still running under this claim."""
    return [files.c.id == file_id, files.c.state == FileState.RUNNING.value, files.c.attempts == attempt]


def _why_refused(conn: Connection, file_id: str) -> WriteResult:
    state = conn.execute(select(files.c.state).where(files.c.id == file_id)).scalar_one_or_none()
    return WriteResult.CANCELLED if state == FileState.CANCELLED.value else WriteResult.STALE


def _replayed(conn: Connection, file_id: str, attempt: int, ended: FileState) -> WriteResult:
    """A refused end transition: OK if this very claim already made it (a retried call)."""
    row = conn.execute(select(files.c.state, files.c.attempts).where(files.c.id == file_id)).one_or_none()
    if row is not None and row.state == ended.value and row.attempts == attempt:
        return WriteResult.OK
    return _why_refused(conn, file_id)


def _is_last_window(conn: Connection, file_id: str, count: int, window: Window) -> bool:
    if count == 0:
        return False
    last = conn.execute(
        select(windows.c.start_s, windows.c.end_s).where(
            windows.c.file_id == file_id, windows.c.seq == count - 1
        )
    ).one()
    return abs(last.start_s - window.start_s) <= _EPS_S and abs(last.end_s - window.end_s) <= _EPS_S


def _refresh_jobs(conn: Connection, job_ids: Iterable[str], now: datetime) -> None:
    """Re-derive the state of jobs whose files changed, in this transaction.

    Each job row is locked first (in id order), so two transactions ending a job's last two
    files serialise here and the second one counts the first one's file as ended."""
    for job_id in sorted(set(job_ids)):
        job = conn.execute(
            select(jobs.c.state, jobs.c.started_at).where(jobs.c.id == job_id).with_for_update()
        ).one_or_none()
        if job is None or job.state == JobState.CANCELLED.value:
            continue
        counts = {
            FileState(state): n
            for state, n in conn.execute(
                select(files.c.state, func.count()).where(files.c.job_id == job_id).group_by(files.c.state)
            ).tuples()
        }
        claimed = conn.execute(
            select(exists().where(files.c.job_id == job_id, files.c.attempts > 0))
        ).scalar_one()
        new = derive_job_state(counts, bool(claimed))
        values: dict[str, Any] = {"state": new.value, "updated_at": now}
        if new is not JobState.QUEUED and job.started_at is None:
            values["started_at"] = now
        values["finished_at"] = now if new.terminal else None
        if new.value != job.state or "started_at" in values:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))
