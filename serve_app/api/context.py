"""What the routes share: the pipeline, the served model, the limits. One per ingress replica,
on ``app.state.ctx``; routes get it through the ``context`` dependency."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from ray.serve.handle import DeploymentHandle

from serve_app.config import JobsArgs, LimitsArgs, RealtimeArgs
from serve_app.contracts import ServedModel
from serve_app.jobs import JobStore
from serve_app.pipeline import Pipeline


@dataclass
class ApiContext:
    pipeline: Pipeline
    served: ServedModel
    limits: LimitsArgs
    streaming: DeploymentHandle
    """Realtime sessions' state (pinned per session by ``SessionRouter``)."""
    realtime: RealtimeArgs
    jobs: JobsArgs
    store: JobStore | None
    """Jobs and history (``None``: both off)."""
    data_dir: Path
    input_dir: Path | None
    history: bool
    created: int = field(default_factory=lambda: int(time.time()))


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def owner(request: Request) -> str | None:
    """Who owns what the request creates or may see (jobs, history): ``None`` while the server
    runs without API keys."""
    return getattr(request.state, "owner", None)
