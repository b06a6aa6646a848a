"""Apps of the integration tests. The local Ray and Serve of the session (``serve_cluster``)
and ``local_app`` live in ``tests/conftest.py``: the browser tests deploy on the same ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import funasr_args
from tools.local_serve import LocalServe, app_config

ServeCluster = LocalServe


@pytest.fixture(scope="session")
def funasr_app(serve_cluster: ServeCluster, tiny_models: dict[str, Path]) -> str:
    """The FunASR path (random-weight Paraformer + FSMN-VAD + CT-punc + zh ITN) with small
    limits and a tight ingress queue, to exercise 413 and 429."""
    app = app_config(
        "local.yaml",
        "funasr",
        args=funasr_args(tiny_models, max_upload_mb=1, max_request_audio_s=20),
        deployments={"Ingress": {"max_ongoing_requests": 2, "max_queued_requests": 2}},
    )
    return serve_cluster.deploy(app)
