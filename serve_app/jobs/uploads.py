"""The upload registry: stored audio by content (sha256), which keys hold it (``upload_owners``),
when its audio is released, and forgetting uploads no job's file references.

Upload rows are locked in sha order by everyone who changes them (``add``, ``release``,
deletions, and the job store's ``create`` that references them), so a new file never points
at released audio and a deletion never removes a row a job being created needs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from serve_app.jobs.db import Database
from serve_app.jobs.models import Upload
from serve_app.jobs.rows import OPEN
from serve_app.jobs.schema import files, upload_owners, uploads
from serve_app.jobs.usage import check_stored, lock_owner


class UploadStore:
    """Uploads and their owners (``JobStore.uploads``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
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
        may now see and reference it (``has``, ``JobRecords.create``).

        ``max_stored_bytes``: the owner's stored-upload quota, checked in this transaction
        (``QuotaExceeded``; the caller discards its copy).

        ``path`` must be unique per call that creates a row (e.g. ``<sha256>.<random>``): a
        deleted upload's file is removed by its path after the row is gone, and must not be a
        newer upload of the same content."""
        now = self._db.now()
        who = owner or ""
        for attempt in range(2):
            try:
                with self._db.write() as conn:
                    if max_stored_bytes is not None:
                        lock_owner(conn, who)
                        check_stored(conn, who, sha256, size_bytes, max_stored_bytes)
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

    def get(self, sha256: str) -> Upload | None:
        with self._db.read() as conn:
            row = conn.execute(select(uploads).where(uploads.c.sha256 == sha256)).one_or_none()
        return None if row is None else _upload(row)

    def has(self, sha256: str, *, owner: str | None = None) -> bool:
        """The server holds this content's audio (recorded and not released) and ``owner``
        uploaded it (``owner=None``: anyone did; for an admin key or a server without keys)."""
        query = select(uploads.c.sha256).where(uploads.c.sha256 == sha256, uploads.c.released_at.is_(None))
        if owner is not None:
            query = query.where(_owned(uploads.c.sha256, owner))
        with self._db.read() as conn:
            return conn.execute(query).first() is not None

    def release(self, sha256: str) -> str | None:
        """Mark the upload's audio released if no unfinished (pending or running) file needs
        it; its path, for the caller to delete the file, or ``None`` when it is still needed
        or already released. The row stays: finished files keep naming their content.

        The row is locked before the files are looked at, and ``JobRecords.create`` locks the
        rows it references before it checks them, so a new file never points at released
        audio."""
        with self._db.write() as conn:
            row = conn.execute(
                select(uploads.c.path, uploads.c.released_at)
                .where(uploads.c.sha256 == sha256)
                .with_for_update()
            ).one_or_none()
            if row is None or row.released_at is not None:
                return None
            needed = conn.execute(
                select(files.c.id).where(files.c.sha256 == sha256, files.c.state.in_(OPEN)).limit(1)
            ).first()
            if needed is not None:
                return None
            conn.execute(update(uploads).where(uploads.c.sha256 == sha256).values(released_at=self._db.now()))
            # Nobody holds released audio: whoever wants it again uploads it again.
            conn.execute(delete(upload_owners).where(upload_owners.c.sha256 == sha256))
            return str(row.path) or None

    def delete_unreferenced(self, older_than_s: float) -> list[str]:
        """Forget uploads that no job's file needs and that were recorded more than
        ``older_than_s`` ago (uploads a client never attached to a job); their paths, for the
        caller to delete the files. The grace period covers an upload on its way into
        ``JobRecords.create``."""
        cutoff = self._db.now() - timedelta(seconds=older_than_s)
        with self._db.write() as conn:
            shas = conn.execute(
                select(uploads.c.sha256)
                .where(uploads.c.created_at < cutoff, ~_upload_referenced())
                .order_by(uploads.c.sha256)
            ).scalars()
            return delete_unreferenced(conn, list(shas))


# ---------------------------------------------------------------------- SQL helpers


def delete_unreferenced(conn: Connection, shas: Sequence[str]) -> list[str]:
    """Delete the upload rows among ``shas`` that no file references; their (non-empty) paths.

    The rows are locked first: a concurrent ``JobRecords.create`` that references one holds
    its lock until it commits, so we wait and then see its file; one that comes later waits
    for us and then fails with ``UploadMissing``."""
    if not shas:
        return []
    lock_uploads(conn, shas)
    paths = conn.execute(
        delete(uploads).where(uploads.c.sha256.in_(shas), ~_upload_referenced()).returning(uploads.c.path)
    ).scalars()
    return sorted(p for p in paths if p)


def release_unneeded(conn: Connection, shas: Sequence[str], now: datetime) -> list[str]:
    """Release the stored audio among ``shas`` (rows locked by the caller) that no unfinished
    file needs and no key holds as its upload any more, though finished files of other jobs
    still name it; their paths."""
    if not shas:
        return []
    needed = exists().where(files.c.sha256 == uploads.c.sha256, files.c.state.in_(OPEN))
    held = exists().where(upload_owners.c.sha256 == uploads.c.sha256)
    paths = conn.execute(
        update(uploads)
        .where(uploads.c.sha256.in_(shas), uploads.c.released_at.is_(None), ~needed, ~held)
        .values(released_at=now)
        .returning(uploads.c.path)
    ).scalars()
    return sorted(p for p in paths if p)


def lock_uploads(conn: Connection, shas: Sequence[str]) -> None:
    """Lock the upload rows among ``shas``, in sha order (the order every writer locks them)."""
    conn.execute(
        select(uploads.c.sha256)
        .where(uploads.c.sha256.in_(shas))
        .order_by(uploads.c.sha256)
        .with_for_update()
    ).all()


def _upload_referenced() -> ColumnElement[bool]:
    return exists().where(files.c.sha256 == uploads.c.sha256)


def _owned(sha_column: Any, owner: str) -> ColumnElement[bool]:
    return exists().where(upload_owners.c.sha256 == sha_column, upload_owners.c.owner == owner)


def _own(conn: Connection, sha256: str, owner: str, now: datetime) -> None:
    held = conn.execute(
        select(upload_owners.c.sha256).where(upload_owners.c.sha256 == sha256, upload_owners.c.owner == owner)
    ).first()
    if held is None:
        conn.execute(insert(upload_owners).values(sha256=sha256, owner=owner, created_at=now))


def _upload(r: Row[Any]) -> Upload:
    return Upload(
        sha256=r.sha256,
        size_bytes=r.size_bytes,
        path=r.path,
        created_at=r.created_at,
        released_at=r.released_at,
        duration_s=r.duration_s,
    )
