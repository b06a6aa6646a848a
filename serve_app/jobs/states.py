"""The job/file state machine, kept apart from SQL so the rules read in one place.

Files move ``pending → running → done | failed``; ``running → pending`` only when a worker gives
a file back for a retry (``WorkQueue.fail(..., retry=True)``), and ``pending | running →
cancelled`` when the job is cancelled. A worker that died leaves its file ``running`` with an
expired lease; the next ``claim`` takes it over directly (there is no start-up reset).

A job's state is derived from its files after every file transition (``derive_job_state``);
only ``cancelled`` is set directly, and it is final.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class JobState(enum.StrEnum):
    QUEUED = "queued"
    """No file has been claimed yet."""
    RUNNING = "running"
    """Some file was claimed at least once and some file has not ended."""
    COMPLETED = "completed"
    """Every file ended and at least one is done (others may have failed: see the counts)."""
    FAILED = "failed"
    """Every file failed."""
    CANCELLED = "cancelled"
    """``cancel`` was called before the job ended; results committed so far are kept."""

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class FileState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    """Claimed by a worker; ``lease_expires_at`` says until when the claim holds unrenewed."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in (FileState.DONE, FileState.FAILED, FileState.CANCELLED)


def derive_job_state(counts: Mapping[FileState, int], any_claimed: bool) -> JobState:
    """The state of a job that was not cancelled, from its files' states.

    ``any_claimed``: some file was claimed at least once (a file handed back for a retry is
    ``pending`` again, yet its job has started)."""
    open_ = counts.get(FileState.PENDING, 0) + counts.get(FileState.RUNNING, 0)
    ended = sum(counts.get(s, 0) for s in (FileState.DONE, FileState.FAILED, FileState.CANCELLED))
    if open_ == 0 and ended > 0:
        return JobState.COMPLETED if counts.get(FileState.DONE, 0) > 0 else JobState.FAILED
    if any_claimed or ended > 0 or counts.get(FileState.RUNNING, 0) > 0:
        return JobState.RUNNING
    return JobState.QUEUED
