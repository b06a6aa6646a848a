"""What the job store takes and returns: frozen dataclasses, no SQL, no Ray.

Segments travel as JSON-shaped ``TypedDict``s (``{start_s, end_s, text, words: [...]}``) because
that is how they are stored. ``segment_json`` and ``segment_of`` are the one conversion between
them and ``contracts.TranscriptSegment``; what the API renders is always a
``contracts.Transcript`` (``FileTranscript.transcript``, ``HistoryEntry.transcript``)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NotRequired, TypedDict, TypeVar

from serve_app.contracts import Transcript, TranscriptSegment, Word
from serve_app.jobs.states import FileState, JobState

T = TypeVar("T")


class WordJson(TypedDict):
    start_s: float
    end_s: float
    word: str


class SegmentJson(TypedDict):
    start_s: float
    end_s: float
    text: str
    words: NotRequired[list[WordJson]]


def segment_json(s: TranscriptSegment) -> SegmentJson:
    """A transcript segment as stored (the one conversion to the stored form)."""
    seg: SegmentJson = {"start_s": s.start_s, "end_s": s.end_s, "text": s.text}
    if s.words:
        seg["words"] = [{"start_s": w.start_s, "end_s": w.end_s, "word": w.word} for w in s.words]
    return seg


def segment_of(s: SegmentJson) -> TranscriptSegment:
    """A stored segment as a transcript segment (the one conversion back)."""
    words = [Word(w["start_s"], w["end_s"], w["word"]) for w in s.get("words", [])]
    return TranscriptSegment(s["start_s"], s["end_s"], s["text"], words)


def segments_json(t: Transcript) -> list[SegmentJson]:
    """A transcript's segments as stored."""
    return [segment_json(s) for s in t.segments]


def segments_of(segments: Sequence[SegmentJson]) -> list[TranscriptSegment]:
    """Stored segments as transcript segments."""
    return [segment_of(s) for s in segments]


@dataclass(frozen=True)
class JobOptions:
    """The transcription options of a job (the fields of ``/v1/audio/transcriptions``).

    Stored as JSON, so a later field is added here with a default and needs no migration;
    unknown keys read back from the database are ignored (a rolled-back server still works)."""

    model: str
    language: str | None = None
    prompt: str | None = None
    punctuation: bool | None = None
    itn: bool | None = None
    response_format: str = "json"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "language": self.language,
            "prompt": self.prompt,
            "punctuation": self.punctuation,
            "itn": self.itn,
            "response_format": self.response_format,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobOptions:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class NewFile:
    """A file to transcribe in a new job: an upload already registered with ``UploadStore.add``, or
    (``source_path``) a file of the input folder, read in place and checked against ``sha256``
    when read."""

    name: str
    sha256: str
    duration_s: float | None = None
    """From the header; ``None``: the upload's recorded duration, if any."""
    source_path: str | None = None
    """An input-folder file (absolute path); it never becomes a stored upload."""
    size_bytes: int | None = None
    """Required with ``source_path`` (stored uploads know their size)."""


@dataclass(frozen=True)
class JobQuota:
    """Per-owner limits ``JobRecords.create`` enforces in its transaction (``None``: no limit)."""

    max_live_jobs: int | None = None
    """Jobs queued or running at once."""
    max_queued_audio_s: float | None = None
    """Audio seconds of files pending or running (files of unknown length count 0)."""


@dataclass(frozen=True)
class OwnerUsage:
    """What an owner holds now, against its quotas (``UsageStore.of_owner``)."""

    live_jobs: int
    queued_audio_s: float
    stored_bytes: int
    """Bytes of the stored (not released) uploads the owner made."""


@dataclass(frozen=True)
class Upload:
    sha256: str
    size_bytes: int
    path: str
    """Relative to the data directory; unique per ``UploadStore.add`` call that created the row."""
    created_at: datetime
    released_at: datetime | None = None
    """When the audio was deleted (no unfinished file needed it); the row stays."""
    duration_s: float | None = None


@dataclass(frozen=True)
class Job:
    """A job with its file counts, as the API shows it."""

    id: str
    state: JobState
    options: JobOptions
    metadata: dict[str, Any] | None
    owner: str | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: Mapping[FileState, int]
    """Files by state; every state is present (0 when none)."""
    audio_total_s: float
    """Sum of the known file durations."""
    audio_done_s: float
    """Audio seconds committed so far over all files (a done file counts its whole duration)."""
    durations_known: bool
    """False while some file's duration is unknown: ``audio_total_s`` is then a lower bound."""

    @property
    def files_total(self) -> int:
        return sum(self.counts.values())

    def eta_s(self, now: datetime) -> float | None:
        """Naive remaining time: the audio left at the rate processed since the first claim.
        ``None`` before there is a rate, or while the total is unknown."""
        if self.state.terminal:
            return 0.0
        if self.started_at is None or not self.durations_known or self.audio_done_s <= 0:
            return None
        elapsed = (now - self.started_at).total_seconds()
        if elapsed <= 0:
            return None
        remaining = max(self.audio_total_s - self.audio_done_s, 0.0)
        return remaining * elapsed / self.audio_done_s


@dataclass(frozen=True)
class CreatedJob:
    job: Job
    created: bool
    """False when an idempotency key matched an earlier job, which is returned unchanged."""


@dataclass(frozen=True)
class JobFile:
    id: str
    job_id: str
    position: int
    name: str
    sha256: str
    size_bytes: int
    duration_s: float | None
    state: FileState
    error: str | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    progress_s: float
    """Audio seconds committed so far: where a resumed worker starts its next window."""
    windows: int
    """Windows committed so far: the ``seq`` of the next one."""
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    source_path: str | None = None
    """An input-folder file read in place (see ``NewFile.source_path``)."""


@dataclass(frozen=True)
class Claim:
    """A file a worker now holds, with what it needs to (re)start it.

    ``attempt`` is the fencing token: pass it to every later write for this file."""

    file: JobFile
    options: JobOptions
    upload_path: str
    """Where to read the audio: relative to the data directory for a stored upload, absolute
    for an input-folder file (``in_place``), whose content the worker checks against
    ``file.sha256``."""
    lease_expires_at: datetime

    @property
    def in_place(self) -> bool:
        return self.file.source_path is not None

    @property
    def attempt(self) -> int:
        return self.file.attempts

    @property
    def progress_s(self) -> float:
        return self.file.progress_s


@dataclass(frozen=True)
class Window:
    """One committed stretch of a file's transcript: ``[start_s, end_s)`` of its audio."""

    start_s: float
    end_s: float
    segments: list[SegmentJson]
    language: str | None = None

    @classmethod
    def from_transcript(cls, t: Transcript, start_s: float, end_s: float) -> Window:
        return cls(start_s=start_s, end_s=end_s, segments=segments_json(t), language=t.language)


@dataclass(frozen=True)
class FileTranscript:
    """A file's transcript so far: its committed windows concatenated in audio order."""

    file: JobFile
    language: str | None
    """The language of the first window that named one."""
    segments: list[SegmentJson]
    covered_s: float
    """End of the last committed window (== ``file.progress_s``)."""

    @property
    def complete(self) -> bool:
        return self.file.state is FileState.DONE

    def transcript(self, default_language: str = "") -> Transcript:
        """What the API renders: ``default_language`` (the served model's) when no window
        named one, the file's duration or else the audio covered so far."""
        return Transcript(
            language=self.language or default_language,
            duration_s=self.file.duration_s or self.covered_s,
            segments=segments_of(self.segments),
        )

    @property
    def text(self) -> str:
        return self.transcript().text


@dataclass(frozen=True)
class HistoryEntry:
    """One single (non-batch) transcription kept for the user to find again."""

    id: str
    created_at: datetime
    owner: str | None
    source_name: str | None
    duration_s: float | None
    language: str | None
    model: str | None
    text: str
    segments: list[SegmentJson]

    def transcript(self) -> Transcript:
        """What the API renders (``language`` ``""`` and ``duration_s`` 0 when not recorded)."""
        return Transcript(
            language=self.language or "",
            duration_s=self.duration_s or 0.0,
            segments=segments_of(self.segments),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None
    """Pass back as ``cursor`` for the next page; ``None`` on the last page."""


@dataclass(frozen=True)
class DeletedJob:
    job_id: str
    unreferenced_paths: list[str] = field(default_factory=list)
    """Upload files no job needs any more; their rows are gone, the caller deletes the files."""


@dataclass(frozen=True)
class Usage:
    """Audio transcribed since a moment, and the batch queue now (``UsageStore.since``)."""

    since: datetime
    history_audio_s: float
    """Audio seconds of single transcriptions kept in the history since ``since`` (none are
    kept while the history is off)."""
    history_entries: int
    job_audio_s: float
    """Audio seconds of job windows committed since ``since`` (files still running included)."""
    job_windows: int
    pending_files: int
    """Job files waiting for a worker now (the batch queue's depth)."""
    running_files: int

    @property
    def audio_s(self) -> float:
        return self.history_audio_s + self.job_audio_s


class WriteResult(enum.Enum):
    """Outcome of a fenced write (renew, commit_window, complete, fail, set_duration).

    Truthy only for ``OK``, so ``if not store.queue.renew(...)`` reads naturally; the other values
    tell a worker why it must stop."""

    OK = "ok"
    STALE = "stale"
    """Another claim (a higher attempt) holds the file, it already ended, or it is gone."""
    CANCELLED = "cancelled"
    """The job was cancelled; results committed so far are kept."""

    def __bool__(self) -> bool:
        return self is WriteResult.OK
