"""The pipeline's handling of stage failures, Ray-free: stage handles are stand-ins that answer
or fail like Ray's do, the Pipeline is the real one. A call lost with its replica is sent
again; a request that is itself bad is never retried; a request that killed two replicas is
answered and never replayed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serve_app import errors
from serve_app.config import RetryArgs
from serve_app.contracts import (
    AudioSource,
    DecodedAudio,
    Priority,
    Segmentation,
    SpeechSegment,
    TranscribeOptions,
    Transcript,
)
from serve_app.pipeline import (
    Pipeline,
    Poisoned,
    PoisonRegistry,
    as_serve_error,
    replica_death,
    replica_lost,
)


class Stage:
    """A stand-in for a ``DeploymentHandle``: ``.remote()`` and ``.transcribe.remote()`` run
    ``answer`` once per call, after resolving arguments that are earlier stages' responses
    (as Serve does); ``calls`` counts them."""

    def __init__(self, answer: Callable[..., Any]) -> None:
        self.answer = answer
        self.calls = 0
        self.transcribe = self

    def remote(self, *args: Any) -> asyncio.Future[Any]:
        self.calls += 1

        async def run() -> Any:
            resolved = [await a if isinstance(a, asyncio.Future) else a for a in args]
            return self.answer(self.calls, *resolved)

        return asyncio.ensure_future(run())


def transcript(_: int, seg: Any, *rest: Any) -> Transcript:
    return Transcript(language="en", duration_s=seg.duration_s, segments=[])


def pipeline(asr: Stage, deadline_s: float = 5.0) -> tuple[Pipeline, Stage]:
    post = Stage(lambda n, t, o: t)
    retry = RetryArgs(deadline_s=deadline_s, first_backoff_s=0.01, max_backoff_s=0.05)
    decode, vad, asr_h, post_h = (
        cast(DeploymentHandle, x) for x in (Stage(transcript), Stage(transcript), asr, post)
    )
    return Pipeline(decode, vad, asr_h, post_h, retry), post


def run(p: Pipeline) -> Transcript:
    seg = [SpeechSegment(0.0, 1.0, np.zeros(16000, np.float32))]
    return asyncio.run(p.transcribe_segments(seg, 1.0, TranscribeOptions()))


def died() -> ActorDiedError:
    return ActorDiedError()


def test_lost_replica_is_retried_until_it_answers() -> None:
    def flaky(n: int, seg: Any, *rest: Any) -> Transcript:
        if n <= 2:
            raise died() if n == 1 else ActorUnavailableError("gone", b"\0" * 16)
        return transcript(n, seg)

    asr = Stage(flaky)
    p, post = pipeline(asr)
    assert run(p).duration_s == 1.0
    assert asr.calls == 3 and p.retries == 2


def test_bad_request_is_never_retried() -> None:
    def bad(n: int, *a: Any) -> Transcript:
        raise RayTaskError("ASR", "tb", errors.UnsupportedAudio("not audio")).as_instanceof_cause()

    asr = Stage(bad)
    p, _ = pipeline(asr)
    with pytest.raises(errors.UnsupportedAudio, match="not audio"):
        run(p)
    assert asr.calls == 1 and p.retries == 0


def test_gives_up_after_the_deadline() -> None:
    def always_dead(n: int, *a: Any) -> Transcript:
        raise died()

    asr = Stage(always_dead)
    p, _ = pipeline(asr, deadline_s=0.2)
    with pytest.raises(errors.InternalError, match="did not come back"):
        run(p)
    assert 3 <= asr.calls <= 12, asr.calls


def test_no_retry_when_the_deadline_is_zero() -> None:
    asr = Stage(lambda n, *a: (_ for _ in ()).throw(died()))
    p, _ = pipeline(asr, deadline_s=0)
    with pytest.raises(errors.InternalError):
        run(p)
    assert asr.calls == 1


def test_classification() -> None:
    wrapped_death = RayTaskError("Postprocess", "tb", died()).as_instanceof_cause()
    assert replica_lost(died()) and replica_lost(wrapped_death)
    assert not replica_lost(RayTaskError("ASR", "tb", errors.Overloaded("busy")).as_instanceof_cause())
    assert not replica_lost(TimeoutError()) and not replica_lost(ValueError("x"))
    assert isinstance(
        as_serve_error(BackPressureError(num_queued_requests=1, max_queued_requests=1)), errors.Overloaded
    )
    assert isinstance(as_serve_error(TimeoutError()), errors.InternalError)


# --- poison requests: a request that kills replicas is answered, never replayed -----------------
# Ray's errors as a DeploymentHandle raises them (checked against Ray 2.60 with SIGKILLed
# replicas: a direct call, a call whose argument was a killed stage's response, a stream).


def process_death(
    stage: str = "Decode", actor: str = "a1" * 16, exit_type: str = "SYSTEM_ERROR"
) -> ActorDiedError:
    """A replica process that died during the call, its node alive (SIGKILL, a segfault, the
    kernel's OOM killer: ``SYSTEM_ERROR``; Ray's memory monitor: ``NODE_OUT_OF_MEMORY``)."""
    e = ActorDiedError()
    e.error_msg = (
        f"The actor died unexpectedly before finishing this task.\n\tclass_name: ServeReplica:app:{stage}\n"
        f"\tactor_id: {actor}\n\tpid: 4242\n\tip: 10.0.0.2\nThe actor is dead because its worker process "
        f"has died. Worker exit type: {exit_type} Worker exit detail: Worker unexpectedly exits."
    )
    e.actor_id = actor
    return e


def node_death(actor: str = "b2" * 16) -> ActorDiedError:
    e = ActorDiedError()
    e.error_msg = (
        f"The actor died unexpectedly before finishing this task.\n\tclass_name: ServeReplica:app:Decode\n"
        f"\tactor_id: {actor}\nThe actor died because its node has died. Node Id: {'c3' * 28}"
    )
    e.actor_id = actor
    return e


def chained(death: ActorDiedError) -> Exception:
    """What the VAD call raises when the decode response it waited for died with its replica."""
    from ray.serve.exceptions import RayServeException

    wrapped = RayTaskError("VAD.handle_request_with_rejection", "tb", death).as_instanceof_cause()
    try:
        raise RayServeException("an upstream actor died before finishing a dependent task") from wrapped
    except RayServeException as e:
        return e


class StreamStage(Stage):
    """The VAD's stand-in: ``.options(stream=True).stream.remote(audio)`` yields one
    segmentation, after resolving ``audio`` (decode's response) as Serve does."""

    def options(self, **_: Any) -> StreamStage:
        return self

    @property
    def stream(self) -> StreamStage:
        return self

    def remote(self, *args: Any) -> Any:  # type: ignore[override]
        self.calls += 1

        async def gen() -> Any:
            resolved = [await a if isinstance(a, asyncio.Future) else a for a in args]
            yield Segmentation(duration_s=resolved[0].duration_s, segments=[])

        return gen()


def source_pipeline(decode_answer: Callable[..., Any]) -> tuple[Pipeline, Stage]:
    decode = Stage(decode_answer)
    retry = RetryArgs(deadline_s=5.0, first_backoff_s=0.01, max_backoff_s=0.05)
    stages = (decode, StreamStage(lambda *a: None), Stage(transcript), Stage(lambda n, t, o: t))
    d, v, a, p = (cast(DeploymentHandle, x) for x in stages)
    return Pipeline(d, v, a, p, retry), decode


def send(p: Pipeline, data: bytes) -> Transcript:
    return asyncio.run(p.transcribe_source(AudioSource(data=data), TranscribeOptions()))


def decoded(n: int, source: AudioSource) -> DecodedAudio:
    return DecodedAudio(samples=np.zeros(16000, np.float32))


def dies(*deaths: Callable[[int], BaseException]) -> Callable[..., DecodedAudio]:
    """Decode's answer: call n raises ``deaths[n - 1](n)``, later calls decode."""

    def answer(n: int, source: AudioSource) -> DecodedAudio:
        if n <= len(deaths):
            raise deaths[n - 1](n)
        return decoded(n, source)

    return answer


def test_a_request_that_kills_two_replicas_is_answered_and_never_replayed() -> None:
    kill = lambda n: process_death(actor=f"{n:032x}")  # noqa: E731
    p, decode = source_pipeline(dies(kill, lambda n: chained(kill(n)), kill, kill))
    with pytest.raises(
        errors.InternalError, match="not retried because it took down a pipeline replica twice"
    ):
        send(p, b"poison")
    assert decode.calls == 2 and p.poisoned == 1, (decode.calls, p.poisoned)


def test_one_death_is_retried_once_and_one_death_seen_twice_counts_once() -> None:
    p, decode = source_pipeline(dies(lambda n: process_death(actor="d4" * 16)))
    assert send(p, b"unlucky").duration_s == 1.0 and decode.calls == 2
    same = lambda n: process_death(actor="e5" * 16)  # noqa: E731  (routed again to the dead one)
    p, decode = source_pipeline(dies(same, same, same))
    assert send(p, b"unlucky").duration_s == 1.0 and decode.calls == 4 and p.poisoned == 0


def test_lost_nodes_and_unreachable_replicas_are_retried_as_before() -> None:
    unavailable = lambda n: ActorUnavailableError("gone", b"\0" * 16)  # noqa: E731
    node = lambda n: node_death(actor=f"{n:032x}")  # noqa: E731
    p, decode = source_pipeline(
        dies(node, node, unavailable, lambda n: chained(node_death(f"{n:032x}")), node)
    )
    assert send(p, b"fine").duration_s == 1.0
    assert decode.calls == 6 and p.poisoned == 0 and p.retries == 5


def test_a_request_that_runs_replicas_out_of_memory_is_413() -> None:
    from ray.exceptions import OutOfMemoryError

    oom = lambda n: OutOfMemoryError("Task was killed due to the node running low on memory.")  # noqa: E731
    p, decode = source_pipeline(dies(oom, oom, oom))
    with pytest.raises(errors.PayloadTooLarge, match="more memory than a pipeline replica has"):
        send(p, b"huge")
    assert decode.calls == 2
    monitor = lambda n: process_death("ASR", f"{n:032x}", exit_type="NODE_OUT_OF_MEMORY")  # noqa: E731
    p, decode = source_pipeline(dies(monitor, monitor))
    with pytest.raises(errors.PayloadTooLarge):
        send(p, b"huge")


def test_a_repeat_of_a_poison_upload_is_refused_without_calling_a_stage() -> None:
    kill = lambda n: process_death(actor=f"{n:032x}")  # noqa: E731
    p, decode = source_pipeline(dies(kill, kill))
    with pytest.raises(errors.InternalError):
        send(p, b"poison")
    assert decode.calls == 2
    for _ in range(3):
        with pytest.raises(errors.InternalError, match="identical request took down"):
            send(p, b"poison")
    assert decode.calls == 2 and p.refused == 3
    assert send(p, b"another upload").duration_s == 1.0 and decode.calls == 3


def test_the_registry_is_bounded_and_only_hashes_once_it_holds_something(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import serve_app.pipeline as pipeline_module

    hashed: list[AudioSource] = []
    real = pipeline_module.source_key

    def counting(source: AudioSource) -> str:
        hashed.append(source)
        return real(source)

    monkeypatch.setattr(pipeline_module, "source_key", counting)
    p, _ = source_pipeline(decoded)
    send(p, b"common path")
    assert hashed == [], "an upload was hashed while no request had been answered as poison"
    registry = PoisonRegistry(size=3)
    for i in range(5):
        registry.add(str(i), Poisoned(memory=False, stages=("Decode", "Decode")))
    assert len(registry) == 3 and registry.get("0") is None and registry.get("4") is not None


def test_death_classification() -> None:
    from ray.exceptions import NodeDiedError, OutOfMemoryError

    d = replica_death(chained(process_death("Decode", "f6" * 16)))
    assert d is not None and (d.stage, d.actor, d.memory) == ("Decode", "f6" * 16, False), d
    oom = replica_death(process_death("ASR", exit_type="NODE_OUT_OF_MEMORY"))
    assert oom is not None and oom.memory and oom.stage == "ASR"
    oom = replica_death(OutOfMemoryError("Task was killed due to the node running low on memory."))
    assert oom is not None and oom.memory
    for not_its_fault in (
        node_death(),
        chained(node_death()),
        NodeDiedError("node gone"),
        ActorUnavailableError("gone", b"\0" * 16),
        died(),  # no known cause (e.g. killed by Serve): not counted
        RayTaskError("ASR", "tb", errors.UnsupportedAudio("x")).as_instanceof_cause(),
    ):
        assert replica_death(not_its_fault) is None, not_its_fault


# --- the windowed path: every window of a request reaches ASR with its priority, under one key


class StreamingVad:
    """A stand-in VAD whose ``options(stream=True).stream.remote(audio)`` yields ``windows``
    segmentations of one second each, as the VAD streams a long recording."""

    def __init__(self, windows: int) -> None:
        self.windows = windows
        self.stream = self

    def options(self, **_: Any) -> StreamingVad:
        return self

    def remote(self, audio: Any) -> Any:
        async def gen() -> Any:
            for i in range(self.windows):
                samples = np.zeros(16000, np.float32)
                yield Segmentation(1.0, [SpeechSegment(float(i), i + 1.0, samples)], offset_s=float(i))

        return gen()


def test_every_window_reaches_asr_with_the_requests_priority_and_one_key() -> None:
    seen: list[tuple[float, Priority, str]] = []

    def asr_answer(_: int, seg: Segmentation, options: Any, priority: Priority, key: str) -> Transcript:
        seen.append((seg.offset_s, priority, key))
        return Transcript(language="en", duration_s=seg.duration_s, segments=[], offset_s=seg.offset_s)

    asr = Stage(asr_answer)
    post_got: list[Transcript] = []

    def post_answer(_: int, t: Transcript, options: Any) -> Transcript:
        post_got.append(t)
        return t

    post = Stage(post_answer)
    decode, vad, asr_h, post_h = (
        cast(DeploymentHandle, x) for x in (Stage(lambda n, s: s), StreamingVad(3), asr, post)
    )
    p = Pipeline(decode, vad, asr_h, post_h, RetryArgs())
    batch = TranscribeOptions(priority=Priority.BATCH)

    async def two_requests() -> None:
        await p.transcribe_samples(np.zeros(48000, np.float32), batch)
        await p.transcribe_samples(np.zeros(48000, np.float32), TranscribeOptions())

    asyncio.run(two_requests())
    first, second = seen[:3], seen[3:]
    assert [w[0] for w in first] == [0.0, 1.0, 2.0], seen  # every window, in order
    assert {w[1] for w in first} == {Priority.BATCH} and {w[1] for w in second} == {Priority.INTERACTIVE}
    assert len({w[2] for w in first}) == 1 and len({w[2] for w in second}) == 1, seen  # one line each
    assert first[0][2] != second[0][2], "two requests shared one line of the ASR queue"
    assert len(post_got) == 2 and post_got[0].duration_s == 3.0, post_got  # merged, then postprocessed
