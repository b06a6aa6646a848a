"""History of single (non-batch) transcriptions: add, find again by text, delete, expire.

Text search is a case-insensitive substring match that behaves the same on both databases:
the text is case-folded in Python when stored (``search_text``) and so is the query, then
matched with ``LIKE`` (wildcards in the query escaped). It scans the owner's rows; a large
deployment would add a trigram index on PostgreSQL (``pg_trgm``) in a later migration."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, delete, insert, select

from serve_app.jobs.db import Database, new_id
from serve_app.jobs.errors import HistoryNotFound
from serve_app.jobs.models import HistoryEntry, Page, SegmentJson
from serve_app.jobs.paging import newest_first, next_cursor, owned_by
from serve_app.jobs.schema import history


class HistoryStore:
    """History entries in the job store's database (``JobStore.history``). ``owner=None`` in
    a query does not filter."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        *,
        text: str,
        segments: Sequence[SegmentJson] = (),
        owner: str | None = None,
        source_name: str | None = None,
        duration_s: float | None = None,
        language: str | None = None,
        model: str | None = None,
    ) -> HistoryEntry:
        entry = HistoryEntry(
            id=new_id(),
            created_at=self._db.now(),
            owner=owner,
            source_name=source_name,
            duration_s=duration_s,
            language=language,
            model=model,
            text=text,
            segments=list(segments),
        )
        with self._db.write() as conn:
            conn.execute(
                insert(history).values(
                    id=entry.id,
                    created_at=entry.created_at,
                    owner=owner,
                    source_name=source_name,
                    duration_s=duration_s,
                    language=language,
                    model=model,
                    text=text,
                    search_text=text.casefold(),
                    segments=entry.segments,
                )
            )
        return entry

    def get(self, entry_id: str, *, owner: str | None = None) -> HistoryEntry:
        with self._db.read() as conn:
            row = conn.execute(
                select(history).where(history.c.id == entry_id, *owned_by(history, owner))
            ).one_or_none()
        if row is None:
            raise HistoryNotFound(f"no history entry {entry_id!r}")
        return _entry(row)

    def search(
        self,
        q: str | None = None,
        *,
        owner: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Page[HistoryEntry]:
        """Entries newest first whose text contains ``q`` (any case; all entries without ``q``),
        keyset-paged. A cursor belongs to its query: paging with another ``q`` is refused."""
        kind = f"history:{q or ''}"
        query = select(history).where(*owned_by(history, owner))
        if q:
            query = query.where(history.c.search_text.like(f"%{_escape_like(q.casefold())}%", escape="\\"))
        with self._db.read() as conn:
            rows = list(conn.execute(newest_first(query, history, kind, cursor, limit)))
        return Page([_entry(r) for r in rows[:limit]], next_cursor(kind, rows, limit, "created_at", "id"))

    def delete(self, entry_id: str, *, owner: str | None = None) -> None:
        with self._db.write() as conn:
            gone = conn.execute(
                delete(history).where(history.c.id == entry_id, *owned_by(history, owner))
            ).rowcount
        if not gone:
            raise HistoryNotFound(f"no history entry {entry_id!r}")

    def purge(self, older_than_s: float, *, owner: str | None = None) -> int:
        """Retention: delete entries older than ``older_than_s`` seconds; how many went."""
        cutoff = self._db.now() - timedelta(seconds=older_than_s)
        with self._db.write() as conn:
            return conn.execute(
                delete(history).where(history.c.created_at < cutoff, *owned_by(history, owner))
            ).rowcount


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _entry(r: Row[Any]) -> HistoryEntry:
    return HistoryEntry(
        id=r.id,
        created_at=r.created_at,
        owner=r.owner,
        source_name=r.source_name,
        duration_s=r.duration_s,
        language=r.language,
        model=r.model,
        text=r.text,
        segments=r.segments,
    )
