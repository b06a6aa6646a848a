"""Retention (the job runner's hourly housekeeping), Ray-free on a real SQLite store with a
settable clock: what is past its time goes, with its files; what is live or recent stays."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from serve_app.jobs import JobOptions, JobStore, NewFile, upgrade
from serve_app.jobs.housekeeping import Swept, housekeep
from serve_app.settings import StorageArgs


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, days: float) -> None:
        self.now += timedelta(days=days)


def storage(data_dir: Path, history_days: float = 30, job_days: float = 30) -> StorageArgs:
    return StorageArgs(
        data_dir=data_dir,
        database=str(data_dir / "db.sqlite"),
        input_dir=None,
        history=True,
        history_retention_days=history_days,
        job_retention_days=job_days,
        keep_job_audio=True,
    )


def upload(store: JobStore, data_dir: Path, content: bytes) -> tuple[str, Path]:
    """A stored upload: its file under ``uploads/`` and its row."""
    sha = hashlib.sha256(content).hexdigest()
    rel = f"uploads/{sha[:2]}/{sha}"
    path = data_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    store.uploads.add(sha, len(content), rel)
    return sha, path


def job_of(store: JobStore, sha: str, done: bool) -> str:
    job = store.jobs.create([NewFile(name="a.wav", sha256=sha)], JobOptions(model="m")).job
    if done:
        claim = store.queue.claim("w", 60)
        assert claim is not None and store.queue.complete(claim.file.id, claim.attempt)
    return job.id


def test_what_is_past_retention_goes_with_its_files_and_the_rest_stays(tmp_path: Path) -> None:
    upgrade(tmp_path / "db.sqlite")
    clock = Clock()
    store = JobStore(tmp_path / "db.sqlite", clock=clock)
    old_sha, old_file = upload(store, tmp_path, b"old, done")
    old_job = job_of(store, old_sha, done=True)
    live_sha, live_file = upload(store, tmp_path, b"old, still queued")
    live_job = job_of(store, live_sha, done=False)
    _, never_attached = upload(store, tmp_path, b"uploaded, never in a job")
    store.history.add(text="said long ago", owner=None, duration_s=1.0)
    clock.advance(31)
    _, fresh_upload = upload(store, tmp_path, b"uploaded a moment ago")
    store.history.add(text="said today", owner=None, duration_s=1.0)

    swept = housekeep(store, storage(tmp_path))

    assert swept == Swept(history_entries=1, jobs=1, files=2), swept
    assert not old_file.exists() and not never_attached.exists()
    assert live_file.exists() and fresh_upload.exists()
    assert [j.id for j in store.jobs.find().items] == [live_job], old_job
    assert [e.text for e in store.history.search(None, limit=10).items] == ["said today"]
    assert housekeep(store, storage(tmp_path)) == Swept(), "a second sweep found more"


def test_a_retention_of_zero_keeps_for_ever(tmp_path: Path) -> None:
    upgrade(tmp_path / "db.sqlite")
    clock = Clock()
    store = JobStore(tmp_path / "db.sqlite", clock=clock)
    sha, path = upload(store, tmp_path, b"kept")
    job_of(store, sha, done=True)
    store.history.add(text="kept", owner=None, duration_s=1.0)
    clock.advance(3650)
    assert housekeep(store, storage(tmp_path, history_days=0, job_days=0)) == Swept()
    assert path.exists() and len(store.jobs.find().items) == 1
