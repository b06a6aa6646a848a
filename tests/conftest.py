"""Fixtures shared by every layer. Tests never read the developer's environment."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tools.audio import speak
from tools.local_serve import LocalServe, app_config

# Tests own their environment: no cluster address, no auth token, no user model dir.
os.environ.pop("RAY_ADDRESS", None)
os.environ["RAY_AUTH_MODE"] = "disabled"
for key in [k for k in os.environ if k.startswith("FUNASR_SERVE_")]:
    os.environ.pop(key)


@pytest.fixture(scope="session")
def say() -> Callable[[str], np.ndarray]:
    """Factory: English text → espeak-ng speech at 16 kHz."""
    return speak


@pytest.fixture(scope="session")
def beckett_wav() -> Path:
    """Public-domain human speech (10 s, 16 kHz) shipped in the useful-moonshine-onnx wheel:
    "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better." """
    spec = importlib.util.find_spec("moonshine_onnx")
    assert spec and spec.submodule_search_locations, "useful-moonshine-onnx is not installed (make install)"
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "beckett.wav"
    assert path.exists(), path
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight FunASR models of the real architectures (Paraformer, CT-punc)."""
    from tools.tiny_models import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("models"))


# --- one local Ray and one Serve instance per test session -------------------------------------
# Apps are deployed from the real ``deploy/*.yaml`` through the controller, as ``serve run`` /
# ``serve deploy`` do, with test overrides merged in (model paths, names, limits). Shared by
# tests/integration and tests/browser, so that a run of both starts Ray once.


@pytest.fixture(scope="session")
def serve_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServe]:
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
def local_app(serve_cluster: LocalServe) -> str:
    """deploy/local.yaml as shipped: Whisper tiny.en + FSMN-VAD + English ITN."""
    return serve_cluster.deploy(app_config("local.yaml", "local"))
