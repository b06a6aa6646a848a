"""Single transcriptions kept for their user: ``/v1/history`` (text and metadata, never audio),
searchable, paged, exportable, deletable; entries older than the retention are removed."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response

from serve_app.api.context import ApiContext, context, visible_owner
from serve_app.api.views import entry_json, page_json, timestamp, transcript_response
from serve_app.errors import InvalidRequest
from serve_app.exports import csv_text
from serve_app.formats import parse_format
from serve_app.jobs.paging import MAX_LIMIT

router = APIRouter(tags=["history"])


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
    return page_json(page, entry_json)


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
                    timestamp(e.created_at),
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
    return transcript_response(e.transcript(), parse_format(format), words=True)


@router.delete("/v1/history/{entry_id}")
async def delete_entry(
    entry_id: str, ctx: ApiContext = Depends(context), who: str | None = Depends(visible_owner)
) -> dict[str, Any]:
    await asyncio.to_thread(ctx.store.history.delete, entry_id, owner=who)
    return {"id": entry_id, "object": "history.entry", "deleted": True}
