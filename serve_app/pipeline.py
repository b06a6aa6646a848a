"""The decode → VAD → ASR → postprocess chain over deployment handles: one small API that the
HTTP routes, realtime sessions and the job runner share.

Entry points, by what the caller already has:

* ``transcribe_source``: upload bytes, or a window of a file on a shared volume (all stages);
* ``transcribe_samples``: 16 kHz float32 samples already decoded (VAD onwards);
* ``transcribe_segments``: speech already cut, e.g. a realtime endpoint (ASR onwards).

Stages are chained without awaiting the middle where they can be: decode's response feeds the
VAD, and ASR's the postprocessing, replica to replica. The VAD streams its segmentation back
window by window (``VadArgs.segmentation_window_s``) and each window is sent to ASR as soon as it is cut, so
a long recording's ASR starts while the VAD still reads it. Every entry point is
idempotent, so a chain that failed because a replica died under it is sent again
(``RetryArgs``); every failure leaves here as a ``ServeError``.

Poison requests: a request whose stage call killed its replica (the process died during the
call while its node stayed up) is sent again once; if a second replica dies under it, it is
answered (``PayloadTooLarge`` when Ray says the replica ran out of memory, else
``InternalError``) and never replayed, and the digest of its audio is kept (``PoisonRegistry``) so
that sending it again is refused at once, without calling any stage: no request, repeated or
not, can kill replicas in turn. A lost node, a replica Serve stopped or one only unreachable for
a while is not the request's fault: those calls are retried until ``RetryArgs.deadline_s`` as
before. Chaining loses nothing here: when decode's replica dies while the VAD waits for its
response, the VAD call fails with Ray's ``ActorDiedError`` *of the decode replica* (its actor id
and ``class_name: ServeReplica:<app>:Decode``) as the cause, so the death is counted once, and
against the stage that died.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

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
from serve_app.errors import InternalError, Overloaded, PayloadTooLarge, ServeError

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
    from ray.exceptions import (
        NodeDiedError,
        ObjectLostError,
        OutOfMemoryError,
        RayActorError,
        WorkerCrashedError,
    )
    from ray.serve.exceptions import ReplicaUnavailableError

    lost = (
        RayActorError,
        WorkerCrashedError,
        NodeDiedError,
        ObjectLostError,
        ReplicaUnavailableError,
        OutOfMemoryError,  # Ray's memory monitor killed the replica's worker
    )
    for e in _causes(exc):
        if isinstance(e, ServeError):
            return False  # our own errors are about the request
        if isinstance(e, lost):
            return True
    return False


# Ray's words for why an actor died (ray/_raylet.so and the GCS, Ray 2.60): only the first is
# the request's doing; the others are the cluster's (a node lost, ``ray.kill`` by Serve when it
# stops a replica, an owner gone), and an ActorDiedError without a known cause is not counted.
PROCESS_DIED = "The actor is dead because its worker process has died."
NODE_DIED = "The actor died because its node has died."
OUT_OF_MEMORY = "NODE_OUT_OF_MEMORY"
"""The worker exit type when Ray's memory monitor killed the replica (``Worker exit type: ...``)."""

_STAGE = re.compile(r"class_name: ServeReplica:[^:\s]*:(\S+)")
_ACTOR = re.compile(r"actor_id: ([0-9a-f]+)")


@dataclass(frozen=True)
class ReplicaDeath:
    """A stage replica that died under a request's call: which one (Ray's actor id, so that one
    death seen twice counts once), of which stage, and whether it ran out of memory."""

    actor: str
    stage: str
    memory: bool


def replica_death(exc: BaseException) -> ReplicaDeath | None:
    """The replica death a failed stage call counts against its request: the replica's process
    died during the call (a crash, SIGKILL, the kernel's or Ray's OOM killer) while its node
    stayed up. ``None`` for anything else: not a death, a lost node, a replica Serve stopped, a
    replica unreachable for a while (``ActorUnavailableError``)."""
    from ray.exceptions import (
        ActorUnavailableError,
        NodeDiedError,
        OutOfMemoryError,
        RayActorError,
        WorkerCrashedError,
    )

    for e in _causes(exc):
        if isinstance(e, ServeError):
            return None
        if isinstance(e, ActorUnavailableError | NodeDiedError):
            return None
        if isinstance(e, OutOfMemoryError):
            return _death(str(e), None, memory=True)
        if isinstance(e, RayActorError):
            msg = str(getattr(e, "error_msg", "") or e)
            if e.preempted or NODE_DIED in msg or PROCESS_DIED not in msg:
                return None
            return _death(msg, e.actor_id, memory=OUT_OF_MEMORY in msg)
        if isinstance(e, WorkerCrashedError):
            return _death(str(e), None, memory=False)
    return None


def _death(msg: str, actor: str | None, memory: bool) -> ReplicaDeath:
    # The message names the actor that died (for a chained call: the upstream one, while the
    # error's own actor_id may be the caller's); an unknown actor counts as a death of its own.
    named, stage = _ACTOR.search(msg), _STAGE.search(msg)
    return ReplicaDeath(
        actor=named[1] if named else actor or uuid.uuid4().hex,
        stage=stage[1] if stage else "a stage",
        memory=memory,
    )


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


POISON_DEATHS = 2
"""Replicas a request may see die under its calls: the first is retried, the second answers it."""


@dataclass(frozen=True)
class Poisoned:
    """What a request that took down replicas was answered; a repeat gets the same."""

    memory: bool
    stages: tuple[str, ...]

    def error(self, repeat: bool = False) -> ServeError:
        where = ", ".join(self.stages)
        if self.memory:
            return PayloadTooLarge(
                "this audio needs more memory than a pipeline replica has: "
                + (
                    f"an identical request took down two replicas ({where}); it is refused"
                    if repeat
                    else f"it took down two replicas ({where}) and was not retried"
                )
            )
        if repeat:
            return InternalError(
                f"an identical request took down a pipeline replica twice ({where}); this one is refused"
            )
        return InternalError(
            f"the request was not retried because it took down a pipeline replica twice ({where})"
        )


class PoisonRegistry:
    """Digests of the requests answered as poison, the ``size`` most recent (an LRU): a repeat
    is refused without calling any stage. One per ``Pipeline`` (per Ingress or JobRunner
    replica): each learns on its own, at the cost of two replicas each at most."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._seen: OrderedDict[str, Poisoned] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, key: str, what: Poisoned) -> None:
        self._seen[key] = what
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def get(self, key: str) -> Poisoned | None:
        what = self._seen.get(key)
        if what is not None:
            self._seen.move_to_end(key)
        return what


def source_key(source: AudioSource) -> str:
    """A request's identity for ``PoisonRegistry``: the sha256 of the upload's bytes, or of the
    file window's path, size, modification time and bounds."""
    h = hashlib.sha256(f"source {source.start_s} {source.duration_s}\0".encode())
    if source.data is not None:
        h.update(source.data)
    else:
        try:
            st = os.stat(str(source.path))
            h.update(f"{source.path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        except OSError:
            h.update(str(source.path).encode())
    return h.hexdigest()


def samples_key(parts: list[tuple[float, np.ndarray]]) -> str:
    """The sha256 of already decoded audio (each part's start and samples)."""
    h = hashlib.sha256(b"samples\0")
    for start, samples in parts:
        h.update(f"{start}\0".encode())
        h.update(np.ascontiguousarray(samples, dtype=np.float32).data)
    return h.hexdigest()


class Pipeline:
    """The stage handles and how to call them."""

    def __init__(
        self,
        decode: DeploymentHandle,
        vad: DeploymentHandle,
        asr: DeploymentHandle,
        post: DeploymentHandle,
        retry: RetryArgs,
        poison: PoisonRegistry | None = None,
    ) -> None:
        self.decode, self.vad, self.asr, self.post = decode, vad, asr, post
        self.retry = retry
        self.poison = poison if poison is not None else PoisonRegistry()
        self.retries = 0
        """Chains sent again after a lost replica (for stats and tests)."""
        self.poisoned = 0
        """Requests answered because two replicas died under them."""
        self.refused = 0
        """Repeats of those refused without calling a stage."""

    async def transcribe_source(self, source: AudioSource, opts: TranscribeOptions) -> Transcript:
        return await self._run(
            lambda: self._windowed(self.decode.remote(source), opts), lambda: source_key(source)
        )

    async def transcribe_samples(
        self, samples: np.ndarray, opts: TranscribeOptions, offset_s: float = 0.0
    ) -> Transcript:
        audio = DecodedAudio(samples=samples, offset_s=offset_s)
        return await self._run(
            lambda: self._windowed(audio, opts), lambda: samples_key([(offset_s, samples)])
        )

    async def transcribe_segments(
        self, segments: list[SpeechSegment], duration_s: float, opts: TranscribeOptions
    ) -> Transcript:
        seg = Segmentation(duration_s=duration_s, segments=segments)
        return await self._run(
            lambda: self._from_segmentation(seg, opts),
            lambda: samples_key([(s.start_s, s.samples) for s in segments]),
        )

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

    async def _run(
        self, chain: Callable[[], Awaitable[Transcript]], identity: Callable[[], str]
    ) -> Transcript:
        """``chain()`` until it answers; ``identity()`` (a digest of the request's audio) is
        computed only when the registry of poison requests is not empty, or this one joins it."""
        key: str | None = None
        if len(self.poison):
            key = await asyncio.to_thread(identity)  # hashing 100 MB takes a quarter second
            if (known := self._known(key)) is not None:
                raise known
        deaths: dict[str, ReplicaDeath] = {}
        deadline: float | None = None
        backoff = self.retry.first_backoff_s
        while True:
            try:
                return await chain()
            except Exception as e:
                if not replica_lost(e):
                    raise as_serve_error(e) from None
                death = replica_death(e)
                if death is not None:
                    deaths.setdefault(death.actor, death)
                    if key is None:
                        key = await asyncio.to_thread(identity)
                    if len(deaths) >= POISON_DEATHS:
                        raise self._answer_poison(key, list(deaths.values())) from None
                    if (known := self._known(key)) is not None:  # answered meanwhile, to a twin
                        raise known from None
                    logger.warning(
                        "a %s replica died under request %s; sending it again once", death.stage, key[:12]
                    )
                now = time.monotonic()
                deadline = deadline or now + self.retry.deadline_s
                if now + backoff > deadline:
                    logger.warning("giving up after a lost replica: %s", e)
                    raise as_serve_error(e) from None
                self.retries += 1
                logger.info("a stage replica was lost; sending the request again in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.retry.max_backoff_s)

    def _known(self, key: str) -> ServeError | None:
        """The answer for a repeat of a request answered as poison, or ``None``."""
        known = self.poison.get(key)
        if known is None:
            return None
        self.refused += 1
        logger.warning("refused request %s: an identical one took down pipeline replicas", key[:12])
        return known.error(repeat=True)

    def _answer_poison(self, key: str, deaths: list[ReplicaDeath]) -> ServeError:
        what = Poisoned(memory=any(d.memory for d in deaths), stages=tuple(d.stage for d in deaths))
        self.poison.add(key, what)
        self.poisoned += 1
        logger.error(
            "request %s took down %d replicas (%s); answered, not retried, and refused if sent again",
            key[:12],
            len(deaths),
            ", ".join(f"{d.stage} {d.actor[:12]}{' out of memory' if d.memory else ''}" for d in deaths),
        )
        return what.error()
