"""HTTP ingress: holds the stage handles and serves ``serve_app.api``'s app (built in the
replica, late-bound through ``__serve_build_asgi_app__``, so routes live in ``api/``)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api import ApiContext, create_app
from serve_app.api.auth import open_warning
from serve_app.api.origins import HostPolicy
from serve_app.config import JobsArgs, LimitsArgs, QuotaArgs, RealtimeArgs, RetryArgs
from serve_app.contracts import ServedModel
from serve_app.jobs import JobStore
from serve_app.jobs.blobs import remove_stale_incoming
from serve_app.keys import KeyRing
from serve_app.settings import AccessArgs, StorageArgs
from serve_app.stages import Stages

logger = logging.getLogger("ray.serve")


# A WebSocket is an ongoing request of its ingress replica: a scale-down drains live sessions
# for up to graceful_shutdown_timeout_s instead of cutting them.
@serve.deployment(
    name="Ingress",
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=256,
    graceful_shutdown_timeout_s=3600,
)
@serve.ingress()
class Ingress:
    def __init__(
        self,
        stages: Stages,
        served: ServedModel,
        limits: LimitsArgs,
        retry: RetryArgs,
        realtime: RealtimeArgs,
        jobs: JobsArgs,
        storage: StorageArgs,
        keys: KeyRing | None = None,
        quotas: QuotaArgs | None = None,
        access: AccessArgs | None = None,
    ) -> None:
        keys, access = keys or KeyRing(), access or AccessArgs()
        host = _http_host()
        if not keys.enabled and (warning := open_warning(keys, host)):
            logger.warning(warning)
        storage.data_dir.mkdir(parents=True, exist_ok=True)
        if removed := remove_stale_incoming(storage.data_dir):
            logger.info("removed %d partial uploads left in uploads/.incoming by a crash", removed)
        self._ctx = ApiContext(
            pipeline=stages.pipeline(retry),
            stages=stages,
            served=served,
            limits=limits,
            streaming=_required(stages.streaming, "Streaming"),
            realtime=realtime,
            jobs=jobs,
            store=JobStore.open(storage.database),
            data_dir=storage.data_dir,
            input_dir=storage.input_dir,
            keep_history=storage.history,
            keys=keys,
            quotas=quotas or QuotaArgs(),
            hosts=HostPolicy.build(host, access.allowed_hosts, access.allowed_origins),
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self._ctx)


def _required(handle: DeploymentHandle | None, name: str) -> DeploymentHandle:
    if handle is None:
        raise ValueError(f"the Ingress needs the {name} stage")
    return handle


def _http_host() -> str | None:
    """The host Serve's proxies listen on (``http_options.host``); ``None`` if unknown."""
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        return str(client.http_config.host) if client is not None else None
    except Exception:  # no controller to ask: say so in the warning rather than fail the replica
        return None
