"""The job worker, Ray-free: a real store on SQLite, the pipeline replaced by a stand-in that
records what it was asked to read. Input-folder files are checked against the hash taken when
the job was made; a file's audio is capped by the seconds decoded, not by its header."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from serve_app.config import JobsArgs
from serve_app.contracts import AudioSource, TranscribeOptions, Transcript, TranscriptSegment
from serve_app.errors import InternalError, Overloaded, UnsupportedAudio
from serve_app.jobs import FileState, JobOptions, JobStore, NewFile, upgrade
from serve_app.jobs.worker import JobWorker


class Reader:
    """Stands in for the pipeline: a window of ``length_s`` seconds (``None``: endless, as a
    stream whose header tells nothing), and the bytes of the file it was asked to read."""

    def __init__(self, length_s: float | None = 30.0) -> None:
        self.length_s = length_s
        self.read: list[bytes] = []

    async def __call__(self, source: AudioSource, opts: TranscribeOptions) -> Transcript:
        assert source.path is not None and source.duration_s is not None
        self.read.append(source.path.read_bytes())
        end = source.start_s + source.duration_s
        more = self.length_s is None or end < self.length_s
        if not more and self.length_s is not None:
            end = self.length_s
        return Transcript(
            language="en",
            duration_s=end - source.start_s,
            segments=[TranscriptSegment(source.start_s, end, "words")],
            offset_s=source.start_s,
            next_start_s=end if more else None,
        )


def setup(tmp_path: Path, content: bytes, **jobs: float) -> tuple[JobStore, Path, str]:
    upgrade(tmp_path / "db.sqlite")
    store = JobStore(tmp_path / "db.sqlite")
    path = tmp_path / "input" / "a.wav"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    sha = hashlib.sha256(content).hexdigest()
    new = NewFile("a.wav", sha, source_path=str(path), size_bytes=len(content))
    store.jobs.create([new], JobOptions(model="m"))
    return store, path, sha


def run_one(store: JobStore, tmp_path: Path, reader: Reader, **jobs: float) -> None:
    args = JobsArgs(commit_window_s=60, lease_s=30, **jobs)  # type: ignore[arg-type]
    worker = JobWorker(store, reader, args, tmp_path, "w", probe_duration=lambda p: None)
    claim = store.queue.claim("w", 30)
    assert claim is not None
    asyncio.run(worker.process(claim))


def only_file(store: JobStore) -> tuple[FileState, str | None]:
    job = store.jobs.find().items[0]
    f = store.jobs.list_files(job.id).items[0]
    return f.state, f.error


def test_an_input_file_swapped_after_the_job_was_made_fails_unread(tmp_path: Path) -> None:
    store, path, _ = setup(tmp_path, b"RIFF original recording")
    path.write_bytes(b"RIFF someone else's call")  # swapped in the folder before a worker ran
    reader = Reader()
    run_one(store, tmp_path, reader)
    state, error = only_file(store)
    assert state is FileState.FAILED and error and "changed after the job was made" in error, error
    assert reader.read == [], "the other content was transcribed"


def test_an_input_file_swapped_between_windows_fails(tmp_path: Path) -> None:
    store, path, _ = setup(tmp_path, b"RIFF original recording")

    class Swapping(Reader):
        async def __call__(self, source: AudioSource, opts: TranscribeOptions) -> Transcript:
            t = await super().__call__(source, opts)
            path.write_bytes(b"RIFF another recording!")  # same size, new content and mtime
            os.utime(path, ns=(1, 1))
            return t

    reader = Swapping(length_s=150.0)
    run_one(store, tmp_path, reader)
    state, error = only_file(store)
    assert state is FileState.FAILED and error and "changed" in error, error
    assert len(reader.read) == 1, "a window was read after the swap was visible"


def test_an_unchanged_input_file_is_transcribed_and_kept(tmp_path: Path) -> None:
    store, path, sha = setup(tmp_path, b"RIFF original recording")
    run_one(store, tmp_path, Reader(length_s=150.0))
    assert only_file(store) == (FileState.DONE, None)
    assert path.read_bytes() == b"RIFF original recording"  # the user's own file stays


@pytest.mark.timeout(60)  # without the cap the endless stream is read for ever
def test_audio_is_capped_by_decoded_seconds_when_the_header_says_nothing(tmp_path: Path) -> None:
    store, _, _ = setup(tmp_path, b"RIFF endless stream")
    reader = Reader(length_s=None)
    run_one(store, tmp_path, reader, max_file_audio_s=150.0)
    state, error = only_file(store)
    assert state is FileState.FAILED and error and "longer than" in error, error
    assert len(reader.read) == 3, f"{len(reader.read)} windows of 60 s read for a 150 s limit"


# --- what the worker does with each kind of failure (a stand-in pipeline that raises) --------


class Failing(Reader):
    """Raises ``errors`` in turn, one per window asked for, then reads as ``Reader`` does."""

    def __init__(self, *errors: BaseException, length_s: float | None = 30.0) -> None:
        super().__init__(length_s)
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, source: AudioSource, opts: TranscribeOptions) -> Transcript:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return await super().__call__(source, opts)


def worker_for(store: JobStore, tmp_path: Path, reader: Reader, lease_s: float = 30) -> JobWorker:
    args = JobsArgs(commit_window_s=60, lease_s=lease_s)
    return JobWorker(store, reader, args, tmp_path, "w", probe_duration=lambda p: None)


def test_a_client_error_fails_the_file_with_its_reason(tmp_path: Path) -> None:
    store, _, _ = setup(tmp_path, b"RIFF a recording")
    reader = Failing(UnsupportedAudio("the file has no audio stream"))
    worker = worker_for(store, tmp_path, reader)
    claim = store.queue.claim("w", 30)
    assert claim is not None
    asyncio.run(worker.process(claim))
    assert only_file(store) == (FileState.FAILED, "the file has no audio stream")
    assert worker.stats.files_failed == 1 and reader.calls == 1  # never retried
    assert store.queue.claim("w", 30) is None


def test_a_server_error_hands_the_file_back_for_another_attempt(tmp_path: Path) -> None:
    store, _, _ = setup(tmp_path, b"RIFF a recording")
    reader = Failing(InternalError("a stage is down"))
    worker = worker_for(store, tmp_path, reader)
    first = store.queue.claim("w", 30)
    assert first is not None
    asyncio.run(worker.process(first))
    assert only_file(store) == (FileState.PENDING, "a stage is down")
    assert worker.stats.files_failed == 0
    again = store.queue.claim("w", 30)  # the next attempt, by any worker
    assert again is not None and again.attempt == first.attempt + 1
    asyncio.run(worker.process(again))
    assert only_file(store)[0] is FileState.DONE


def test_an_overloaded_server_is_backed_off_and_the_file_ends_done(tmp_path: Path) -> None:
    store, _, _ = setup(tmp_path, b"RIFF a recording")
    busy = Overloaded("the ASR queue is full")
    busy.retry_after_s = 0.01
    reader = Failing(busy, busy)
    worker = worker_for(store, tmp_path, reader)
    claim = store.queue.claim("w", 30)
    assert claim is not None
    asyncio.run(worker.process(claim))
    assert only_file(store) == (FileState.DONE, None)
    assert worker.stats.backoffs == 2 and reader.calls == 3, (worker.stats, reader.calls)
    assert claim.attempt == 1 and worker.stats.files_failed == 0  # no attempt spent on it


@pytest.mark.timeout(60)
def test_a_lost_renewal_cancels_the_work_on_the_file(tmp_path: Path) -> None:
    store, _, _ = setup(tmp_path, b"RIFF a recording")
    cancelled = asyncio.Event()

    class Hanging(Reader):
        async def __call__(self, source: AudioSource, opts: TranscribeOptions) -> Transcript:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError("unreachable")

    worker = worker_for(store, tmp_path, Hanging(), lease_s=5)  # renewed every 5/3 s
    claim = store.queue.claim("w", 5)
    assert claim is not None
    store.jobs.cancel(store.jobs.find().items[0].id)  # the next renewal finds the claim gone
    asyncio.run(worker.process(claim))
    assert cancelled.is_set(), "the work on the file went on after its claim was lost"
    assert worker.stats.lost_claims == 1 and worker.current == {}
