"""An ``ApiContext`` for driving routes in process (Starlette's ``TestClient``) with stand-in
stage handles instead of Ray: the unit layer's way to test route logic."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from serve_app.api.context import ApiContext
from serve_app.config import JobsArgs, LimitsArgs, RealtimeArgs, RetryArgs
from serve_app.contracts import ServedModel
from serve_app.jobs import JobStore
from serve_app.stages import Stages

NOTHING = cast(Any, None)
"""A stage no route of the test calls."""


def api_context(data_dir: Path, *, streaming: Any = NOTHING, **fields: Any) -> ApiContext:
    """A context over stand-in stages (``streaming``: a fake Streaming handle, if the test opens
    realtime sockets); ``fields`` override any other ``ApiContext`` field. Without a ``store``,
    a SQLite store of its own in ``data_dir``."""
    if "store" not in fields:
        data_dir.mkdir(parents=True, exist_ok=True)
        fields["store"] = JobStore.open(data_dir / "stand-in.db")
    stages = Stages(decode=NOTHING, vad=NOTHING, asr=NOTHING, post=NOTHING, streaming=streaming)
    defaults: dict[str, Any] = {
        "pipeline": stages.pipeline(RetryArgs()),
        "stages": stages,
        "served": ServedModel(names=["whisper-1"], language="en", languages=["en"]),
        "limits": LimitsArgs(),
        "streaming": streaming,
        "realtime": RealtimeArgs(idle_timeout_s=5),  # a route left waiting fails fast
        "jobs": JobsArgs(),
        "data_dir": data_dir,
        "input_dir": None,
        "keep_history": True,
    }
    return ApiContext(**{**defaults, **fields})
