"""``GET /v1/status``: what an operator (and the console's status page) wants at a glance:
the served models, replicas per stage, queue depth, the audio transcribed today, and each
stage's load with what is saturated (``api.load``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from serve_app.api.context import ApiContext, caller, context
from serve_app.api.load import MAX_PROBES, LoadStatus, load_status
from serve_app.api.quotas import Caller
from serve_app.api.views import timestamp, usage_json
from serve_app.jobs import OwnerUsage
from serve_app.stages import DEPLOYMENT_NAMES, METERED

logger = logging.getLogger("ray.serve")

router = APIRouter(tags=["status"])

PROBE_TIMEOUT_S = 5.0
ASR_QUEUE_FIELDS = (
    "replica",
    "device",
    "inflight_requests",
    "queued_segments",
    "queued_audio_s",
    "busy_fraction",
)


class ServerStatus(BaseModel):
    """The answer of ``/v1/status`` (the route's docstring shows one)."""

    object: Literal["status"] = "status"
    time: str
    models: dict[str, Any]
    serve: dict[str, Any] | None
    """``serve.status()`` of this application (``serve_json``); ``None``: could not be read."""
    queue: dict[str, Any]
    today: dict[str, Any] | None
    auth: dict[str, Any]
    quotas: dict[str, Any] | None
    load: LoadStatus
    errors: dict[str, str]
    """What could not be read, by part (``serve``, ``usage``, ``quotas``, or a stage: ``asr``,
    ``decode``, ``vad``, ``postprocess``, ``streaming``)."""


def start_of_day(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day: "today" of the status."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def serve_json(app: str, status: Any) -> dict[str, Any]:
    """One application of ``serve.status()`` (an ``ApplicationStatusOverview``) as JSON."""
    deployments = {}
    for name, d in status.deployments.items():
        replicas = {str(getattr(state, "value", state)): int(n) for state, n in d.replica_states.items()}
        deployments[name] = {
            "status": str(getattr(d.status, "value", d.status)),
            "replicas": replicas,
            "running": replicas.get("RUNNING", 0),
        }
    return {
        "app": app,
        "status": str(getattr(status.status, "value", status.status)),
        "deployments": deployments,
    }


def _serve_status() -> dict[str, Any]:
    from ray import serve

    app = serve.get_replica_context().app_name
    overview = serve.status().applications.get(app)
    if overview is None:
        raise LookupError(f"application {app!r} is not in serve.status()")
    return serve_json(app, overview)


@router.get("/v1/status")
async def server_status(request: Request, ctx: ApiContext = Depends(context)) -> ServerStatus:
    """The server at a glance. Parts that cannot be read right now are ``null``, with the
    reason under ``errors`` (the endpoint itself answers 200 as long as the ingress runs)::

        {
          "object": "status",
          "time": "2025-03-01T12:00:00Z",
          "models": {
            "asr": {"names": ["whisper-1"], "language": "en", "languages": ["en"]},
            "streaming": null                       # realtime.streaming_model as configured
          },
          "serve": {                                # serve.status() of this application
            "app": "default", "status": "RUNNING",
            "deployments": {
              "ASR": {"status": "HEALTHY", "replicas": {"RUNNING": 1}, "running": 1},
              ...                                   # Ingress, Decode, VAD, Postprocess, ...
            }
          },
          "queue": {
            "asr": {                                # the ASR replica that answered (one of them)
              "replica": "...", "device": "cpu", "inflight_requests": 0,
              "queued_segments": 0, "queued_audio_s": 0.0, "busy_fraction": 0.02
            },
            "jobs": {"pending_files": 0, "running_files": 0}     # null when jobs are off
          },
          "today": {                                # since midnight UTC, every owner
            "since": "2025-03-01T00:00:00Z", "audio_hours": 0.5,
            "history_audio_s": 600.0, "history_entries": 12,     # single transcriptions
            "job_audio_s": 1200.0, "job_windows": 3               # batch-job windows
          },                                        # null when jobs and history are off
          "auth": {"keys_required": true, "label": "alice", "admin": false},
          "quotas": {                               # the caller's; null when none applies
            "concurrent_jobs": {"limit": 8, "used": 1, "counted": "server"},
            "queued_audio_h": ..., "stored_upload_gb": ...,   # likewise, "server"
            "realtime_sessions": {"limit": 8, "used": 0, "counted": "replica"},
            "requests_per_minute": {"limit": 600, "used": 3, "counted": "replica"}
          },
          "load": {                                 # api.load: over each replica's recent window
            "stages": [                             # Ingress, Decode, VAD, ASR, ... in graph order
              {"stage": "ASR", "status": "HEALTHY", "replicas": {"RUNNING": 1}, "running": 1,
               "sampled": 1, "window_s": 64.0, "busy_share": 0.95, "queued_audio_s": 120.0,
               "cpu_per_audio_s": 0.4, "cpu_cores": 1.9, "window_audio_s": 300.0},
              ...                                   # Ingress, JobRunner: replicas only
            ],
            "throughput": {"minute_s": 60.0, "start": "2025-03-01T11:46:00Z",
                           "audio_s": [0.0, ..., 310.0], "total_audio_s": 2900.0},
            "saturated": [{"kind": "busy", "stage": "ASR", "busy_share": 0.95,
                           "text": "ASR is busy 95 % of the time with 120 s of audio queued: add ASR replicas",
                           ...}]                    # [] when nothing is saturated
          },
          "errors": {}                              # e.g. {"serve": "timed out"}
        }
    """
    now = datetime.now(UTC)
    errors: dict[str, str] = {}

    async def part(name: str, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, PROBE_TIMEOUT_S)
        except Exception as e:
            # The detail (SQL, database hosts, Ray internals) goes to the log, not the client.
            logger.warning("status: %s could not be read", name, exc_info=e)
            errors[name] = (
                "timed out" if isinstance(e, TimeoutError) else "could not be read (see the server log)"
            )
            return None

    async def serve_and_stages() -> tuple[dict[str, Any] | None, dict[str, list[dict[str, Any]]]]:
        """``serve.status()``, then each metered stage's replicas' ``stats()`` (as many calls
        as it has running replicas, up to ``MAX_PROBES``)."""
        serve = await part("serve", asyncio.to_thread(_serve_status))
        running = {n: d.get("running") for n, d in (serve or {}).get("deployments", {}).items()}
        stages = [s for s in METERED if s in ctx.stages.named()]

        async def probe(stage: str) -> Any:
            n = min(MAX_PROBES, int(running.get(DEPLOYMENT_NAMES[stage]) or 1))
            return await part(stage, ctx.stages.replica_stats(stage, n))

        answers = await asyncio.gather(*(probe(s) for s in stages))
        return serve, {DEPLOYMENT_NAMES[s]: a for s, a in zip(stages, answers, strict=True) if a}

    store = ctx.store
    who = caller(request)
    (serve_part, stats), usage, mine = await asyncio.gather(
        serve_and_stages(),
        part("usage", asyncio.to_thread(store.usage.since, start_of_day(now))),
        part("quotas", asyncio.to_thread(store.usage.of_owner, who.owner))
        if ctx.quota.applies(who)
        else asyncio.sleep(0),
    )
    state = request.state
    asr = stats.get("ASR")
    return ServerStatus(
        time=timestamp(now),
        models={
            "asr": {
                "names": ctx.served.names,
                "language": ctx.served.language,
                "languages": ctx.served.languages,
            },
            "streaming": ctx.realtime.streaming_model,
        },
        serve=serve_part,
        queue={
            "asr": {k: asr[0].get(k) for k in ASR_QUEUE_FIELDS} if asr else None,
            "jobs": {"pending_files": usage.pending_files, "running_files": usage.running_files}
            if usage is not None
            else None,
        },
        today=usage_json(usage) if usage is not None else None,
        auth={
            "keys_required": ctx.keys.enabled,
            "label": getattr(state, "owner", None),
            "admin": bool(getattr(state, "admin", False)),
        },
        quotas=quotas_json(ctx, who, mine),
        load=load_status((serve_part or {}).get("deployments"), stats, now),
        errors=errors,
    )


def quotas_json(ctx: ApiContext, who: Caller, usage: OwnerUsage | None) -> dict[str, Any] | None:
    """The caller's use against each of its quotas (``None``: no quota applies to it)."""
    if not ctx.quota.applies(who):
        return None
    q, owner = ctx.quotas, who.owner or ""

    def one(limit: float | None, used: float | None, scope: str) -> dict[str, Any] | None:
        return None if limit is None else {"limit": limit, "used": used, "counted": scope}

    return {
        "concurrent_jobs": one(q.concurrent_jobs, usage.live_jobs if usage else None, "server"),
        "queued_audio_h": one(
            q.queued_audio_h, round(usage.queued_audio_s / 3600, 4) if usage else None, "server"
        ),
        "stored_upload_gb": one(
            q.stored_upload_gb, round(usage.stored_bytes / 1e9, 6) if usage else None, "server"
        ),
        "realtime_sessions": one(q.realtime_sessions, ctx.sockets.owned(owner), "replica"),
        "requests_per_minute": one(
            q.requests_per_minute,
            ctx.rate.used(owner, q.requests_per_minute) if q.requests_per_minute else None,
            "replica",
        ),
    }
