"""One local Ray and one Serve instance per test session. Apps are deployed from the real
``deploy/*.yaml`` through the controller, as ``serve run``/``serve deploy`` do, with test
overrides merged in (model paths, names, limits)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import funasr_args
from tools.local_serve import LocalServe, app_config

ServeCluster = LocalServe


@pytest.fixture(scope="session")
def serve_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeCluster]:
    # More logical CPUs than cores: replicas ask for fractions and mostly wait on I/O; the
    # session keeps several apps of 2-3 logical CPUs each alive at once.
    # One fake GPU: GPU packing is testable on a CPU-only machine.
    cluster = LocalServe.start(num_cpus=16, num_gpus=1)
    cluster.data_root = tmp_path_factory.mktemp("data")  # each app: its own jobs database
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def local_app(serve_cluster: ServeCluster) -> str:
    """deploy/local.yaml as shipped: Whisper tiny.en + FSMN-VAD + English ITN."""
    return serve_cluster.deploy(app_config("local.yaml", "local"))


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
