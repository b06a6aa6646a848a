"""Retention, Ray-free: what the job runner does every ``HOUSEKEEPING_S`` (history entries and
ended jobs past their retention, uploads no job ever took), with the files that go."""

from __future__ import annotations

from dataclasses import dataclass

from serve_app.jobs import blobs
from serve_app.jobs.store import JobStore
from serve_app.settings import StorageArgs

HOUSEKEEPING_S = 3600.0
"""How often the job runner runs ``housekeep``."""
UNATTACHED_UPLOAD_S = 86400.0
"""An upload no job references is forgotten (and its file deleted) after this long: the grace
covers an upload on its way into ``JobRecords.create``."""


@dataclass(frozen=True)
class Swept:
    """What one ``housekeep`` removed."""

    history_entries: int = 0
    jobs: int = 0
    files: int = 0


def housekeep(store: JobStore, storage: StorageArgs) -> Swept:
    """Delete what retention says has had its time (a retention of 0 keeps for ever) and the
    audio files nothing needs any more; blocking."""
    entries = jobs = files = 0
    if storage.history_retention_days > 0:
        entries = store.history.purge(storage.history_retention_days * 86400)
    if storage.job_retention_days > 0:
        for deleted in store.jobs.purge(storage.job_retention_days * 86400):
            blobs.remove(storage.data_dir, deleted.unreferenced_paths)
            jobs += 1
            files += len(deleted.unreferenced_paths)
    unattached = store.uploads.delete_unreferenced(UNATTACHED_UPLOAD_S)
    blobs.remove(storage.data_dir, unattached)
    return Swept(history_entries=entries, jobs=jobs, files=files + len(unattached))
