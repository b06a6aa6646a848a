"""Autoscaling on queued audio seconds, on local Ray: a burst grows the ASR deployment to its
maximum, it shrinks back afterwards, and no request fails while replicas come and go."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from ray import serve

from tests.integration.conftest import ServeCluster
from tests.support import SENTENCES, funasr_args
from tools.audio import encode_wav, with_pauses
from tools.local_serve import app_config

# The tiny test model drains its queue fast, so little audio ever waits: a low target.
POLICY = {
    "policy_function": "serve_app.autoscaling:QueuedAudioPolicy",
    "policy_kwargs": {"target_queued_audio_s": 4},
}


def asr_replicas(app: str) -> dict[str, int]:
    status = serve.status().applications.get(app)
    if not status or "ASR" not in status.deployments:
        return {}
    return {str(k): v for k, v in status.deployments["ASR"].replica_states.items()}


def test_asr_scales_on_queued_audio_and_back(
    serve_cluster: ServeCluster, tiny_models: dict[str, Path], say: Callable[[str], np.ndarray]
) -> None:
    app = app_config(
        "local-funasr.yaml",
        "autoscale",
        args=funasr_args(tiny_models),
        deployments={
            "ASR": {
                "autoscaling_config": {
                    "min_replicas": 1,
                    "max_replicas": 2,
                    "upscale_delay_s": 1,
                    "downscale_delay_s": 5,
                    "look_back_period_s": 6,
                    "policy": POLICY,
                },
                "ray_actor_options": {"num_cpus": 0.5},
            }
        },
    )
    url = serve_cluster.deploy(app)
    audio = encode_wav(with_pauses([say(s) for s in SENTENCES] * 2, 1.0))
    codes: list[int] = []
    peak: dict[str, int] = {}

    async def burst(seconds: float) -> None:
        # 16 clients in a closed loop (~16 × 14 s of audio always in flight) until the second
        # replica runs, or for `seconds` at most: a replica's start (Ray worker, model load)
        # takes from a few seconds to over a minute on a loaded 2-core machine.
        deadline = time.monotonic() + seconds
        scaled = asyncio.Event()

        async def client(c: httpx.AsyncClient) -> None:
            while not scaled.is_set() and time.monotonic() < deadline:
                r = await c.post(f"{url}/v1/audio/transcriptions", files={"file": ("s.wav", audio)})
                codes.append(r.status_code)

        async def watch() -> None:
            nonlocal peak
            while time.monotonic() < deadline:
                states = asr_replicas("autoscale")
                if states.get("RUNNING", 0) >= peak.get("RUNNING", 0):
                    peak = states
                if states.get("RUNNING") == 2:
                    scaled.set()
                    return
                await asyncio.sleep(0.5)

        async with httpx.AsyncClient(timeout=120) as c:
            await asyncio.gather(watch(), *(client(c) for _ in range(16)))

    try:
        asyncio.run(burst(240))
        assert peak.get("RUNNING") == 2, f"never reached 2 running ASR replicas: peak {peak}"
        assert codes and set(codes) == {200}, f"requests failed during scale-up: {sorted(set(codes))}"
        # After the burst: back to one replica.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and asr_replicas("autoscale") != {"RUNNING": 1}:
            time.sleep(0.5)
        assert asr_replicas("autoscale") == {"RUNNING": 1}
        # And it still answers.
        assert (
            httpx.post(
                f"{url}/v1/audio/transcriptions", files={"file": ("s.wav", audio)}, timeout=60
            ).status_code
            == 200
        )
    finally:
        serve_cluster.remove("autoscale")
