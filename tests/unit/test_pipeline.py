"""The pipeline's handling of stage failures, Ray-free: stage handles are stand-ins that answer
or fail like Ray's do, the Pipeline is the real one. A call lost with its replica is sent
again; a request that is itself bad is never retried."""

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
from serve_app.contracts import SpeechSegment, TranscribeOptions, Transcript
from serve_app.pipeline import Pipeline, as_serve_error, replica_lost


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
