"""Autoscaling the ASR deployment on queued *audio seconds*, not request counts.

A request for a 5-minute file and one for a 2-second clip are one request each to Serve's
default policy; to the model they differ 150×. Each ASR replica reports the audio seconds it
holds (queued + running) from ``record_autoscaling_stats()``; the policy asks for
``ceil(total / target_queued_audio_s)`` replicas within the configured bounds. Serve itself
applies ``upscale_delay_s`` / ``downscale_delay_s`` around custom policies (Ray 2.60 wraps
them in its delay logic), so the policy does not keep timers of its own. From a Serve config::

    autoscaling_config:
      min_replicas: 1
      max_replicas: 4
      upscale_delay_s: 5
      downscale_delay_s: 60
      look_back_period_s: 10          # the queued-audio figure is averaged over this window
      policy:
        policy_function: "serve_app.autoscaling:QueuedAudioPolicy"
        policy_kwargs: {target_queued_audio_s: 120}
"""

from __future__ import annotations

import logging
import math
from typing import Any

logger = logging.getLogger("ray.serve")

QUEUED_AUDIO_METRIC = "queued_audio_s"


def desired_replicas(queued_audio_s: float, target_s: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, math.ceil(queued_audio_s / target_s) if queued_audio_s > 0 else lo))


class QueuedAudioPolicy:
    """Serve autoscaling policy (a class, so ``policy_kwargs`` from the YAML reach it)."""

    def __init__(self, target_queued_audio_s: float = 120.0) -> None:
        if target_queued_audio_s <= 0:
            raise ValueError("target_queued_audio_s must be positive")
        self.target_queued_audio_s = target_queued_audio_s

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        metrics = ctx.aggregated_metrics
        metrics = (metrics() if callable(metrics) else metrics) or {}
        queued = float(sum((metrics.get(QUEUED_AUDIO_METRIC) or {}).values()))
        want = desired_replicas(
            queued,
            self.target_queued_audio_s,
            ctx.capacity_adjusted_min_replicas,
            ctx.capacity_adjusted_max_replicas,
        )
        if want != ctx.target_num_replicas:
            logger.info(
                "ASR autoscaling: %.0f audio-s queued → %d replicas (now %d)",
                queued,
                want,
                ctx.target_num_replicas,
            )
        return want, dict(ctx.policy_state or {})
