"""One local Ray and one Serve instance per test session. Apps are deployed from the real
``deploy/*.yaml`` through the controller, as ``serve run``/``serve deploy`` do, with test
overrides merged in (model paths, names, limits)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve_app.devtools import LocalServe, app_config

ServeCluster = LocalServe


@pytest.fixture(scope="session")
def serve_cluster() -> Iterator[ServeCluster]:
    # More logical CPUs than cores: replicas ask for fractions and mostly wait on I/O.
    # One fake GPU: GPU packing is testable on a CPU-only machine.
    cluster = LocalServe.start(num_cpus=8, num_gpus=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def local_app(serve_cluster: ServeCluster) -> str:
    """deploy/local.yaml as shipped: Whisper tiny.en + FSMN-VAD + English ITN."""
    return serve_cluster.deploy(app_config("local.yaml", "local"))


def funasr_args(tiny_models: dict[str, Path], **limits: float) -> dict[str, Any]:
    return {
        "asr": {
            "engine": "funasr",
            "model": str(tiny_models["paraformer-tiny"]),
            "served_names": ["paraformer-tiny"],
            "language": "zh",
        },
        "postprocess": {"punc_model": str(tiny_models["ct-punc-tiny"]), "itn": True, "itn_language": "zh"},
        "limits": limits or {},
    }


@pytest.fixture(scope="session")
def funasr_app(serve_cluster: ServeCluster, tiny_models: dict[str, Path]) -> str:
    """The FunASR path (random-weight Paraformer + FSMN-VAD + CT-punc + zh ITN) with small
    limits and a tight ingress queue, to exercise 413 and 429."""
    app = app_config(
        "local.yaml",
        "funasr",
        args=funasr_args(tiny_models, max_upload_mb=1, max_audio_s=20),
        deployments={"Ingress": {"max_ongoing_requests": 2, "max_queued_requests": 2}},
    )
    return serve_cluster.deploy(app)


def post_concurrently(url: str, audio: bytes, n: int, timeout_s: float = 300) -> list[httpx.Response]:
    """``n`` transcription requests for ``audio`` sent to ``url`` at once."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=timeout_s) as c:
            return await asyncio.gather(
                *(
                    c.post(f"{url}/v1/audio/transcriptions", files={"file": ("s.wav", audio)})
                    for _ in range(n)
                )
            )

    return asyncio.run(burst())
