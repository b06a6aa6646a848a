"""Jobs and their files: create (with idempotency keys and owner quotas), get, list, cancel,
delete and purge jobs; a job's files and their transcripts (the windows committed so far).

Creating a job locks the upload rows it references (sha order) before it checks them; deleting
one locks its files, then the job, then the uploads: the lock order of ``serve_app.jobs.store``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from serve_app.jobs import paging
from serve_app.jobs.db import Database, new_id
from serve_app.jobs.errors import FileNotFound, JobNotFound, UploadMissing
from serve_app.jobs.models import (
    CreatedJob,
    DeletedJob,
    FileTranscript,
    Job,
    JobFile,
    JobOptions,
    JobQuota,
    NewFile,
    Page,
    SegmentJson,
)
from serve_app.jobs.paging import check_limit, newest_first, next_cursor, owned_by
from serve_app.jobs.rows import LIVE_JOB, OPEN, file_of, released
from serve_app.jobs.schema import files, idempotency_keys, jobs, upload_owners, uploads, windows
from serve_app.jobs.states import FileState, JobState
from serve_app.jobs.uploads import delete_unreferenced, lock_uploads, release_unneeded
from serve_app.jobs.usage import check_job_quota, lock_owner

_CREATE_RETRIES = 3


class JobRecords:
    """Jobs, their files and transcripts (``JobStore.jobs``). ``owner=None`` in a query does
    not filter (an admin key or a server without keys)."""

    def __init__(self, db: Database, *, idempotency_ttl_s: float = 24 * 3600.0) -> None:
        self._db = db
        self.idempotency_ttl = timedelta(seconds=idempotency_ttl_s)

    def create(
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
        is committed, so a concurrent ``UploadStore.release`` cannot release audio a new file
        needs.

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
                with self._db.write() as conn:
                    return self._create(
                        conn, new_files, options, metadata, owner, idempotency_key, uploads_of, quota
                    )
            except IntegrityError:
                # A concurrent create took the key (or an upload vanished): look again, in a new
                # transaction that sees the winner's job (or reports the missing upload).
                if attempt == _CREATE_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def _create(
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
        now = self._db.now()
        scope = owner or ""
        if key is not None:
            key_match = and_(idempotency_keys.c.scope == scope, idempotency_keys.c.key == key)
            conn.execute(delete(idempotency_keys).where(key_match, idempotency_keys.c.expires_at <= now))
            earlier = conn.execute(select(idempotency_keys.c.job_id).where(key_match)).scalar_one_or_none()
            if earlier is not None:
                return CreatedJob(self._job(conn, earlier, None), created=False)
        if quota is not None:
            lock_owner(conn, scope)

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
        # Locked in sha order (as UploadStore.release and deletions lock them) and then checked.
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
            check_job_quota(conn, scope, quota, sum(duration(f) or 0.0 for f in new_files))

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

    def get(self, job_id: str, *, owner: str | None = None) -> Job:
        """The job with its counts; ``JobNotFound`` if missing or not ``owner``'s (``owner=None``
        does not filter)."""
        with self._db.read() as conn:
            return self._job(conn, job_id, owner)

    def _job(self, conn: Connection, job_id: str, owner: str | None) -> Job:
        row = conn.execute(select(jobs).where(jobs.c.id == job_id, *owned_by(jobs, owner))).one_or_none()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return _with_counts(conn, [row])[0]

    def find(
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
        with self._db.read() as conn:
            rows = list(conn.execute(newest_first(query, jobs, "jobs", cursor, limit)))
            items = _with_counts(conn, rows[:limit])
        return Page(items, next_cursor("jobs", rows, limit, "created_at", "id"))

    def cancel(self, job_id: str, *, owner: str | None = None) -> Job:
        """Cancel a job that has not ended: its pending and running files become ``cancelled``
        (no worker claims them again; one holding a file learns it from its next write, which
        answers ``CANCELLED``); windows and done files are kept. A job that already ended is
        returned unchanged. Idempotent."""
        now = self._db.now()
        with self._db.write() as conn:
            job = self._job(conn, job_id, owner)
            if job.state.terminal:
                return job
            # Files first, then the job: the lock order every transition uses.
            conn.execute(
                select(files.c.id)
                .where(files.c.job_id == job_id, files.c.state.in_(OPEN))
                .order_by(files.c.id)
                .with_for_update()
            ).all()
            conn.execute(
                update(files)
                .where(files.c.job_id == job_id, files.c.state.in_(OPEN))
                .values(
                    **released(FileState.CANCELLED, now),
                )
            )
            # Conditional: a job whose last file ended meanwhile stays completed/failed.
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state.in_(LIVE_JOB))
                .values(state=JobState.CANCELLED.value, finished_at=now, updated_at=now)
            )
            return self._job(conn, job_id, None)

    def delete(self, job_id: str, *, owner: str | None = None) -> DeletedJob:
        """Delete a job, its files, windows and idempotency key, whatever its state (a worker
        still holding one of its files gets ``STALE`` on its next write). Uploads no other job
        needs are forgotten too; their paths are returned for the caller to delete the files."""
        with self._db.write() as conn:
            self._job(conn, job_id, owner)
            return _delete_job(conn, job_id, self._db.now())

    def purge(self, older_than_s: float, *, owner: str | None = None) -> list[DeletedJob]:
        """Retention: delete jobs that ended more than ``older_than_s`` ago (see ``delete``)."""
        cutoff = self._db.now() - timedelta(seconds=older_than_s)
        with self._db.read() as conn:
            ids = conn.execute(
                select(jobs.c.id)
                .where(jobs.c.finished_at < cutoff, *owned_by(jobs, owner))
                .order_by(jobs.c.id)
            ).scalars()
            ids_list = list(ids)
        out = []
        for job_id in ids_list:
            with self._db.write() as conn:
                out.append(_delete_job(conn, job_id, self._db.now()))
        return out

    # ------------------------------------------------------------------ files

    def get_file(self, file_id: str, *, owner: str | None = None) -> JobFile:
        with self._db.read() as conn:
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
        kind = f"files:{job_id}"
        query = select(files).where(files.c.job_id == job_id)
        if state is not None:
            query = query.where(files.c.state == state.value)
        if cursor is not None:
            (after,) = paging.decode(kind, cursor, (int,))
            query = query.where(files.c.position > after)
        query = query.order_by(files.c.position).limit(check_limit(limit) + 1)
        with self._db.read() as conn:
            self._job(conn, job_id, owner)
            rows = list(conn.execute(query))
        return Page([file_of(r) for r in rows[:limit]], next_cursor(kind, rows, limit, "position"))

    def get_transcript(self, file_id: str, *, owner: str | None = None) -> FileTranscript:
        """The file's committed windows concatenated (all of it once the file is done)."""
        with self._db.read() as conn:
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


# ---------------------------------------------------------------------- SQL helpers


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
        # Upload rows locked (sha order) before their holders change, as create locks them.
        lock_uploads(conn, shas)
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
    gone = delete_unreferenced(conn, unheld)
    return DeletedJob(job_id, sorted(gone + release_unneeded(conn, shas, now)))


def _get_file(conn: Connection, file_id: str, owner: str | None) -> JobFile:
    query = select(files).where(files.c.id == file_id)
    if owner is not None:
        query = query.join(jobs, jobs.c.id == files.c.job_id).where(jobs.c.owner == owner)
    row = conn.execute(query).one_or_none()
    if row is None:
        raise FileNotFound(f"no file {file_id!r}")
    return file_of(row)
