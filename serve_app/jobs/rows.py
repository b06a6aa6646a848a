"""What more than one store of ``serve_app.jobs`` reads or writes the same way: the states that
count as open or live, a file row as a ``JobFile``, and the columns of a file whose claim ends."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row

from serve_app.jobs.models import JobFile
from serve_app.jobs.states import FileState, JobState

OPEN = (FileState.PENDING.value, FileState.RUNNING.value)
"""File states that still need their audio (not ended)."""
LIVE_JOB = (JobState.QUEUED.value, JobState.RUNNING.value)
"""Job states that have not ended."""


def file_of(r: Row[Any]) -> JobFile:
    return JobFile(
        id=r.id,
        job_id=r.job_id,
        position=r.position,
        name=r.name,
        sha256=r.sha256,
        size_bytes=r.size_bytes,
        duration_s=r.duration_s,
        state=FileState(r.state),
        error=r.error,
        attempts=r.attempts,
        lease_owner=r.lease_owner,
        lease_expires_at=r.lease_expires_at,
        progress_s=r.progress_s,
        windows=r.windows,
        created_at=r.created_at,
        updated_at=r.updated_at,
        finished_at=r.finished_at,
        source_path=r.source_path,
    )


def released(state: FileState, now: datetime) -> dict[str, Any]:
    """The columns of a file whose claim ends in ``state``: no lease, and finished unless it
    goes back to pending."""
    return {
        "state": state.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": None if state is FileState.PENDING else now,
        "updated_at": now,
    }
