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
    store.create_job([new], JobOptions(model="m"))
    return store, path, sha


def run_one(store: JobStore, tmp_path: Path, reader: Reader, **jobs: float) -> None:
    args = JobsArgs(window_s=60, lease_s=30, **jobs)  # type: ignore[arg-type]
    worker = JobWorker(store, reader, args, tmp_path, "w", probe_duration=lambda p: None)
    claim = store.claim("w", 30)
    assert claim is not None
    asyncio.run(worker.process(claim))


def only_file(store: JobStore) -> tuple[FileState, str | None]:
    job = store.list_jobs().items[0]
    f = store.list_files(job.id).items[0]
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
    run_one(store, tmp_path, reader, max_audio_s=150.0)
    state, error = only_file(store)
    assert state is FileState.FAILED and error and "longer than" in error, error
    assert len(reader.read) == 3, f"{len(reader.read)} windows of 60 s read for a 150 s limit"
