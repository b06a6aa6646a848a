"""One local Ray and one Serve instance per test session. Apps are deployed from the real
``deploy/*.yaml`` through the controller, as ``serve run``/``serve deploy`` do, with test
overrides merged in (model paths, names, limits)."""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def app_config(yaml_name: str, name: str, args: dict[str, Any] | None = None, deployments: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The first application of ``deploy/<yaml_name>``, renamed and served under ``/<name>``."""
    app = yaml.safe_load((ROOT / "deploy" / yaml_name).read_text())["applications"][0]
    app = merge(app, {"name": name, "route_prefix": f"/{name}", "args": args or {}})
    for d in app.get("deployments", []):
        d.update(copy.deepcopy((deployments or {}).get(d["name"], {})))
    return app


@dataclass
class ServeCluster:
    port: int
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)

    def url(self, app: str) -> str:
        return f"http://127.0.0.1:{self.port}/{app}"

    def _apply(self) -> None:
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        _get_global_client().deploy_apps(ServeDeploySchema.model_validate({"applications": list(self.apps.values())}))

    def deploy(self, app: dict[str, Any], timeout_s: float = 300) -> str:
        """Deploy (or keep) ``app`` and wait until it is RUNNING; returns its base URL."""
        from ray import serve

        name = app["name"]
        if self.apps.get(name) != app:
            self.apps[name] = app
            self._apply()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = serve.status().applications.get(name)
            if status is not None and status.status == "RUNNING":
                return self.url(name)
            if status is not None and status.status == "DEPLOY_FAILED":
                raise AssertionError(f"{name} failed to deploy: {status.message}")
            time.sleep(0.5)
        raise AssertionError(f"{name} not running after {timeout_s} s: {serve.status().applications.get(name)}")

    def remove(self, name: str) -> None:
        from ray import serve

        self.apps.pop(name, None)
        self._apply()
        deadline = time.monotonic() + 60
        while name in serve.status().applications and time.monotonic() < deadline:
            time.sleep(0.5)


@pytest.fixture(scope="session")
def serve_cluster() -> Iterator[ServeCluster]:
    import ray
    from ray import serve
    from ray.serve._private import api as serve_api

    # More logical CPUs than cores: replicas ask for fractions and mostly wait on I/O.
    # One fake GPU: GPU packing is testable on a CPU-only machine.
    ray.init(
        num_cpus=8,
        num_gpus=1,
        object_store_memory=300 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
        namespace="funasr-serve-tests",
    )
    port = _free_port()
    serve_api.serve_start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield ServeCluster(port=port)
    finally:
        serve.shutdown()
        ray.shutdown()


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
