"""Liveness, readiness and the ASR replica's batching statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from serve_app.api.context import ApiContext, context

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The ingress process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ctx: ApiContext = Depends(context)) -> JSONResponse:
    """200 when every stage (the offline four, Streaming and the JobRunner) has a replica that
    loaded its model and warmed up, else 503 naming the ones that have not."""
    ok = await ctx.stages.readiness()
    if not all(ok.values()):
        missing = ", ".join(n for n, v in ok.items() if not v)
        return JSONResponse(
            status_code=503, content={"status": "not_ready", "stages": ok, "error": f"not ready: {missing}"}
        )
    return JSONResponse({"status": "ready", "stages": ok})


@router.get("/v1/stats")
async def stats(ctx: ApiContext = Depends(context)) -> Any:
    """Batching statistics of the ASR replica that answers, and this ingress's retry count."""
    return {**await ctx.stages.asr_stats(), "ingress_retries": ctx.pipeline.retries}
