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
    realtime_funasr,
    realtime_openai,
    status,
    transcriptions,
)
from serve_app.api.auth import ApiKeyMiddleware
from serve_app.api.context import ApiContext
from serve_app.api.errors import install_error_handlers

__all__ = ["ApiContext", "create_app"]


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="funasr-serve", version="0.2.0")
    app.state.ctx = ctx
    install_error_handlers(app)
    # API keys on every route but the public ones (serve_app.api.auth lists them).
    app.add_middleware(ApiKeyMiddleware, keys=ctx.keys)
    for module in (health, models, status, transcriptions, jobs, history, realtime_openai, realtime_funasr):
        app.include_router(module.router)
    app.include_router(console.router)  # /ui/ and the browser's GET / (the FunASR socket keeps WS /)
    return app
