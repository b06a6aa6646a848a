"""One live stream, protocol-agnostic: audio in, events out.

The ingress replica that holds the WebSocket holds this object; the session's model state lives
on one Streaming replica (``deployments.streaming``). Audio pushed here is sent to that replica
one call at a time (what arrives meanwhile is sent with the next call, so a slow step never
reorders audio and a fast client's frames coalesce). The replica answers with online partial
text and the streaming VAD's speech starts and ends; at each end, the utterance's audio, kept
here in a bounded buffer, goes through the offline pipeline after VAD
(``Pipeline.transcribe_segments``: batched ASR in the interactive class, punctuation, ITN) and
comes back as a final. Without a streaming model (Whisper), partials re-decode the open
utterance with the offline ASR at most every ``partial_interval_s``.

Modes: ``online`` (partials only), ``offline`` (the whole stream through the offline pipeline at
the end), ``2pass`` (partials, and a final at every endpoint). ``turn_detection=False`` (OpenAI's
``turn_detection: null``) makes finals only on ``commit()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from ray.serve.handle import DeploymentHandle

from serve_app.config import LimitsArgs, RealtimeArgs
from serve_app.contracts import (
    SAMPLE_RATE,
    AsrOptions,
    AudioSource,
    PostOptions,
    Priority,
    SpeechSegment,
    TranscribeOptions,
    Transcript,
)
from serve_app.errors import InternalError, PayloadTooLarge, ServeError, TooFast
from serve_app.pipeline import Pipeline, as_serve_error
from serve_app.realtime.audio import AudioBuffer, Budget, Unmetered
from serve_app.realtime.events import Emit, Failed, Final, Partial, SpeechStarted, SpeechStopped

logger = logging.getLogger("ray.serve")

Mode = Literal["online", "offline", "2pass"]


@dataclass(frozen=True)
class SessionOptions:
    mode: Mode = "2pass"
    language: str | None = None
    hotwords: str | None = None
    punctuation: bool | None = None
    itn: bool | None = None
    turn_detection: bool = True
    """Finals at the streaming VAD's endpoints (else only on ``commit``)."""

    def pipeline_options(self, partial: bool = False) -> TranscribeOptions:
        """What the offline pipeline is asked for this session's text: a final (an endpoint's,
        a commit's, an offline stream's) with word timestamps, punctuation and ITN as chosen;
        a ``partial`` hypothesis (no streaming model) bare, as it is replaced by the final."""
        return TranscribeOptions(
            asr=AsrOptions(language=self.language, hotwords=self.hotwords, word_timestamps=not partial),
            post=PostOptions(punctuation=False, itn=False)
            if partial
            else PostOptions(punctuation=self.punctuation, itn=self.itn),
            priority=Priority.INTERACTIVE,
        )


class RealtimeSession:
    def __init__(
        self,
        streaming: DeploymentHandle,
        pipeline: Pipeline,
        args: RealtimeArgs,
        limits: LimitsArgs,
        options: SessionOptions,
        emit: Emit,
        budget: Budget | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.args, self.limits, self.options = args, limits, options
        self.pipeline = pipeline
        self._handle = streaming.options(session_id=self.id)
        self._emit = emit
        self.budget: Budget = budget or Unmetered()
        """Pays for the audio buffered here (the socket's ``SocketSlot``): a push beyond the
        Ingress replica's budget raises ``BufferFull`` before the memory is taken."""
        self.max_offline_s = min(args.max_offline_audio_s, limits.max_request_audio_s)
        keep_s = self.max_offline_s if options.mode == "offline" else 2 * args.max_utterance_s + 5
        self.buffer = AudioBuffer(keep_s, self.budget)
        self.raw = bytearray()
        """Offline mode with a container (not PCM): the bytes, decoded at the end."""
        self.replica = ""
        self.online_asr = False
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._attach: asyncio.Task[None] | None = None
        self._finals: asyncio.Future[None] | None = None  # the last final, to keep their order
        self._utterance = 0
        self._speech_start: float | None = None
        self._commit_from = 0.0
        self._partial_text = ""
        self._partial_busy = False
        self._last_partial = 0.0
        self._ending = False
        self._last_scheduled = False
        self.failed: ServeError | None = None
        self.replicas_seen: set[str] = set()

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the session's state on a Streaming replica (offline mode needs none)."""
        if self.options.mode == "offline":
            return
        try:
            info = await self._handle.open.remote(self.id)
        except Exception as e:
            raise as_serve_error(e) from None
        self.replica, self.online_asr = info["replica"], bool(info["online_asr"])
        self.replicas_seen.add(self.replica)
        self._attach = asyncio.create_task(self._hold())
        self._pump = asyncio.create_task(self._run())

    async def _hold(self) -> None:
        """The attach call: it ends when the session closes, or fails if its replica dies."""
        try:
            await self._handle.attach.remote(self.id)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            await self._fail(as_serve_error(e))

    async def close(self) -> None:
        """Free everything, on both sides (idempotent; runs on every disconnect)."""
        for t in [self._pump, self._attach, *self._tasks]:
            if t is not None and not t.done():
                t.cancel()
        self._tasks.clear()
        self._pending, self._pending_samples = [], 0
        self.buffer.close()
        self._drop_raw()
        if self.replica:
            try:
                await asyncio.wait_for(self._handle.close.remote(self.id), timeout=10)
            except Exception:  # its replica is gone: nothing left to free there
                pass
            self.replica = ""

    # -- what the protocols read --------------------------------------------------------------

    @property
    def utterance(self) -> int:
        """The number of the open utterance (0, 1, ...): what its events carry, and what the
        next ``commit()`` returns as its ``Final.utterance``."""
        return self._utterance

    @property
    def uncommitted_s(self) -> float:
        """Seconds of audio since the last ``commit()`` or ``clear()`` (or the start)."""
        return self.buffer.end_s - self._commit_from

    # -- audio in -----------------------------------------------------------------------------

    def push(self, samples: np.ndarray) -> None:
        """16 kHz float32 from the client. Raises ``TooFast`` / ``PayloadTooLarge`` when the
        client sends more than the server can take, ``BufferFull`` when the Ingress replica
        buffers its most (``serve_app.realtime.capacity``)."""
        if self.failed is not None:
            raise self.failed
        if self.options.mode == "offline":
            # No backlog rule (the whole stream waits for the end by design): its length and
            # the replica's budget bound it, checked before the audio is kept.
            if self.buffer.end_s + samples.size / SAMPLE_RATE > self.max_offline_s:
                raise PayloadTooLarge(
                    f"an offline stream may last {self.max_offline_s:g} s; send longer recordings as a batch job"
                )
            self.buffer.append(samples)
            return
        self.buffer.append(samples)
        self._pending.append(samples)
        self._pending_samples += samples.size
        if self._pending_samples > self.args.max_backlog_s * SAMPLE_RATE:
            raise TooFast(
                f"audio arrives faster than it is processed: {self.args.max_backlog_s:.0f} s are waiting; "
                "send at real time"
            )
        self._wake.set()

    def push_raw(self, data: bytes) -> None:
        """Offline mode, a container format: bytes decoded at the end. Refused before they
        are kept beyond ``limits.max_upload_mb`` or the replica's budget."""
        if self.failed is not None:
            raise self.failed
        if len(self.raw) + len(data) > self.limits.max_upload_mb * 1024 * 1024:
            raise PayloadTooLarge(f"the upload is larger than {self.limits.max_upload_mb:g} MB")
        self.budget.reserve(len(data))
        self.raw.extend(data)

    def _drop_raw(self) -> None:
        if self.raw:
            self.budget.release(len(self.raw))
            self.raw = bytearray()

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self._pending and not self._ending:
                    continue
                audio = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
                self._pending, self._pending_samples = [], 0
                final = self._ending
                try:
                    result = await self._handle.feed.remote(self.id, audio, final)
                except Exception as e:
                    await self._fail(as_serve_error(e))
                    return
                self.replicas_seen.add(result.replica)
                await self._handle_result(result.partial, result.events, final)
                if final:
                    return
        except asyncio.CancelledError:
            raise

    async def _handle_result(self, partial: str, events: list[Any], final: bool) -> None:
        if partial and self.options.mode != "offline":
            await self._emit(Partial(partial, self._utterance))
        for n, e in enumerate(events):
            if e.kind == "start":
                self._speech_start = e.time_s
                if self.options.turn_detection:
                    await self._emit(SpeechStarted(e.time_s, self._utterance))
            elif self._speech_start is not None:
                start, self._speech_start = self._speech_start, None
                if self.options.turn_detection:
                    await self._emit(SpeechStopped(e.time_s, self._utterance))
                if self.options.turn_detection and self.options.mode == "2pass":
                    # The end-of-stream flush closed this utterance: its final is the last one.
                    last = final and n == len(events) - 1
                    self._final(start, e.time_s, last=last)
                    self._last_scheduled = self._last_scheduled or last
                self._next_utterance()
        if self._speech_start is not None:
            if self.buffer.end_s - self._speech_start > self.args.max_utterance_s and not final:
                cut = self._speech_start + self.args.max_utterance_s
                if self.options.turn_detection and self.options.mode == "2pass":
                    self._final(self._speech_start, cut)
                self._speech_start = cut
                self._next_utterance()
            elif not self.online_asr and self.options.mode != "offline":
                self._maybe_partial()

    def _next_utterance(self) -> None:
        self._utterance += 1
        self._partial_text = ""

    # -- finals -------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _final(self, start_s: float, end_s: float, last: bool = False) -> asyncio.Future[None]:
        """Transcribe ``[start_s, end_s)`` through the offline pipeline; emitted in order."""
        samples = self.buffer.slice(start_s, end_s)
        utterance, previous = self._utterance, self._finals
        opts = self.options.pipeline_options()

        async def run() -> None:
            try:
                if samples.size >= SAMPLE_RATE // 100:
                    seg = SpeechSegment(start_s=start_s, end_s=end_s, samples=samples)
                    transcript = await self.pipeline.transcribe_segments([seg], end_s, opts)
                else:
                    transcript = Transcript(
                        language=self.options.language or "", duration_s=end_s, segments=[]
                    )
            except ServeError as e:
                if previous is not None:
                    await previous
                await self._fail(e)
                return
            if previous is not None:
                await previous
            await self._emit(Final(transcript, start_s, end_s, utterance, last))

        self._finals = self._spawn(run())
        return self._finals

    async def commit(self) -> Final:
        """Everything since the last commit, through the whole offline pipeline (manual turns)."""
        start, end = self._commit_from, self.buffer.end_s
        self._commit_from = end
        samples = self.buffer.slice(start, end)
        self.buffer.drop_before(end)
        utterance = self._utterance
        self._next_utterance()
        opts = self.options.pipeline_options()
        transcript = await self.pipeline.transcribe_samples(samples, opts, offset_s=start)
        return Final(transcript, start, end, utterance)

    def clear(self) -> None:
        """Forget uncommitted audio (OpenAI ``input_audio_buffer.clear``)."""
        self._commit_from = self.buffer.end_s
        self.buffer.drop_before(self.buffer.end_s)

    async def finish(self) -> None:
        """The client ended its stream: flush, and emit every remaining final; the last event
        is a ``Final`` with ``last=True`` (even when nothing was said)."""
        if self.options.mode == "offline":
            await self._finish_offline()
            return
        self._ending = True
        self._wake.set()
        if self._pump is not None:
            await self._pump
        if self.failed is not None:
            return
        end = self.buffer.end_s
        if self._last_scheduled and self._finals is not None:
            await self._finals
        elif self.options.mode == "2pass" and self.options.turn_detection:
            start = self._speech_start if self._speech_start is not None else end
            await self._final(start, end, last=True)
        else:
            if self._finals is not None:
                await self._finals
            empty = Transcript(language=self.options.language or "", duration_s=end, segments=[])
            await self._emit(Final(empty, end, end, self._utterance, last=True))
        self._ending = self._last_scheduled = False
        self._speech_start = None
        self._next_utterance()

    async def _finish_offline(self) -> None:
        opts = self.options.pipeline_options()
        # The stream leaves its buffer as the one contiguous copy the pipeline takes; that copy
        # is paid for from the budget until the transcript is back (float32: twice the int16).
        held = 0
        try:
            if self.raw:
                source, held = AudioSource(data=bytes(self.raw)), len(self.raw)
                self.raw = bytearray()  # its reservation now pays for the copy
                transcript = await self.pipeline.transcribe_source(source, opts)
            else:
                self.budget.reserve(4 * self.buffer.size)
                held = 4 * self.buffer.size
                samples = self.buffer.slice(0, self.buffer.end_s)
                self.buffer.close()
                transcript = await self.pipeline.transcribe_samples(samples, opts)
        except ServeError as e:
            await self._fail(e)
            return
        finally:
            self.budget.release(held)
            self._drop_raw()
            self.buffer.close()
        await self._emit(Final(transcript, 0.0, transcript.duration_s, self._utterance, last=True))

    # -- partials without a streaming model ---------------------------------------------------

    def _maybe_partial(self) -> None:
        now = time.monotonic()
        if self._partial_busy or now - self._last_partial < self.args.partial_interval_s:
            return
        assert self._speech_start is not None
        start, end, utterance = self._speech_start, self.buffer.end_s, self._utterance
        samples = self.buffer.slice(start, end)
        if samples.size < SAMPLE_RATE // 2:
            return
        self._partial_busy, self._last_partial = True, now
        opts = self.options.pipeline_options(partial=True)

        async def run() -> None:
            try:
                t = await self.pipeline.transcribe_segments([SpeechSegment(start, end, samples)], end, opts)
            except ServeError:
                return  # a partial is best effort: the final will say it
            finally:
                self._partial_busy = False
            text = t.text.strip()
            # Partials only ever append: send the part of the new hypothesis beyond what was
            # sent; when it revises what was sent, wait for the final to correct it.
            if (
                utterance == self._utterance
                and text.startswith(self._partial_text)
                and len(text) > len(self._partial_text)
            ):
                new = text[len(self._partial_text) :]
                self._partial_text = text
                await self._emit(Partial(new, utterance))

        self._spawn(run())

    # -- failure ------------------------------------------------------------------------------

    async def _fail(self, error: ServeError) -> None:
        if self.failed is not None:
            return
        self.failed = error if isinstance(error, ServeError) else InternalError(str(error))
        logger.warning("realtime session %s failed: %s", self.id, self.failed.message)
        await self._emit(Failed(self.failed))
