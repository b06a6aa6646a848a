"""Stage contracts: the small typed messages passed between deployments, and the Protocol
each engine implements. Audio travels as numpy float32 arrays at 16 kHz, never as files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] at ``SAMPLE_RATE``."""

    samples: np.ndarray

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class SpeechSegment:
    """One stretch of speech cut by the VAD, at most ``VadArgs.max_segment_s`` long."""

    start_s: float
    end_s: float
    samples: np.ndarray

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True)
class Segmentation:
    """What the VAD stage hands to ASR: the whole file's duration and its speech segments."""

    duration_s: float
    segments: list[SpeechSegment]


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
    """A transcribed segment with absolute times in the file."""

    start_s: float
    end_s: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    language: str
    duration_s: float
    segments: list[TranscriptSegment]

    @property
    def text(self) -> str:
        parts = [s.text.strip() for s in self.segments if s.text.strip()]
        sep = "" if self.language.startswith("zh") else " "
        return sep.join(parts)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


@runtime_checkable
class AsrEngine(Protocol):
    """An ASR model that transcribes a batch of independent segments in one call."""

    name: str
    supports_hotwords: bool
    supports_words: bool

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
