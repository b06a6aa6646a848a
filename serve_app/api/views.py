"""Every JSON view of what the store holds (a job, a job's file, a history entry, the usage
of the day, a page of them) and the one timestamp format, in one place: a new field shows up
in every route that shows the object. Transcripts are rendered by ``serve_app.formats`` from a
``contracts.Transcript`` (``FileTranscript.transcript``, ``HistoryEntry.transcript``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from serve_app.contracts import Transcript
from serve_app.formats import MEDIA_TYPES, ResponseFormat, render
from serve_app.jobs import FileState, HistoryEntry, Job, JobFile, Page, Usage

T = TypeVar("T")


@overload
def timestamp(t: datetime) -> str: ...
@overload
def timestamp(t: None) -> None: ...
def timestamp(t: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` (``2025-01-31T12:00:00.123456Z``); ``None`` stays ``None``."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def transcript_response(
    t: Transcript, fmt: ResponseFormat, words: bool, verbose: dict[str, Any] | None = None
) -> Response:
    """A transcript in a response format; ``verbose``: fields added to ``verbose_json`` only."""
    body = render(t, fmt, words)
    if isinstance(body, dict):
        return JSONResponse({**body, **verbose} if verbose and fmt == "verbose_json" else body)
    return PlainTextResponse(body, media_type=MEDIA_TYPES[fmt])


def page_json(page: Page[T], item: Callable[[T], dict[str, Any]]) -> dict[str, Any]:
    """A listing: ``{"object": "list", "data": [...], "next_cursor"}``."""
    return {"object": "list", "data": [item(x) for x in page.items], "next_cursor": page.next_cursor}


def job_json(job: Job) -> dict[str, Any]:
    counts = {state.value: job.counts.get(state, 0) for state in FileState}
    return {
        "id": job.id,
        "object": "job",
        "state": job.state.value,
        "owner": job.owner,  # the label of the API key that created it (null without keys)
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "finished_at": timestamp(job.finished_at),
        "options": job.options.to_json(),
        "metadata": job.metadata,
        "files": {"total": sum(counts.values()), **counts},
        "audio_seconds": {
            "total": round(job.audio_total_s, 3),
            "done": round(job.audio_done_s, 3),
            "total_known": job.durations_known,
        },
        "eta_s": None if (eta := job.eta_s(datetime.now(UTC))) is None else round(eta, 1),
    }


def file_json(f: JobFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "job.file",
        "name": f.name,
        "sha256": f.sha256,
        "size_bytes": f.size_bytes,
        "duration_s": f.duration_s,
        "state": f.state.value,
        "error": f.error,
        "attempts": f.attempts,
        "progress_s": round(f.progress_s, 3),
        "created_at": timestamp(f.created_at),
        "finished_at": timestamp(f.finished_at),
    }


def entry_json(e: HistoryEntry, segments: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": e.id,
        "object": "history.entry",
        "created_at": timestamp(e.created_at),
        "owner": e.owner,  # the label of the API key that made it (null without keys)
        "source_name": e.source_name,
        "duration_s": e.duration_s,
        "language": e.language,
        "model": e.model,
        "text": e.text,
    }
    if segments:
        body["segments"] = e.segments
    return body


def usage_json(u: Usage) -> dict[str, Any]:
    return {
        "since": timestamp(u.since),
        "audio_hours": round(u.audio_s / 3600, 4),
        "history_audio_s": round(u.history_audio_s, 3),
        "history_entries": u.history_entries,
        "job_audio_s": round(u.job_audio_s, 3),
        "job_windows": u.job_windows,
    }
