"""Model resolution: embedded weights, local directories, fast offline failure."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from serve_app.errors import ModelUnavailable
from serve_app.model_paths import download, resolve
from serve_app.settings import Settings


def test_embedded_models_resolve_to_real_weights() -> None:
    vad = resolve("embedded:fsmn-vad")
    assert (vad / "model.pt").stat().st_size > 100_000 and (vad / "am.mvn").exists()
    whisper = resolve("embedded:whisper-tiny.en")
    assert (whisper / "model.bin").stat().st_size > 10_000_000


def test_local_directory_and_model_dir(tmp_path: Path) -> None:
    (tmp_path / "iic" / "speech_fsmn_vad_zh-cn-16k-common-pytorch").mkdir(parents=True)
    settings = Settings(model_dir=tmp_path)
    assert (
        resolve("fsmn-vad", settings) == (tmp_path / "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch").resolve()
    )
    assert resolve(str(tmp_path), settings) == tmp_path.resolve()


def test_hub_name_offline_fails_fast_with_instructions(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="make models"):
        resolve("paraformer-zh", Settings(model_dir=tmp_path))
    assert time.monotonic() - start < 1.0


def test_download_fails_fast_when_hub_unreachable(tmp_path: Path) -> None:
    # A closed loopback port stands in for an unreachable hub: no traffic leaves the host.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(
        model_dir=tmp_path, allow_download=True, hub_host="127.0.0.1", hub_port=port, hub_timeout_s=2
    )
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="offline"):
        download("paraformer-zh", settings)
    assert time.monotonic() - start < 3.0


def test_unknown_embedded_and_missing_dir() -> None:
    with pytest.raises(ModelUnavailable, match="unknown embedded"):
        resolve("embedded:nope")
    with pytest.raises(ModelUnavailable, match="does not exist"):
        resolve("/nonexistent/model/dir")
