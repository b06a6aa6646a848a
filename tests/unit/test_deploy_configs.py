"""Every shipped Serve config validates against Serve's schema and our models (``PipelineArgs``
for ``args``, the strict ``BatchConfig`` for the ASR ``user_config``) and names deployments the
graph actually has; the checker itself refuses a misspelt key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

from serve_app.config import BatchConfig, PipelineArgs

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
STAGES = {"Ingress", "Decode", "VAD", "ASR", "Postprocess", "Streaming", "JobRunner"}
RECONFIGURABLE = {"ASR": BatchConfig}
"""The deployments that take a ``user_config``, and its model."""


def serve_configs() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        out[path.name] = (
            yaml.safe_load(doc["spec"]["serveConfigV2"]) if doc.get("kind") == "RayService" else doc
        )
    return out


def check_app(app: ServeApplicationSchema) -> None:
    """What a deploy of ``app`` would refuse, raised here instead."""
    assert app.import_path == "serve_app.app:build_app"
    PipelineArgs.model_validate(app.args)
    names = {d.name for d in app.deployments}
    assert names <= STAGES, names - STAGES
    for d in app.deployments:
        user_config = d.model_dump(exclude_unset=True).get("user_config")
        if user_config is None:
            continue
        model = RECONFIGURABLE.get(d.name)
        assert model is not None, f"{d.name} takes no user_config"
        model.model_validate(user_config)


def gpu_share_per_card(app: dict[str, Any]) -> float:
    """GPU fractions the fixed-size deployments of ``app`` ask for together."""
    total = 0.0
    for d in app["deployments"]:
        gpus = float(d.get("ray_actor_options", {}).get("num_gpus", 0))
        total += gpus * int(d.get("num_replicas", 1))
    return total


@pytest.mark.parametrize("name", list(serve_configs()))
def test_config_is_valid(name: str) -> None:
    for app in ServeDeploySchema.model_validate(serve_configs()[name]).applications:
        check_app(app)


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda d: d.update(max_batch_cout=8), id="misspelt-batch-key"),
        pytest.param(lambda d: d.update(max_batch_count=0), id="batch-count-zero"),
        pytest.param(lambda d: d.update(min_fill=1.5), id="fill-over-one"),
    ],
)
def test_a_bad_user_config_is_refused(break_it: Any) -> None:
    config = copy.deepcopy(serve_configs()["local.yaml"])
    asr = next(d for d in config["applications"][0]["deployments"] if d["name"] == "ASR")
    break_it(asr["user_config"])
    (app,) = ServeDeploySchema.model_validate(config).applications
    with pytest.raises(ValidationError):
        check_app(app)


def test_user_config_on_a_stage_without_reconfigure_is_refused() -> None:
    config = copy.deepcopy(serve_configs()["local.yaml"])
    vad = next(d for d in config["applications"][0]["deployments"] if d["name"] == "VAD")
    vad["user_config"] = {"max_batch_count": 4}
    (app,) = ServeDeploySchema.model_validate(config).applications
    with pytest.raises(AssertionError, match="VAD takes no user_config"):
        check_app(app)


def test_gpu_config_fits_one_card() -> None:
    # gpu-24gb.yaml promises one card: every fixed replica's GPU share together must fit it.
    (app,) = serve_configs()["gpu-24gb.yaml"]["applications"]
    assert 0 < gpu_share_per_card(app) <= 1.0, gpu_share_per_card(app)


@pytest.mark.parametrize(
    ("section", "old", "new"),
    [
        ("vad", "window_s", "segmentation_window_s"),
        ("jobs", "window_s", "commit_window_s"),
        ("jobs", "max_audio_s", "max_file_audio_s"),
        ("limits", "max_audio_s", "max_request_audio_s"),
    ],
)
def test_a_renamed_setting_still_works_with_a_warning(
    section: str, old: str, new: str, caplog: pytest.LogCaptureFixture
) -> None:
    (app,) = serve_configs()["local.yaml"]["applications"]
    args = copy.deepcopy(app["args"])
    args.setdefault(section, {}).pop(new, None)
    args[section][old] = 120.0
    with caplog.at_level("WARNING", logger="serve_app.config"):
        parsed = PipelineArgs.model_validate(args)
    assert getattr(getattr(parsed, section), new) == 120.0
    assert any(old in r.getMessage() and new in r.getMessage() for r in caplog.records), caplog.text
    args[section][new] = 120.0
    with pytest.raises(ValidationError, match="give only"):
        PipelineArgs.model_validate(args)
