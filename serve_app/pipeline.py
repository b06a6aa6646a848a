"""The decode → VAD → ASR → postprocess chain over deployment handles: one small API that the
HTTP routes, realtime sessions and the job runner share.

Entry points, by what the caller already has:

* ``transcribe_source``: upload bytes, or a window of a file on a shared volume (all stages);
* ``transcribe_samples``: 16 kHz float32 samples already decoded (VAD onwards);
* ``transcribe_segments``: speech already cut, e.g. a realtime endpoint (ASR onwards).

Stages are chained without awaiting the middle where they can be: decode's response feeds the
VAD, and ASR's the postprocessing, replica to replica. The VAD streams its segmentation back
window by window (``VadArgs.window_s``) and each window is sent to ASR as soon as it is cut, so
a long recording's ASR starts while the VAD still reads it. Every entry point is
idempotent, so a chain that failed because a replica died under it is sent again
(``RetryArgs``); every failure leaves here as a ``ServeError``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import numpy as np
from ray.serve.handle import DeploymentHandle

from serve_app.config import RetryArgs
from serve_app.contracts import (
    AudioSource,
    DecodedAudio,
    Segmentation,
    SpeechSegment,
    TranscribeOptions,
    Transcript,
)
from serve_app.engines.transcript import merge
from serve_app.errors import InternalError, Overloaded, ServeError

logger = logging.getLogger("ray.serve")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: Ray's ``RayTaskError.cause`` and Python's ``__cause__``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]


def replica_lost(exc: BaseException) -> bool:
    """True when a stage call failed because a replica (or the object it held) went away,
    not because of the request: those calls are worth sending again."""
    from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, WorkerCrashedError
    from ray.serve.exceptions import ReplicaUnavailableError

    lost = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError, ReplicaUnavailableError)
    for e in _causes(exc):
        if isinstance(e, ServeError):
            return False  # our own errors are about the request
        if isinstance(e, lost):
            return True
    return False


def as_serve_error(exc: BaseException) -> ServeError:
    """Unwrap what a ``DeploymentHandle`` raised into the error hierarchy."""
    from ray.exceptions import RayTaskError
    from ray.serve.exceptions import BackPressureError

    for cause in _causes(exc):
        if isinstance(cause, ServeError):
            if isinstance(cause, RayTaskError):
                # Ray's as_instanceof_cause: a subclass of both RayTaskError and our class,
                # without our attributes. Its plain error is its .cause (visited next) or,
                # failing that, rebuilt from the class it mixes in.
                if cause.cause is not None:
                    continue
                plain = next(
                    c
                    for c in type(cause).__mro__
                    if issubclass(c, ServeError) and not issubclass(c, RayTaskError)
                )
                return plain(getattr(cause, "message", None) or str(cause))
            return cause
        if isinstance(cause, BackPressureError):
            return Overloaded("the server is at capacity; retry shortly")
    if any(isinstance(c, asyncio.TimeoutError | TimeoutError) for c in _causes(exc)):
        return InternalError("a pipeline stage timed out")
    if replica_lost(exc):
        return InternalError("a pipeline stage was lost and did not come back in time")
    logger.error("unexpected error in the pipeline", exc_info=exc)
    return InternalError("internal error")


class Pipeline:
    """The stage handles and how to call them."""

    def __init__(
        self,
        decode: DeploymentHandle,
        vad: DeploymentHandle,
        asr: DeploymentHandle,
        post: DeploymentHandle,
        retry: RetryArgs,
    ) -> None:
        self.decode, self.vad, self.asr, self.post = decode, vad, asr, post
        self.retry = retry
        self.retries = 0
        """Chains sent again after a lost replica (for stats and tests)."""

    async def transcribe_source(self, source: AudioSource, opts: TranscribeOptions) -> Transcript:
        return await self._run(lambda: self._windowed(self.decode.remote(source), opts))

    async def transcribe_samples(
        self, samples: np.ndarray, opts: TranscribeOptions, offset_s: float = 0.0
    ) -> Transcript:
        audio = DecodedAudio(samples=samples, offset_s=offset_s)
        return await self._run(lambda: self._windowed(audio, opts))

    async def transcribe_segments(
        self, segments: list[SpeechSegment], duration_s: float, opts: TranscribeOptions
    ) -> Transcript:
        seg = Segmentation(duration_s=duration_s, segments=segments)
        return await self._run(lambda: self._from_segmentation(seg, opts))

    def _from_segmentation(self, seg: object, opts: TranscribeOptions) -> Awaitable[Transcript]:
        transcript = self.asr.transcribe.remote(seg, opts.asr, opts.priority)
        return self.post.remote(transcript, opts.post)  # type: ignore[no-any-return]

    async def _windowed(self, audio: object, opts: TranscribeOptions) -> Transcript:
        """VAD streams the segmentation window by window; each window goes to ASR as soon as
        it is cut (all under one key: one request in the ASR queue), then postprocessing."""
        key = uuid.uuid4().hex
        parts = []
        async for seg in self.vad.options(stream=True).stream.remote(audio):  # type: ignore[union-attr]
            parts.append(self.asr.transcribe.remote(seg, opts.asr, opts.priority, key))
        transcripts = await asyncio.gather(*parts)
        return await self.post.remote(merge(transcripts), opts.post)  # type: ignore[no-any-return]

    async def _run(self, chain: Callable[[], Awaitable[Transcript]]) -> Transcript:
        deadline: float | None = None
        backoff = self.retry.first_backoff_s
        while True:
            try:
                return await chain()
            except Exception as e:
                if not replica_lost(e):
                    raise as_serve_error(e) from None
                now = time.monotonic()
                deadline = deadline or now + self.retry.deadline_s
                if now + backoff > deadline:
                    logger.warning("giving up after a lost replica: %s", e)
                    raise as_serve_error(e) from None
                self.retries += 1
                logger.info("a stage replica was lost; sending the request again in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.retry.max_backoff_s)
