"""What the routes share: the pipeline, the served model, the limits. One per ingress replica,
on ``app.state.ctx``; routes get it through the ``context`` dependency."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request
from ray.serve.handle import DeploymentHandle

from serve_app.config import LimitsArgs, RealtimeArgs
from serve_app.contracts import ServedModel
from serve_app.pipeline import Pipeline


@dataclass
class ApiContext:
    pipeline: Pipeline
    served: ServedModel
    limits: LimitsArgs
    streaming: DeploymentHandle
    """Realtime sessions' state (pinned per session by ``SessionRouter``)."""
    realtime: RealtimeArgs
    created: int = field(default_factory=lambda: int(time.time()))


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx
