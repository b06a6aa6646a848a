"""``GET /v1/jobs/{id}/events``: a job's progress as server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from serve_app.api.context import ApiContext, context, owner, visible_owner
from serve_app.api.views import job_json

router = APIRouter(tags=["jobs"])


@router.get("/v1/jobs/{job_id}/events")
async def job_events(
    job_id: str,
    interval_s: float = Query(1.0, ge=0.2, le=30.0, allow_inf_nan=False),
    ctx: ApiContext = Depends(context),
    who: str | None = Depends(visible_owner),
    holder: str | None = Depends(owner),
) -> StreamingResponse:
    """Server-sent events: ``progress`` whenever the job changes, ``end`` when it has ended.
    A key holds at most ``limits.max_event_streams`` streams at once on a replica (429 beyond);
    a stream ends after ``limits.max_event_stream_s`` with an ``expired`` event (an
    ``EventSource`` reconnects by itself)."""
    store = ctx.store
    await asyncio.to_thread(store.jobs.get, job_id, owner=who)  # 404 before the stream starts
    slot = ctx.event_streams.hold(holder)
    slot.__enter__()  # 429 before the stream starts; released when the stream ends
    lifetime = ctx.limits.max_event_stream_s

    async def stream() -> AsyncIterator[bytes]:
        try:
            last = None
            idle = 0.0
            ends = asyncio.get_running_loop().time() + lifetime
            yield b"retry: 2000\n\n"
            while True:
                current = await asyncio.to_thread(store.jobs.get, job_id, owner=who)
                job = job_json(current)
                state = (job["state"], job["files"], job["audio_seconds"])
                if state != last:
                    last, idle = state, 0.0
                    yield f"event: progress\ndata: {json.dumps(job)}\n\n".encode()
                elif (idle := idle + interval_s) >= 15:
                    idle = 0.0
                    yield b": keep-alive\n\n"
                if current.state.terminal:
                    yield f"event: end\ndata: {json.dumps(job)}\n\n".encode()
                    return
                if asyncio.get_running_loop().time() >= ends:
                    yield f"event: expired\ndata: {json.dumps({'after_s': lifetime})}\n\n".encode()
                    return
                await asyncio.sleep(interval_s)
        finally:
            slot.__exit__(None, None, None)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
