"""Stage contracts: the small typed messages passed between deployments, and the Protocol
each engine implements. Audio travels as numpy float32 arrays at 16 kHz, never as files."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

SAMPLE_RATE = 16_000


class Priority(enum.IntEnum):
    """Classes of the ASR queue: a lower value is served first."""

    INTERACTIVE = 0
    """HTTP requests and realtime finals: someone is waiting."""
    BATCH = 1
    """Batch-job work: throughput matters, latency does not."""


@dataclass(frozen=True)
class AudioSource:
    """What the decode stage reads: upload bytes, or a file on a volume every replica sees
    (batch jobs), optionally only the window ``[start_s, start_s + duration_s)``."""

    data: bytes | None = None
    path: Path | None = None
    start_s: float = 0.0
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if (self.data is None) == (self.path is None):
            raise ValueError("an AudioSource has either data or a path")


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] at ``SAMPLE_RATE``.

    ``offset_s`` is where the samples start in the whole recording (non-zero for a window);
    ``complete`` is False when a window was cut short of the recording's end, so speech that
    runs into its last sample may continue in the next window."""

    samples: np.ndarray
    offset_s: float = 0.0
    complete: bool = True

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class SpeechSegment:
    """One stretch of speech cut by the VAD, at most ``VadArgs.max_segment_s`` long; times are
    absolute in the recording."""

    start_s: float
    end_s: float
    samples: np.ndarray

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class Segmentation:
    """What the VAD stage hands to ASR.

    ``duration_s`` is the audio covered (for a window: up to ``next_start_s``).
    ``next_start_s`` is ``None`` when the recording ends here; for a window cut short of the
    end it is where the next window starts: the cut, or the start of speech that ran into the
    cut (left out here so that no segment is cut mid-word)."""

    duration_s: float
    segments: list[SpeechSegment]
    offset_s: float = 0.0
    next_start_s: float | None = None


@dataclass(frozen=True)
class AsrOptions:
    """Per-request options that reach the ASR engine."""

    language: str | None = None
    hotwords: str | None = None
    """The OpenAI ``prompt`` field: hotwords for models that support them, an initial
    prompt for Whisper, ignored otherwise."""
    word_timestamps: bool = False


@dataclass(frozen=True)
class PostOptions:
    """Per-request switches of the punctuation + ITN stage (``None`` = configured default)."""

    punctuation: bool | None = None
    itn: bool | None = None


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything a caller of the pipeline chooses per request."""

    asr: AsrOptions = field(default_factory=AsrOptions)
    post: PostOptions = field(default_factory=PostOptions)
    priority: Priority = Priority.INTERACTIVE


@dataclass(frozen=True)
class Word:
    start_s: float
    end_s: float
    word: str


@dataclass(frozen=True)
class AsrResult:
    """An engine's output for one segment; times are relative to the segment start."""

    text: str
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class TranscriptSegment:
    """A transcribed segment with absolute times in the recording."""

    start_s: float
    end_s: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    language: str
    duration_s: float
    segments: list[TranscriptSegment]
    offset_s: float = 0.0
    next_start_s: float | None = None
    """Carried over from ``Segmentation`` for windows (see there)."""

    @property
    def text(self) -> str:
        parts = [s.text.strip() for s in self.segments if s.text.strip()]
        sep = "" if self.language.startswith("zh") else " "
        return sep.join(parts)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


@dataclass(frozen=True)
class ServedModel:
    """What the API layer knows about the served ASR model without loading it."""

    names: list[str]
    language: str
    languages: list[str]


@runtime_checkable
class AsrEngine(Protocol):
    """An ASR model that transcribes a batch of independent segments in one call."""

    name: str
    supports_hotwords: bool
    supports_words: bool
    parallelism: int
    """How many ``transcribe_batch`` calls may run at once (from different threads)."""

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], options: Sequence[AsrOptions]
    ) -> list[AsrResult]:
        """One result per input, in order. Must not depend on what else is in the batch."""
        ...


@runtime_checkable
class VadEngine(Protocol):
    def segment(self, audio: DecodedAudio) -> list[SpeechSegment]: ...


@runtime_checkable
class TextStage(Protocol):
    """Punctuation or ITN: text in, text out, one per input."""

    def process(self, texts: Sequence[str]) -> list[str]: ...
