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
from serve_app.keys import KeyRing
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
    keys: KeyRing = field(default_factory=KeyRing)
    """API keys (none: the server is open); enforced by ``serve_app.api.auth``."""


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def owner(request: Request) -> str | None:
    """Who owns what the request creates (jobs, history): its API key's label, admin keys
    included (``serve_app.api.auth`` puts it on ``request.state``); ``None`` while the server
    runs without API keys."""
    return getattr(request.state, "owner", None)


def visible_owner(request: Request) -> str | None:
    """Whose jobs and history the request may see: its key's label, or ``None`` (everyone's)
    for an admin key or a server without API keys."""
    return None if getattr(request.state, "admin", False) else owner(request)
