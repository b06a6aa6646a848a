"""The graph's deployment handles as one typed object, with what the API and the job runner ask
of them: the offline pipeline built from them in one place, and readiness probed on every stage.

``build_app`` binds the stages into a ``Stages`` (Serve finds the bound deployments inside it and
hands each replica live handles in their place): the job runner gets the offline four, the
Ingress all of them. Nothing outside this module calls ``.remote()`` on a stage to ask whether
it is up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ray.serve.handle import DeploymentHandle

from serve_app.config import RetryArgs
from serve_app.pipeline import Pipeline

PROBE_TIMEOUT_S = 5.0
"""How long one stage's ``ready()`` may take before the stage counts as not ready."""
DEPLOYMENT_NAMES = {
    "decode": "Decode",
    "vad": "VAD",
    "asr": "ASR",
    "postprocess": "Postprocess",
    "streaming": "Streaming",
    "job_runner": "JobRunner",
}
"""Each ``named()`` stage's Serve deployment name (as ``serve.status()`` lists it)."""
METERED = ("decode", "vad", "asr", "postprocess", "streaming")
"""Stages whose ``stats()`` carry a ``load`` part (``serve_app.load``)."""


@dataclass(frozen=True)
class Stages:
    """Handles of the graph's deployments. ``streaming`` and ``job_runner`` are absent in the
    job runner's own copy (it needs only the offline four)."""

    decode: DeploymentHandle
    vad: DeploymentHandle
    asr: DeploymentHandle
    post: DeploymentHandle
    streaming: DeploymentHandle | None = None
    job_runner: DeploymentHandle | None = None

    def pipeline(self, retry: RetryArgs) -> Pipeline:
        """The offline chain over these stages (one per replica: it keeps the retry count and
        the poison registry)."""
        return Pipeline(self.decode, self.vad, self.asr, self.post, retry)

    def named(self) -> dict[str, DeploymentHandle]:
        """Every stage of this copy, by the name ``/readyz`` reports it under: the offline four
        always, Streaming and the JobRunner where this copy has them."""
        optional = {"streaming": self.streaming, "job_runner": self.job_runner}
        return {
            "decode": self.decode,
            "vad": self.vad,
            "asr": self.asr,
            "postprocess": self.post,
            **{name: h for name, h in optional.items() if h is not None},
        }

    async def readiness(self, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, bool]:
        """Whether each stage has a replica that loaded its model and warmed up (its ``ready()``
        answered true within ``timeout_s``), probed at once."""

        async def probe(h: DeploymentHandle) -> bool:
            try:
                return bool(await asyncio.wait_for(h.ready.remote(), timeout=timeout_s))
            except Exception:  # no replica, a dead one, a timeout: not ready, whatever the cause
                return False

        stages = self.named()
        answers = await asyncio.gather(*(probe(h) for h in stages.values()))
        return dict(zip(stages, answers, strict=True))

    async def asr_stats(self) -> dict[str, Any]:
        """Batching and queue statistics of the ASR replica that answers."""
        return dict(await self.asr.stats.remote())

    async def replica_stats(self, stage: str, replicas: int = 1) -> list[dict[str, Any]]:
        """``stats()`` of up to ``replicas`` replicas of ``stage`` (a ``named()`` key): that many
        calls at once, one answer kept per replica id. Serve's router spreads concurrent calls
        over the replicas but does not promise to reach each one."""
        handle = self.named()[stage]

        async def one() -> dict[str, Any]:
            return dict(await handle.stats.remote())

        answers = await asyncio.gather(*(one() for _ in range(max(1, replicas))))
        return list({a.get("replica"): a for a in answers}.values())
