"""Single transcriptions kept for their user: ``/v1/history`` (text and metadata, never audio),
searchable, paged, exportable, deletable; entries older than the retention are removed."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from serve_app.api.context import ApiContext, context, visible_owner
from serve_app.api.jobs import _time
from serve_app.contracts import Transcript
from serve_app.errors import InvalidRequest
from serve_app.exports import csv_text
from serve_app.formats import MEDIA_TYPES, parse_format, render
from serve_app.jobs import HistoryEntry
from serve_app.jobs.models import SegmentJson, segment_json, segment_of
from serve_app.jobs.paging import MAX_LIMIT

router = APIRouter(tags=["history"])


def entry_json(e: HistoryEntry, segments: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": e.id,
        "object": "history.entry",
        "created_at": _time(e.created_at),
        "owner": e.owner,  # the label of the API key that made it (null without keys)
        "source_name": e.source_name,
        "duration_s": e.duration_s,
        "language": e.language,
        "model": e.model,
        "text": e.text,
    }
    if segments:
        body["segments"] = e.segments
    return body


def segments_json(t: Transcript) -> list[SegmentJson]:
    return [segment_json(s) for s in t.segments]


def as_transcript(e: HistoryEntry) -> Transcript:
    return Transcript(
        language=e.language or "",
        duration_s=e.duration_s or 0.0,
        segments=[segment_of(s) for s in e.segments],
    )


@router.get("/v1/history")
async def search_history(
    q: str | None = None,
    cursor: str | None = Query(None, max_length=1024),
    limit: int = Query(20, ge=1, le=MAX_LIMIT),
    ctx: ApiContext = Depends(context),
    who: str | None = Depends(visible_owner),
) -> dict[str, Any]:
    if q is not None and len(q) > 256:
        raise InvalidRequest("q is at most 256 characters")
    page = await asyncio.to_thread(ctx.store.history.search, q, owner=who, limit=limit, cursor=cursor)
    return {"object": "list", "data": [entry_json(e) for e in page.items], "next_cursor": page.next_cursor}


@router.get("/v1/history/export")
async def export_history(
    q: str | None = None, ctx: ApiContext = Depends(context), who: str | None = Depends(visible_owner)
) -> Response:
    """Every entry matching ``q`` as CSV (one row per entry)."""
    store = ctx.store
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "created_at", "source_name", "duration_s", "language", "model", "text"])
    cursor = None
    while True:
        page = await asyncio.to_thread(store.history.search, q, owner=who, limit=500, cursor=cursor)
        for e in page.items:
            w.writerow(
                [
                    e.id,
                    _time(e.created_at),
                    csv_text(e.source_name),
                    e.duration_s,
                    e.language,
                    csv_text(e.model),
                    csv_text(e.text),
                ]
            )
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="history.csv"'},
    )


@router.get("/v1/history/{entry_id}")
async def get_entry(
    entry_id: str,
    format: str | None = None,
    ctx: ApiContext = Depends(context),
    who: str | None = Depends(visible_owner),
) -> Response:
    e = await asyncio.to_thread(ctx.store.history.get, entry_id, owner=who)
    if format is None:
        return JSONResponse(entry_json(e, segments=True))
    fmt = parse_format(format)
    body = render(as_transcript(e), fmt, words=True)
    return (
        JSONResponse(body) if isinstance(body, dict) else PlainTextResponse(body, media_type=MEDIA_TYPES[fmt])
    )


@router.delete("/v1/history/{entry_id}")
async def delete_entry(
    entry_id: str, ctx: ApiContext = Depends(context), who: str | None = Depends(visible_owner)
) -> dict[str, Any]:
    await asyncio.to_thread(ctx.store.history.delete, entry_id, owner=who)
    return {"id": entry_id, "object": "history.entry", "deleted": True}
