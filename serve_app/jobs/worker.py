"""The job worker, Ray-free: claim a file, transcribe it window by window, commit each window,
complete it. ``deployments.job_runner`` runs it with the pipeline as ``transcribe``; tests run it
with a stand-in.

Every write carries the claim's attempt (the fencing token): when the store answers that the
claim is no longer ours (the lease expired and another worker took the file, the job was
cancelled), the worker drops the file at once. A lease is renewed every third of its length.
The graph's back-pressure (``Overloaded``, 429) is waited out with backoff, never a failure; a
file the pipeline refuses (undecodable, too long) fails with the reason and the job goes on; an
unexpected server error hands the file back for another attempt (``WorkQueue.max_attempts``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from serve_app.config import JobsArgs
from serve_app.contracts import AsrOptions, AudioSource, PostOptions, Priority, TranscribeOptions, Transcript
from serve_app.errors import FileChanged, Overloaded, PayloadTooLargeForJob, ServeError
from serve_app.hashing import sha256_file
from serve_app.jobs import blobs
from serve_app.jobs.models import Claim, JobOptions, Window, WriteResult
from serve_app.jobs.store import JobStore

logger = logging.getLogger("ray.serve")

Transcribe = Callable[[AudioSource, TranscribeOptions], Awaitable[Transcript]]
ProbeDuration = Callable[[Path], float | None]


def transcribe_options(options: JobOptions) -> TranscribeOptions:
    """A job's options as the pipeline takes them, in the batch-job class of the ASR queue."""
    return TranscribeOptions(
        asr=AsrOptions(language=options.language, hotwords=options.prompt, word_timestamps=True),
        post=PostOptions(punctuation=options.punctuation, itn=options.itn),
        priority=Priority.BATCH,
    )


class _Lost(Exception):
    """The claim is no longer ours (another worker has the file, or its job was cancelled)."""


@dataclass
class WorkerStats:
    files_done: int = 0
    files_failed: int = 0
    windows: int = 0
    audio_s: float = 0.0
    backoffs: int = 0
    lost_claims: int = 0


class JobWorker:
    def __init__(
        self,
        store: JobStore,
        transcribe: Transcribe,
        args: JobsArgs,
        data_dir: Path,
        worker_id: str,
        probe_duration: ProbeDuration,
        keep_audio: bool = False,
    ) -> None:
        self.store, self.transcribe, self.args = store, transcribe, args
        self.data_dir, self.worker_id = data_dir, worker_id
        self.probe_duration, self.keep_audio = probe_duration, keep_audio
        self.stats = WorkerStats()
        self.current: dict[str, float] = {}
        """File id → committed progress (seconds), for files in flight."""

    async def run(self, stop: asyncio.Event) -> None:
        """``args.concurrency`` loops until ``stop`` is set."""
        await asyncio.gather(*(self._loop(stop) for _ in range(self.args.concurrency)))

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                claim = await asyncio.to_thread(self.store.queue.claim, self.worker_id, self.args.lease_s)
            except Exception:
                logger.exception("job worker: claiming failed; retrying")
                claim = None
            if claim is None:
                try:
                    await asyncio.wait_for(stop.wait(), self.args.poll_s)
                except TimeoutError:
                    pass
                continue
            await self.process(claim)

    async def process(self, claim: Claim) -> None:
        """One claimed file to its end (done, failed, or dropped because the claim was lost)."""
        f = claim.file
        work = asyncio.create_task(self._transcribe(claim))
        renewer = asyncio.create_task(self._renew(claim, work))
        self.current[f.id] = claim.progress_s
        try:
            await asyncio.wait([work])  # not `await work`: its cancellation is not ours
            if work.cancelled():
                raise _Lost("the lease could not be renewed")
            work.result()
        except _Lost:
            self.stats.lost_claims += 1
            logger.info("job worker: file %s is no longer ours (attempt %d)", f.id, claim.attempt)
        except ServeError as e:
            if e.status_code < 500:  # the file itself: undecodable, too long, ...
                await self._write(self.store.queue.fail, f.id, claim.attempt, e.message)
                self.stats.files_failed += 1
            else:  # the server: hand it back for another attempt
                logger.warning("job worker: file %s attempt %d: %s", f.id, claim.attempt, e.message)
                await self._write(self.store.queue.fail, f.id, claim.attempt, e.message, retry=True)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must not stop the worker; the file is retried
            logger.exception("job worker: file %s failed unexpectedly", f.id)
            await self._write(
                self.store.queue.fail, f.id, claim.attempt, f"internal error: {type(e).__name__}", retry=True
            )
        finally:
            work.cancel()
            renewer.cancel()
            self.current.pop(f.id, None)

    async def _transcribe(self, claim: Claim) -> None:
        f, attempt = claim.file, claim.attempt
        path = self.data_dir / claim.upload_path
        source = InPlaceFile(path, f.sha256) if claim.in_place else None
        if source is not None:
            await asyncio.to_thread(source.verify)
        duration = f.duration_s
        if duration is None:
            duration = await asyncio.to_thread(self.probe_duration, path)
            if duration is not None:
                await self._write(self.store.queue.set_duration, f.id, attempt, duration)
        if duration is not None and duration > self.args.max_file_audio_s:
            raise PayloadTooLargeForJob(
                f"the recording is {duration / 3600:.1f} h long; jobs take up to {self.args.max_file_audio_s / 3600:.1f} h"
            )
        opts = transcribe_options(claim.options)
        start = claim.progress_s
        while True:
            if start >= self.args.max_file_audio_s:
                # Decoded seconds, whatever the header said (or did not say).
                raise PayloadTooLargeForJob(
                    f"the recording is longer than {self.args.max_file_audio_s / 3600:.1f} h, the most jobs take"
                )
            window = min(self.args.commit_window_s, self.args.max_file_audio_s + 1.0 - start)
            transcript = await self._with_backoff(
                AudioSource(path=path, start_s=start, duration_s=window), opts
            )
            if source is not None:
                await asyncio.to_thread(source.check_unchanged)  # what was read is still that file
            end = (
                transcript.next_start_s
                if transcript.next_start_s is not None
                else start + transcript.duration_s
            )
            await self._write(
                self.store.queue.commit_window, f.id, attempt, Window.from_transcript(transcript, start, end)
            )
            self.stats.windows += 1
            self.stats.audio_s += end - start
            self.current[f.id] = end
            if transcript.next_start_s is None:
                break
            start = transcript.next_start_s
        await self._write(self.store.queue.complete, f.id, attempt)
        self.stats.files_done += 1
        if not self.keep_audio and source is None:  # an input-folder file is the user's own
            released = await asyncio.to_thread(self.store.uploads.release, f.sha256)
            if released:
                blobs.remove(self.data_dir, [released])

    async def _with_backoff(self, source: AudioSource, opts: TranscribeOptions) -> Transcript:
        delay = 0.5
        while True:
            try:
                return await self.transcribe(source, opts)
            except Overloaded as e:
                self.stats.backoffs += 1
                await asyncio.sleep(max(delay, e.retry_after_s or 0.0))
                delay = min(delay * 2, 10.0)

    async def _write(self, fn: Callable[..., WriteResult], *args: object, **kwargs: object) -> None:
        result = await asyncio.to_thread(fn, *args, **kwargs)
        if result is not WriteResult.OK:
            raise _Lost(result.value)

    async def _renew(self, claim: Claim, work: asyncio.Task[None]) -> None:
        """Renew the lease every third of it (at least every 5 s, so a cancelled job stops
        soon); when the claim is lost, cancel the work on the file."""
        every = min(self.args.lease_s / 3, 5.0)
        while True:
            await asyncio.sleep(every)
            try:
                result = await asyncio.to_thread(
                    self.store.queue.renew, claim.file.id, self.worker_id, claim.attempt, self.args.lease_s
                )
            except Exception:  # the database blinked: the next renewal may succeed
                logger.warning("job worker: renewing the lease of %s failed", claim.file.id)
                continue
            if result is not WriteResult.OK:  # cancelled, or taken over: stop working on it
                work.cancel()
                return


class InPlaceFile:
    """An input-folder file read where it lies: its content must still be what was hashed
    when the job was made. Checked in full before the first window; after each window its
    identity (device, inode, size, modification time) is compared, and hashed again if it
    moved, so a file swapped in the folder fails with a reason instead of transcribing other
    content as this job's."""

    def __init__(self, path: Path, sha256: str) -> None:
        self.path, self.sha256 = path, sha256
        self._identity: tuple[int, ...] | None = None

    def _stat(self) -> tuple[int, ...]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise FileChanged("the file is no longer in the input folder") from None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def verify(self) -> None:
        before = self._stat()
        sha, _ = sha256_file(self.path)
        if sha != self.sha256 or self._stat() != before:
            raise FileChanged(
                "the file in the input folder changed after the job was made (its sha256 is no longer "
                f"{self.sha256[:12]}…); make a new job for the new content"
            )
        self._identity = before

    def check_unchanged(self) -> None:
        if self._stat() != self._identity:
            self.verify()
