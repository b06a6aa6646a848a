"""Keyset paging: opaque cursors (base64url JSON naming the listing and the last row's sort
key), the one keyset helper every listing uses (``newest_first`` and ``next_cursor``) and the
filters every listing shares.

Keyset (not offset) paging keeps pages stable while rows are added or deleted: a row never
shows twice and one that existed when the listing started is never skipped."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, Table, and_, or_

from serve_app.errors import InvalidRequest
from serve_app.jobs.errors import InvalidCursor

MAX_LIMIT = 1000


def check_limit(limit: int) -> int:
    """A page size the client asked for: out of range is the client's mistake (400)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be within 1..{MAX_LIMIT}, got {limit}")
    return limit


def older_than(table: Table, at: datetime, last_id: str) -> ColumnElement[bool]:
    """Rows after ``(created_at, id)`` in newest-first order (ties on the time broken by id)."""
    return or_(table.c.created_at < at, and_(table.c.created_at == at, table.c.id < last_id))


def newest_first(query: Select[Any], table: Table, kind: str, cursor: str | None, limit: int) -> Select[Any]:
    """``query`` over ``table`` newest first by ``(created_at, id)``, from after ``cursor`` (the
    previous page's, of listing ``kind``), one row more than ``limit``: pass the rows to
    ``next_cursor``."""
    if cursor is not None:
        at, last_id = decode(kind, cursor, (datetime, str))
        query = query.where(older_than(table, at, last_id))
    return query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(check_limit(limit) + 1)


def next_cursor(kind: str, rows: Sequence[Row[Any]], limit: int, *key: str) -> str | None:
    """The cursor of the page after the first ``limit`` of ``rows`` (fetched ``limit + 1``): the
    ``key`` columns of the last row shown, or ``None`` when no row is left."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode(kind, *(getattr(last, column) for column in key))


def owned_by(table: Table, owner: str | None) -> list[ColumnElement[bool]]:
    """The owner filter: none for ``owner=None`` (an admin or a server without API keys)."""
    return [] if owner is None else [table.c.owner == owner]


def encode(kind: str, *key: Any) -> str:
    parts = [k.isoformat() if isinstance(k, datetime) else k for k in key]
    raw = json.dumps([kind, *parts], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(kind: str, cursor: str, types: tuple[type, ...]) -> tuple[Any, ...]:
    """The sort key, each part converted to ``types`` (``datetime`` from ISO text)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise InvalidCursor("the cursor is malformed") from e
    if not isinstance(data, list) or len(data) != len(types) + 1 or data[0] != kind:
        raise InvalidCursor(f"the cursor does not belong to this {kind} listing")
    out: list[Any] = []
    for value, typ in zip(data[1:], types, strict=True):
        try:
            if typ is datetime:
                parsed = datetime.fromisoformat(value)
                if parsed.tzinfo is None:
                    raise ValueError("naive time")
                out.append(parsed)
            elif isinstance(value, typ) and not isinstance(value, bool):
                out.append(value)
            else:
                raise TypeError(type(value).__name__)
        except (TypeError, ValueError) as e:
            raise InvalidCursor("the cursor is malformed") from e
    return tuple(out)
