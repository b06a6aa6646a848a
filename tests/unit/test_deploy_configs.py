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
STAGES = {"Ingress", "Decode", "VAD", "ASR", "Postprocess", "Streaming", "JobRunner"}


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


def test_gpu_config_packs_two_asr_replicas_and_streaming_on_one_card() -> None:
    app = serve_configs()["gpu-24gb.yaml"]["applications"][0]
    by_name = {d["name"]: d for d in app["deployments"]}
    asr, streaming = by_name["ASR"], by_name["Streaming"]
    gpus = (
        asr["num_replicas"] * asr["ray_actor_options"]["num_gpus"]
        + streaming["ray_actor_options"]["num_gpus"]
    )
    assert asr["num_replicas"] == 2 and gpus <= 1.0, gpus
    assert app["args"]["asr"]["engine"] == "funasr" and app["args"]["postprocess"]["punc_model"] == "ct-punc"
