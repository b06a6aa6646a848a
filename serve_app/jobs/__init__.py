"""Batch transcription jobs and transcription history: the durable store (SQLite or
PostgreSQL), its schema migrations and the job/file state machine. No Ray in here: the job
runner deployment and the HTTP API build on ``JobStore`` (``.uploads``, ``.jobs``, ``.queue``,
``.history``, ``.usage``: see ``serve_app.jobs.store``)."""

from __future__ import annotations

from serve_app.jobs.db import Database
from serve_app.jobs.errors import (
    FileNotFound,
    HistoryNotFound,
    InvalidCursor,
    JobNotFound,
    UploadMissing,
    WindowOutOfOrder,
)
from serve_app.jobs.history import HistoryStore
from serve_app.jobs.migrate import upgrade
from serve_app.jobs.models import (
    Claim,
    CreatedJob,
    DeletedJob,
    FileTranscript,
    HistoryEntry,
    Job,
    JobFile,
    JobOptions,
    JobQuota,
    NewFile,
    OwnerUsage,
    Page,
    SegmentJson,
    Upload,
    Usage,
    Window,
    WordJson,
    WriteResult,
)
from serve_app.jobs.queue import WorkQueue
from serve_app.jobs.records import JobRecords
from serve_app.jobs.states import FileState, JobState
from serve_app.jobs.store import JobStore
from serve_app.jobs.uploads import UploadStore
from serve_app.jobs.usage import UsageStore

__all__ = [
    "Claim",
    "CreatedJob",
    "Database",
    "DeletedJob",
    "FileNotFound",
    "FileState",
    "FileTranscript",
    "HistoryEntry",
    "HistoryNotFound",
    "HistoryStore",
    "InvalidCursor",
    "Job",
    "JobFile",
    "JobNotFound",
    "JobOptions",
    "JobQuota",
    "JobRecords",
    "JobState",
    "JobStore",
    "NewFile",
    "OwnerUsage",
    "Page",
    "SegmentJson",
    "Upload",
    "UploadMissing",
    "UploadStore",
    "Usage",
    "UsageStore",
    "Window",
    "WindowOutOfOrder",
    "WordJson",
    "WorkQueue",
    "WriteResult",
    "upgrade",
]
