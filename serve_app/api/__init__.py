"""The HTTP/WebSocket surface: what the wire says. One router module per surface; request
models in ``protocol``; errors shaped in ``errors``; ``create_app`` assembles them around an
``ApiContext`` (the pipeline and what the routes need to know)."""

from __future__ import annotations

from fastapi import FastAPI

from serve_app.api import (
    console,
    health,
    history,
    jobs,
    models,
    status,
    transcriptions,
)
from serve_app.api.auth import ApiKeyMiddleware
from serve_app.api.context import ApiContext
from serve_app.api.errors import install_error_handlers
from serve_app.api.limits import BodyLimitMiddleware, BodyLimits
from serve_app.api.origins import HostOriginMiddleware
from serve_app.api.quotas import RateLimitMiddleware
from serve_app.api.realtime import funasr as realtime_funasr
from serve_app.api.realtime import openai as realtime_openai

__all__ = ["ApiContext", "create_app"]


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="funasr-serve", version="0.2.0")
    app.state.ctx = ctx
    install_error_handlers(app)
    # Outermost last: Host/Origin, then API keys (every route but the public ones,
    # serve_app.api.auth lists them), then the per-key request rate, then body limits.
    app.add_middleware(BodyLimitMiddleware, limits=BodyLimits(ctx.limits, ctx.jobs))
    app.add_middleware(RateLimitMiddleware, quotas=ctx.quota, limiter=ctx.rate)
    app.add_middleware(ApiKeyMiddleware, keys=ctx.keys)
    app.add_middleware(HostOriginMiddleware, policy=ctx.hosts)
    for module in (health, models, status, transcriptions, jobs, history, realtime_openai, realtime_funasr):
        app.include_router(module.router)
    app.include_router(console.router)  # /ui/ and the browser's GET / (the FunASR socket keeps WS /)
    return app
