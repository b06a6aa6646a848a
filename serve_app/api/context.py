"""What the routes share: the pipeline, the served model, the limits. One per ingress replica,
on ``app.state.ctx``; routes get it through the ``context`` dependency."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from ray.serve.handle import DeploymentHandle

from serve_app.api.origins import HostPolicy
from serve_app.api.quotas import Caller, EventStreams, Quotas, RateLimiter
from serve_app.config import JobsArgs, LimitsArgs, QuotaArgs, RealtimeArgs
from serve_app.contracts import ServedModel
from serve_app.jobs import JobStore
from serve_app.keys import KeyRing
from serve_app.pipeline import Pipeline
from serve_app.realtime.capacity import SocketRegistry
from serve_app.stages import Stages


@dataclass
class ApiContext:
    pipeline: Pipeline
    stages: Stages
    """Every stage's handle, for readiness and statistics (``serve_app.stages``)."""
    served: ServedModel
    limits: LimitsArgs
    streaming: DeploymentHandle
    """Realtime sessions' state (pinned per session by ``SessionRouter``)."""
    realtime: RealtimeArgs
    jobs: JobsArgs
    store: JobStore
    """Jobs and history."""
    data_dir: Path
    input_dir: Path | None
    keep_history: bool
    """Keep single transcriptions in ``store.history`` (``StorageArgs.history``)."""
    created: int = field(default_factory=lambda: int(time.time()))
    keys: KeyRing = field(default_factory=KeyRing)
    """API keys (none: the server is open); enforced by ``serve_app.api.auth``."""
    quotas: QuotaArgs = field(default_factory=QuotaArgs)
    """Per-key quotas (they apply only while ``keys`` are configured): ``quota`` below."""
    hosts: HostPolicy = field(default_factory=lambda: HostPolicy.build(None))
    """Which ``Host`` names and ``Origin``s are answered (``serve_app.api.origins``)."""
    rate: RateLimiter = field(default_factory=RateLimiter)
    """This replica's request-rate buckets per key."""
    event_streams: EventStreams = field(init=False)
    """Open event streams per key on this replica (``limits.max_event_streams``)."""
    sockets: SocketRegistry = field(init=False)
    """Live realtime sockets and the audio they buffer, against ``realtime``'s caps: made
    from ``realtime`` with the context, so one per Ingress replica."""

    @property
    def quota(self) -> Quotas:
        return Quotas(self.quotas, enabled=self.keys.enabled)

    def __post_init__(self) -> None:
        self.event_streams = EventStreams(self.limits.max_event_streams)
        self.sockets = SocketRegistry(self.realtime.max_sockets, round(self.realtime.max_buffered_mb * 2**20))


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def caller(request: Request) -> Caller:
    """Who sent the request (its key's label and admin flag; no label without API keys)."""
    return Caller(owner=owner(request), admin=bool(getattr(request.state, "admin", False)))


def owner(request: Request) -> str | None:
    """Who owns what the request creates (jobs, history): its API key's label, admin keys
    included (``serve_app.api.auth`` puts it on ``request.state``); ``None`` while the server
    runs without API keys."""
    return getattr(request.state, "owner", None)


def visible_owner(request: Request) -> str | None:
    """Whose jobs and history the request may see: its key's label, or ``None`` (everyone's)
    for an admin key or a server without API keys."""
    return None if getattr(request.state, "admin", False) else owner(request)
