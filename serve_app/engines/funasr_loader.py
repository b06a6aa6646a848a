"""Load a FunASR model directory with AutoModel, offline and quietly."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

from serve_app.errors import ModelUnavailable

logger = logging.getLogger(__name__)


def load_automodel(model_dir: Path, device: str, threads: int) -> Any:
    """``AutoModel`` for a local directory. Never touches the network (``disable_update``),
    and refuses checkpoints whose tensors do not match the config: FunASR only prints a
    warning for those and carries on with random weights."""
    os.environ.setdefault("MODELSCOPE_OFFLINE", "1")
    from funasr import AutoModel

    if not (model_dir / "config.yaml").exists() and not (model_dir / "configuration.json").exists():
        raise ModelUnavailable(f"{model_dir} is not a FunASR model directory (no config.yaml)")
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        model = AutoModel(
            model=str(model_dir),
            disable_update=True,
            device=device,
            ncpu=threads,
            disable_pbar=True,
            disable_log=True,
            log_level="ERROR",
        )
    printed = captured.getvalue()
    missing = [line for line in printed.splitlines() if "miss key" in line.lower()]
    if missing:
        raise ModelUnavailable(f"{model_dir}/model.pt does not match its config: {missing[0][:200]}")
    model.model.eval()
    return model
