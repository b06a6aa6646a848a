"""The durable store of batch jobs (and, as ``JobStore.history``, transcription history): SQLite or
PostgreSQL, no Ray.

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

Locks are always taken files first, then their job (and jobs in id order), so concurrent
transitions on PostgreSQL never deadlock; the job row is locked before its state is derived so
two files ending at once cannot both see the other still running.

Times come from ``clock`` (UTC), so leases compare against the clock of the process that
writes them: keep hosts' clocks in sync well within a lease. Methods are blocking; call them
from async code through a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

from serve_app.errors import QuotaExceeded
from serve_app.jobs import paging
from serve_app.jobs.db import create_db_engine, new_id, read_tx, utc_now, write_tx
from serve_app.jobs.errors import FileNotFound, JobNotFound, UploadMissing, WindowOutOfOrder
from serve_app.jobs.history import HistoryStore
from serve_app.jobs.migrate import upgrade
from serve_app.jobs.models import (
    Claim,
    CreatedJob,
    DeletedJob,
    FileTranscript,
    Job,
    JobFile,
    JobOptions,
    JobQuota,
    NewFile,
    OwnerUsage,
    Page,
    SegmentJson,
    Upload,
    Usage,
    Window,
    WriteResult,
)
from serve_app.jobs.paging import check_limit, older_than, owned_by
from serve_app.jobs.schema import files, idempotency_keys, jobs, upload_owners, uploads, windows
from serve_app.jobs.schema import history as history_rows
from serve_app.jobs.states import FileState, JobState, derive_job_state

Clock = Callable[[], datetime]

_EPS_S = 1e-6
"""Tolerance when matching a window's start with the committed progress (seconds)."""
_OPEN = (FileState.PENDING.value, FileState.RUNNING.value)
_LIVE_JOB = (JobState.QUEUED.value, JobState.RUNNING.value)
_CREATE_RETRIES = 3


class JobStore:
    """Jobs, their files and committed windows, uploads and history in one database.

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
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._owns_engine = not isinstance(target, Engine)
        self.engine = target if isinstance(target, Engine) else create_db_engine(target)
        self._clock = clock
        self.max_attempts = max_attempts
        """Claims a file gets in all (its worker died or it was handed back) before it fails."""
        self.idempotency_ttl = timedelta(seconds=idempotency_ttl_s)
        self.history = HistoryStore(self.engine, self._now)
        """Single transcriptions kept for the user (same database)."""

    @classmethod
    def open(cls, target: str | Path | URL | Engine, **kwargs: Any) -> JobStore:
        """Migrate the database to the current schema, then open the store on it."""
        store = cls(target, **kwargs)
        upgrade(store.engine)
        return store

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return aware UTC datetimes")
        return now.astimezone(UTC)

    def _write(self) -> AbstractContextManager[Connection]:
        return write_tx(self.engine)

    def _read(self) -> AbstractContextManager[Connection]:
        return read_tx(self.engine)

    # ------------------------------------------------------------------ uploads

    def add_upload(
        self,
        sha256: str,
        size_bytes: int,
        path: str,
        *,
        owner: str | None = None,
        duration_s: float | None = None,
        max_stored_bytes: int | None = None,
    ) -> tuple[Upload, bool]:
        """Record a stored blob for ``owner`` (an API key's label; ``None`` on a server without
        keys); ``(upload, created)``. If the content is already stored, the existing row is
        returned with ``created=False`` and the caller discards its copy; either way ``owner``
        may now see and reference it (``has_upload``, ``create_job``).

        ``max_stored_bytes``: the owner's stored-upload quota, checked in this transaction
        (``QuotaExceeded``; the caller discards its copy).

        ``path`` must be unique per call that creates a row (e.g. ``<sha256>.<random>``): a
        deleted upload's file is removed by its path after the row is gone, and must not be a
        newer upload of the same content."""
        now = self._now()
        who = owner or ""
        for attempt in range(2):
            try:
                with self._write() as conn:
                    if max_stored_bytes is not None:
                        _lock_owner(conn, who)
                        _check_stored(conn, who, sha256, size_bytes, max_stored_bytes)
                    row = conn.execute(
                        select(uploads).where(uploads.c.sha256 == sha256).with_for_update()
                    ).one_or_none()
                    if row is not None and row.released_at is not None:
                        # Its audio was released (or it never had stored audio): this copy
                        # becomes the stored one.
                        known = duration_s if duration_s is not None else row.duration_s
                        conn.execute(
                            update(uploads)
                            .where(uploads.c.sha256 == sha256)
                            .values(path=path, size_bytes=size_bytes, released_at=None, duration_s=known)
                        )
                        result = Upload(sha256, size_bytes, path, row.created_at, None, known), True
                    elif row is not None:
                        if row.duration_s is None and duration_s is not None:
                            conn.execute(
                                update(uploads)
                                .where(uploads.c.sha256 == sha256)
                                .values(duration_s=duration_s)
                            )
                        result = _upload(row), False
                    else:
                        conn.execute(
                            insert(uploads).values(
                                sha256=sha256,
                                size_bytes=size_bytes,
                                path=path,
                                created_at=now,
                                duration_s=duration_s,
                            )
                        )
                        result = Upload(sha256, size_bytes, path, now, None, duration_s), True
                    _own(conn, sha256, who, now)
                    return result
            except IntegrityError:
                # Another process recorded the same content (or ownership) between our read
                # and insert: the second pass sees its row.
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get_upload(self, sha256: str) -> Upload | None:
        with self._read() as conn:
            row = conn.execute(select(uploads).where(uploads.c.sha256 == sha256)).one_or_none()
        return None if row is None else _upload(row)

    def has_upload(self, sha256: str, *, owner: str | None = None) -> bool:
        """The server holds this content's audio (recorded and not released) and ``owner``
        uploaded it (``owner=None``: anyone did; for an admin key or a server without keys)."""
        query = select(uploads.c.sha256).where(uploads.c.sha256 == sha256, uploads.c.released_at.is_(None))
        if owner is not None:
            query = query.where(_owned(uploads.c.sha256, owner))
        with self._read() as conn:
            return conn.execute(query).first() is not None

    def release_upload(self, sha256: str) -> str | None:
        """Mark the upload's audio released if no unfinished (pending or running) file needs
        it; its path, for the caller to delete the file, or ``None`` when it is still needed
        or already released. The row stays: finished files keep naming their content.

        The row is locked before the files are looked at, and ``create_job`` locks the rows it
        references before it checks them, so a new file never points at released audio."""
        with self._write() as conn:
            row = conn.execute(
                select(uploads.c.path, uploads.c.released_at)
                .where(uploads.c.sha256 == sha256)
                .with_for_update()
            ).one_or_none()
            if row is None or row.released_at is not None:
                return None
            needed = conn.execute(
                select(files.c.id).where(files.c.sha256 == sha256, files.c.state.in_(_OPEN)).limit(1)
            ).first()
            if needed is not None:
                return None
            conn.execute(update(uploads).where(uploads.c.sha256 == sha256).values(released_at=self._now()))
            # Nobody holds released audio: whoever wants it again uploads it again.
            conn.execute(delete(upload_owners).where(upload_owners.c.sha256 == sha256))
            return str(row.path) or None

    def delete_unreferenced_uploads(self, older_than_s: float) -> list[str]:
        """Forget uploads that no job's file needs and that were recorded more than
        ``older_than_s`` ago (uploads a client never attached to a job); their paths, for the
        caller to delete the files. The grace period covers an upload on its way into
        ``create_job``."""
        cutoff = self._now() - timedelta(seconds=older_than_s)
        with self._write() as conn:
            shas = conn.execute(
                select(uploads.c.sha256)
                .where(uploads.c.created_at < cutoff, ~_upload_referenced())
                .order_by(uploads.c.sha256)
            ).scalars()
            return _delete_unreferenced(conn, list(shas))

    def owner_usage(self, owner: str | None) -> OwnerUsage:
        """What ``owner`` holds now: live jobs, queued audio, stored upload bytes."""
        who = owner or ""
        with self._read() as conn:
            live = conn.execute(
                select(func.count()).where(_owner_is(jobs.c.owner, who), jobs.c.state.in_(_LIVE_JOB))
            ).scalar_one()
            return OwnerUsage(
                live_jobs=int(live),
                queued_audio_s=_queued_audio_s(conn, who),
                stored_bytes=_stored_bytes(conn, who),
            )

    # ------------------------------------------------------------------ jobs

    def create_job(
        self,
        new_files: Sequence[NewFile],
        options: JobOptions,
        *,
        metadata: Mapping[str, Any] | None = None,
        owner: str | None = None,
        idempotency_key: str | None = None,
        uploads_of: str | None = None,
        quota: JobQuota | None = None,
    ) -> CreatedJob:
        """A new ``queued`` job over uploads already recorded (``UploadMissing`` otherwise) and
        input-folder files (``NewFile.source_path``).

        ``uploads_of``: whose uploads the files may name (the caller's key's label; ``None``:
        anyone's, for an admin key or a server without keys): content stored for someone else
        is ``UploadMissing``, as if it were not there. The upload rows are locked until the job
        is committed, so a concurrent ``release_upload`` cannot release audio a new file needs.

        ``quota``: ``owner``'s limits, checked in this transaction (``QuotaExceeded``); on
        PostgreSQL creates of one owner serialise on an advisory lock, so the limits are exact
        across processes.

        With ``idempotency_key``: if the same owner created a job with this key less than
        ``idempotency_ttl_s`` ago, that job is returned (``created=False``) and the arguments
        of this call are ignored, also when two calls race (the key is a primary key; the
        loser of the insert reads the winner's job). A deleted job frees its key."""
        if not new_files:
            raise ValueError("a job needs at least one file")
        if owner == "":
            raise ValueError("owner is a non-empty label or None")
        if any(f.source_path is not None and f.size_bytes is None for f in new_files):
            raise ValueError("an input-folder file needs its size")
        for attempt in range(1, _CREATE_RETRIES + 1):
            try:
                with self._write() as conn:
                    return self._create_job(
                        conn, new_files, options, metadata, owner, idempotency_key, uploads_of, quota
                    )
            except IntegrityError:
                # A concurrent create took the key (or an upload vanished): look again, in a new
                # transaction that sees the winner's job (or reports the missing upload).
                if attempt == _CREATE_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def _create_job(
        self,
        conn: Connection,
        new_files: Sequence[NewFile],
        options: JobOptions,
        metadata: Mapping[str, Any] | None,
        owner: str | None,
        key: str | None,
        uploads_of: str | None,
        quota: JobQuota | None,
    ) -> CreatedJob:
        now = self._now()
        scope = owner or ""
        if key is not None:
            key_match = and_(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)
            conn.execute(delete(idempotency_keys).where(key_match, idempotency_keys.c.expires_at <= now))
            earlier = conn.execute(select(idempotency_keys.c.job_id).where(key_match)).scalar_one_or_none()
            if earlier is not None:
                return CreatedJob(self._job(conn, earlier, None), created=False)
        if quota is not None:
            _lock_owner(conn, scope)

        # Input-folder files name their content by a row with no stored audio (created
        # released), never by a path another key's upload could come to use.
        in_place = {f.sha256: f for f in new_files if f.source_path is not None}
        for sha, f in sorted(in_place.items()):
            if conn.execute(select(uploads.c.sha256).where(uploads.c.sha256 == sha)).first() is None:
                conn.execute(
                    insert(uploads).values(
                        sha256=sha,
                        size_bytes=f.size_bytes,
                        path="",
                        created_at=now,
                        released_at=now,
                        duration_s=f.duration_s,
                    )
                )
        stored = sorted({f.sha256 for f in new_files if f.source_path is None})
        # Locked in sha order (as release_upload and deletions lock them) and then checked.
        rows = {
            r.sha256: r
            for r in conn.execute(
                select(uploads.c.sha256, uploads.c.size_bytes, uploads.c.released_at, uploads.c.duration_s)
                .where(uploads.c.sha256.in_(sorted(set(stored) | set(in_place))))
                .order_by(uploads.c.sha256)
                .with_for_update()
            )
        }
        visible = set(stored)
        if uploads_of is not None and stored:
            visible = set(
                conn.execute(
                    select(upload_owners.c.sha256).where(
                        upload_owners.c.sha256.in_(stored), upload_owners.c.owner == uploads_of
                    )
                ).scalars()
            )
        missing = [s for s in stored if s not in rows or rows[s].released_at is not None or s not in visible]
        if missing:
            raise UploadMissing(f"no stored upload with sha256 {', '.join(missing)}")

        def duration(f: NewFile) -> float | None:
            return f.duration_s if f.duration_s is not None else rows[f.sha256].duration_s

        def size(f: NewFile) -> int:
            return int(
                f.size_bytes
                if f.source_path is not None and f.size_bytes is not None
                else rows[f.sha256].size_bytes
            )

        if quota is not None:
            _check_job_quota(conn, scope, quota, sum(duration(f) or 0.0 for f in new_files))

        job_id = new_id()
        conn.execute(
            insert(jobs).values(
                id=job_id,
                state=JobState.QUEUED.value,
                options=options.to_json(),
                user_metadata=dict(metadata) if metadata is not None else None,
                owner=owner,
                idempotency_key=key,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            insert(files),
            [
                {
                    "id": new_id(),
                    "job_id": job_id,
                    "position": i,
                    "name": f.name,
                    "sha256": f.sha256,
                    "size_bytes": size(f),
                    "duration_s": duration(f),
                    "source_path": f.source_path,
                    "state": FileState.PENDING.value,
                    "attempts": 0,
                    "progress_s": 0.0,
                    "windows": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for i, f in enumerate(new_files)
            ],
        )
        if key is not None:
            conn.execute(
                insert(idempotency_keys).values(
                    scope=scope, key=key, job_id=job_id, expires_at=now + self.idempotency_ttl
                )
            )
        return CreatedJob(self._job(conn, job_id, None), created=True)

    def get_job(self, job_id: str, *, owner: str | None = None) -> Job:
        """The job with its counts; ``JobNotFound`` if missing or not ``owner``'s (``owner=None``
        does not filter)."""
        with self._read() as conn:
            return self._job(conn, job_id, owner)

    def _job(self, conn: Connection, job_id: str, owner: str | None) -> Job:
        row = conn.execute(select(jobs).where(jobs.c.id == job_id, *owned_by(jobs, owner))).one_or_none()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return _with_counts(conn, [row])[0]

    def list_jobs(
        self,
        *,
        owner: str | None = None,
        state: JobState | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Page[Job]:
        """Jobs newest first, keyset-paged (an opaque ``cursor`` from the previous page)."""
        query = select(jobs).where(*owned_by(jobs, owner))
        if state is not None:
            query = query.where(jobs.c.state == state.value)
        if cursor is not None:
            at, last_id = paging.decode("jobs", cursor, (datetime, str))
            query = query.where(older_than(jobs, at, last_id))
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(check_limit(limit) + 1)
        with self._read() as conn:
            rows = list(conn.execute(query))
            items = _with_counts(conn, rows[:limit])
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = paging.encode("jobs", last.created_at, last.id)
        return Page(items, next_cursor)

    def usage(self, since: datetime) -> Usage:
        """Audio transcribed since ``since`` (history entries and committed job windows, of
        every owner; deleted ones no longer count) and the files queued or running now."""
        with self._read() as conn:
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
                    select(files.c.state, func.count())
                    .where(files.c.state.in_(_OPEN))
                    .group_by(files.c.state)
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

    def cancel_job(self, job_id: str, *, owner: str | None = None) -> Job:
        """Cancel a job that has not ended: its pending and running files become ``cancelled``
        (no worker claims them again; one holding a file learns it from its next write, which
        answers ``CANCELLED``); windows and done files are kept. A job that already ended is
        returned unchanged. Idempotent."""
        now = self._now()
        with self._write() as conn:
            job = self._job(conn, job_id, owner)
            if job.state.terminal:
                return job
            # Files first, then the job: the lock order every transition uses.
            conn.execute(
                select(files.c.id)
                .where(files.c.job_id == job_id, files.c.state.in_(_OPEN))
                .order_by(files.c.id)
                .with_for_update()
            ).all()
            conn.execute(
                update(files)
                .where(files.c.job_id == job_id, files.c.state.in_(_OPEN))
                .values(
                    **_released(FileState.CANCELLED, now),
                )
            )
            # Conditional: a job whose last file ended meanwhile stays completed/failed.
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state.in_(_LIVE_JOB))
                .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now)
            )
            return self._job(conn, job_id, None)

    def delete_job(self, job_id: str, *, owner: str | None = None) -> DeletedJob:
        """Delete a job, its files, windows and idempotency key, whatever its state (a worker
        still holding one of its files gets ``STALE`` on its next write). Uploads no other job
        needs are forgotten too; their paths are returned for the caller to delete the files."""
        with self._write() as conn:
            self._job(conn, job_id, owner)
            return _delete_job(conn, job_id, self._now())

    def purge_jobs(self, older_than_s: float, *, owner: str | None = None) -> list[DeletedJob]:
        """Retention: delete jobs that ended more than ``older_than_s`` ago (see ``delete_job``)."""
        cutoff = self._now() - timedelta(seconds=older_than_s)
        with self._read() as conn:
            ids = conn.execute(
                select(jobs.c.id)
                .where(jobs.c.finished_at < cutoff, *owned_by(jobs, owner))
                .order_by(jobs.c.id)
            ).scalars()
            ids_list = list(ids)
        out = []
        for job_id in ids_list:
            with self._write() as conn:
                out.append(_delete_job(conn, job_id, self._now()))
        return out

    # ------------------------------------------------------------------ files

    def get_file(self, file_id: str, *, owner: str | None = None) -> JobFile:
        with self._read() as conn:
            return _get_file(conn, file_id, owner)

    def list_files(
        self,
        job_id: str,
        *,
        owner: str | None = None,
        state: FileState | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[JobFile]:
        """A job's files in their order, optionally of one state, keyset-paged."""
        query = select(files).where(files.c.job_id == job_id)
        if state is not None:
            query = query.where(files.c.state == state.value)
        if cursor is not None:
            (after,) = paging.decode(f"files:{job_id}", cursor, (int,))
            query = query.where(files.c.position > after)
        query = query.order_by(files.c.position).limit(check_limit(limit) + 1)
        with self._read() as conn:
            self._job(conn, job_id, owner)
            rows = list(conn.execute(query))
        items = [_file(r) for r in rows[:limit]]
        next_cursor = paging.encode(f"files:{job_id}", items[-1].position) if len(rows) > limit else None
        return Page(items, next_cursor)

    def get_transcript(self, file_id: str, *, owner: str | None = None) -> FileTranscript:
        """The file's committed windows concatenated (all of it once the file is done)."""
        with self._read() as conn:
            f = _get_file(conn, file_id, owner)
            rows = list(
                conn.execute(
                    select(windows.c.end_s, windows.c.language, windows.c.segments)
                    .where(windows.c.file_id == file_id)
                    .order_by(windows.c.seq)
                )
            )
        segments: list[SegmentJson] = [s for r in rows for s in r.segments]
        language = next((r.language for r in rows if r.language), None)
        covered = rows[-1].end_s if rows else 0.0
        return FileTranscript(file=f, language=language, segments=segments, covered_s=covered)

    # ------------------------------------------------------------------ queue

    def claim(self, worker_id: str, lease_s: float) -> Claim | None:
        """Take the next file (see the module docstring for which) for ``lease_s`` seconds, or
        ``None`` when there is nothing to do. The claim's ``attempt`` fences later writes."""
        _check_lease(lease_s)
        now = self._now()
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
                jobs.c.state.in_(_LIVE_JOB),
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
        with self._write() as conn:
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
            file=_file(row),
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
        with self._write() as conn:
            job_ids = conn.execute(
                update(files)
                .where(files.c.id.in_(doomed))
                .values(
                    **_released(FileState.FAILED, now),
                    error=f"its worker stopped renewing the lease on all {self.max_attempts} attempts",
                )
                .returning(files.c.job_id)
            ).scalars()
            _refresh_jobs(conn, job_ids, now)

    def renew(self, file_id: str, worker_id: str, attempt: int, lease_s: float) -> WriteResult:
        """Extend the lease of a claim this worker still holds."""
        _check_lease(lease_s)
        now = self._now()
        with self._write() as conn:
            done = conn.execute(
                update(files)
                .where(*_held(file_id, attempt), files.c.lease_owner == worker_id)
                .values(lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
            ).rowcount
            return WriteResult.OK if done else _why_refused(conn, file_id)

    def set_duration(self, file_id: str, attempt: int, duration_s: float) -> WriteResult:
        """Record the file's audio duration once the worker has probed it (for totals/ETA)."""
        now = self._now()
        with self._write() as conn:
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
        now = self._now()
        with self._write() as conn:
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
        now = self._now()
        with self._write() as conn:
            job_id = conn.execute(
                update(files)
                .where(*_held(file_id, attempt))
                .values(
                    **_released(FileState.DONE, now),
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
        now = self._now()
        with self._write() as conn:
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
                    **_released(FileState.PENDING if back else FileState.FAILED, now),
                    error=reason,
                )
            )
            _refresh_jobs(conn, [row.job_id], now)
            return WriteResult.OK


# ---------------------------------------------------------------------- SQL helpers


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


def _with_counts(conn: Connection, rows: Sequence[Row[Any]]) -> list[Job]:
    """Jobs from rows, with file counts and audio totals from one grouped query."""
    ids = [r.id for r in rows]
    per_job: dict[str, dict[str, Any]] = {
        i: {"counts": dict.fromkeys(FileState, 0), "total": 0.0, "done": 0.0, "unknown": 0} for i in ids
    }
    if ids:
        done_s = case(
            (files.c.state == FileState.DONE.value, func.coalesce(files.c.duration_s, files.c.progress_s)),
            else_=files.c.progress_s,
        )
        unknown = case((files.c.duration_s.is_(None), 1), else_=0)
        agg = conn.execute(
            select(
                files.c.job_id,
                files.c.state,
                func.count(),
                func.coalesce(func.sum(files.c.duration_s), 0.0),
                func.sum(done_s),
                func.sum(unknown),
            )
            .where(files.c.job_id.in_(ids))
            .group_by(files.c.job_id, files.c.state)
        ).tuples()
        for job_id, state, n, total, done, unk in agg:
            acc = per_job[job_id]
            acc["counts"][FileState(state)] = int(n)
            acc["total"] += float(total)
            acc["done"] += float(done or 0.0)
            acc["unknown"] += int(unk or 0)
    out = []
    for r in rows:
        acc = per_job[r.id]
        out.append(
            Job(
                id=r.id,
                state=JobState(r.state),
                options=JobOptions.from_json(r.options),
                metadata=r.user_metadata,
                owner=r.owner,
                idempotency_key=r.idempotency_key,
                created_at=r.created_at,
                updated_at=r.updated_at,
                started_at=r.started_at,
                finished_at=r.finished_at,
                counts=acc["counts"],
                audio_total_s=acc["total"],
                audio_done_s=acc["done"],
                durations_known=acc["unknown"] == 0,
            )
        )
    return out


def _upload_referenced() -> ColumnElement[bool]:
    return exists().where(files.c.sha256 == uploads.c.sha256)


def _delete_unreferenced(conn: Connection, shas: Sequence[str]) -> list[str]:
    """Delete the upload rows among ``shas`` that no file references; their (non-empty) paths.

    The rows are locked first: a concurrent ``create_job`` that references one holds its lock
    until it commits, so we wait and then see its file; one that comes later waits for us and
    then fails with ``UploadMissing``."""
    if not shas:
        return []
    conn.execute(
        select(uploads.c.sha256)
        .where(uploads.c.sha256.in_(shas))
        .order_by(uploads.c.sha256)
        .with_for_update()
    ).all()
    paths = conn.execute(
        delete(uploads).where(uploads.c.sha256.in_(shas), ~_upload_referenced()).returning(uploads.c.path)
    ).scalars()
    return sorted(p for p in paths if p)


def _release_unneeded(conn: Connection, shas: Sequence[str], now: datetime) -> list[str]:
    """Release the stored audio among ``shas`` (rows locked by the caller) that no unfinished
    file needs and no key holds as its upload any more, though finished files of other jobs
    still name it; their paths."""
    if not shas:
        return []
    needed = exists().where(files.c.sha256 == uploads.c.sha256, files.c.state.in_(_OPEN))
    held = exists().where(upload_owners.c.sha256 == uploads.c.sha256)
    paths = conn.execute(
        update(uploads)
        .where(uploads.c.sha256.in_(shas), uploads.c.released_at.is_(None), ~needed, ~held)
        .values(released_at=now)
        .returning(uploads.c.path)
    ).scalars()
    return sorted(p for p in paths if p)


def _delete_job(conn: Connection, job_id: str, now: datetime) -> DeletedJob:
    """Delete a job. Its owner's hold on the job's uploads ends with it; their audio goes too
    unless an unfinished file (of any job) still needs it or another key holds it as its own
    upload: another key's finished file naming the same content does not keep it."""
    # Files first, then the job (the cascade would otherwise lock them after the job row).
    shas = sorted(
        set(
            conn.execute(
                select(files.c.sha256).where(files.c.job_id == job_id).order_by(files.c.id).with_for_update()
            ).scalars()
        )
    )
    owner = conn.execute(select(jobs.c.owner).where(jobs.c.id == job_id)).scalar_one()
    conn.execute(delete(jobs).where(jobs.c.id == job_id))
    if shas:
        # Upload rows locked (sha order) before their holders change, as create_job locks them.
        conn.execute(
            select(uploads.c.sha256)
            .where(uploads.c.sha256.in_(shas))
            .order_by(uploads.c.sha256)
            .with_for_update()
        ).all()
        conn.execute(
            delete(upload_owners).where(
                upload_owners.c.sha256.in_(shas), upload_owners.c.owner == (owner or "")
            )
        )
    unheld = [
        sha
        for sha in shas
        if conn.execute(select(upload_owners.c.sha256).where(upload_owners.c.sha256 == sha)).first() is None
    ]
    gone = _delete_unreferenced(conn, unheld)
    return DeletedJob(job_id, sorted(gone + _release_unneeded(conn, shas, now)))


def _lock_owner(conn: Connection, owner: str) -> None:
    """Serialise quota checks of one owner across processes (PostgreSQL: a transaction-scoped
    advisory lock; SQLite's write transactions are serial already)."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"funasr-serve owner:{owner}".encode()).digest()
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": int.from_bytes(digest[:8], "big", signed=True)}
        )


def _owner_is(column: Any, owner: str) -> ColumnElement[bool]:
    """Rows of ``owner`` ('' is a server without API keys, stored as NULL on jobs)."""
    return column.is_(None) if owner == "" else column == owner


def _owned(sha_column: Any, owner: str) -> ColumnElement[bool]:
    return exists().where(upload_owners.c.sha256 == sha_column, upload_owners.c.owner == owner)


def _own(conn: Connection, sha256: str, owner: str, now: datetime) -> None:
    held = conn.execute(
        select(upload_owners.c.sha256).where(upload_owners.c.sha256 == sha256, upload_owners.c.owner == owner)
    ).first()
    if held is None:
        conn.execute(insert(upload_owners).values(sha256=sha256, owner=owner, created_at=now))


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
        .where(_owner_is(jobs.c.owner, owner), files.c.state.in_(_OPEN), files.c.duration_s.is_not(None))
    ).scalar_one()
    return max(float(total), 0.0)


def _check_stored(conn: Connection, owner: str, sha256: str, size_bytes: int, limit: int) -> None:
    used = _stored_bytes(conn, owner, excluding=sha256)
    if used + size_bytes > limit:
        raise QuotaExceeded(
            f"quota stored_upload_gb exceeded: this key stores {used / 1e9:.2f} GB of uploads and "
            f"{size_bytes / 1e9:.2f} GB more would pass its {limit / 1e9:.2f} GB; delete finished jobs "
            "(their audio goes) or wait for running ones"
        )


def _check_job_quota(conn: Connection, owner: str, quota: JobQuota, new_audio_s: float) -> None:
    if quota.max_live_jobs is not None:
        live = conn.execute(
            select(func.count()).where(_owner_is(jobs.c.owner, owner), jobs.c.state.in_(_LIVE_JOB))
        ).scalar_one()
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


def _get_file(conn: Connection, file_id: str, owner: str | None) -> JobFile:
    query = select(files).where(files.c.id == file_id)
    if owner is not None:
        query = query.join(jobs, jobs.c.id == files.c.job_id).where(jobs.c.owner == owner)
    row = conn.execute(query).one_or_none()
    if row is None:
        raise FileNotFound(f"no file {file_id!r}")
    return _file(row)


def _file(r: Row[Any]) -> JobFile:
    return JobFile(
        id=r.id,
        job_id=r.job_id,
        position=r.position,
        name=r.name,
        sha256=r.sha256,
        size_bytes=r.size_bytes,
        duration_s=r.duration_s,
        state=FileState(r.state),
        error=r.error,
        attempts=r.attempts,
        lease_owner=r.lease_owner,
        lease_expires_at=r.lease_expires_at,
        progress_s=r.progress_s,
        windows=r.windows,
        created_at=r.created_at,
        updated_at=r.updated_at,
        finished_at=r.finished_at,
        source_path=r.source_path,
    )


def _upload(r: Row[Any]) -> Upload:
    return Upload(
        sha256=r.sha256,
        size_bytes=r.size_bytes,
        path=r.path,
        created_at=r.created_at,
        released_at=r.released_at,
        duration_s=r.duration_s,
    )


def _released(state: FileState, now: datetime) -> dict[str, Any]:
    """The columns of a file whose claim ends in ``state``: no lease, and finished unless it
    goes back to pending."""
    return {
        "state": state.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": None if state is FileState.PENDING else now,
        "updated_at": now,
    }
