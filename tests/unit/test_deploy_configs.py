"""Every shipped Serve config validates against Serve's schema and our PipelineArgs, and
names deployments the graph actually has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.config import PipelineArgs

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
STAGES = {"Ingress", "Decode", "VAD", "ASR", "Postprocess"}


def serve_configs() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        out[path.name] = (
            yaml.safe_load(doc["spec"]["serveConfigV2"]) if doc.get("kind") == "RayService" else doc
        )
    return out


@pytest.mark.parametrize("name", list(serve_configs()))
def test_config_is_valid(name: str) -> None:
    config = ServeDeploySchema.model_validate(serve_configs()[name])
    for app in config.applications:
        assert app.import_path == "serve_app.app:build_app"
        PipelineArgs.model_validate(app.args)
        assert {d.name for d in app.deployments} <= STAGES


def test_gpu_config_packs_two_asr_replicas_per_card() -> None:
    app = serve_configs()["gpu-24gb.yaml"]["applications"][0]
    asr = next(d for d in app["deployments"] if d["name"] == "ASR")
    assert asr["num_replicas"] == 2 and asr["ray_actor_options"]["num_gpus"] == 0.5
    assert app["args"]["asr"]["engine"] == "funasr" and app["args"]["postprocess"]["punc_model"] == "ct-punc"
