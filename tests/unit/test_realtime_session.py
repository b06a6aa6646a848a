"""``RealtimeSession`` without Ray or models: a stand-in Streaming handle that answers with the
VAD's speech starts and ends at scripted stream times, and a stand-in pipeline that says which
span it was given. Finals come in utterance order even when a later one is ready first, an
utterance longer than ``max_utterance_s`` is cut into finals of that length, ``commit()`` takes
everything since the last commit (with word timestamps, as every final has) and ``clear()``
forgets what was not committed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from serve_app.config import LimitsArgs, RealtimeArgs
from serve_app.contracts import (
    SAMPLE_RATE,
    SpeechSegment,
    TranscribeOptions,
    Transcript,
    TranscriptSegment,
    Word,
)
from serve_app.realtime.events import Event, Final, SpeechStarted, SpeechStopped
from serve_app.realtime.session import RealtimeSession, SessionOptions


class ScriptedStreaming:
    """A Streaming handle stand-in: each ``feed`` answers with the scripted VAD events whose
    time the audio received so far has reached (all that are left on the final call)."""

    def __init__(self, script: list[tuple[str, float]]) -> None:
        self.script = list(script)
        self.received_s = 0.0
        self.closed = False

    def options(self, **_: Any) -> ScriptedStreaming:
        return self

    def __getattr__(self, name: str) -> Any:
        return SimpleNamespace(remote=getattr(self, f"_{name}"))

    async def _open(self, sid: str) -> dict[str, Any]:
        return {"replica": "fake", "online_asr": True}

    async def _attach(self, sid: str) -> None:
        await asyncio.Event().wait()

    async def _feed(self, sid: str, samples: np.ndarray, final: bool) -> Any:
        self.received_s += samples.size / SAMPLE_RATE
        due = [e for e in self.script if final or e[1] <= self.received_s + 1e-9]
        self.script = self.script[len(due) :]
        events = [SimpleNamespace(kind=kind, time_s=t) for kind, t in due]
        return SimpleNamespace(replica="fake", partial="", events=events)

    async def _close(self, sid: str) -> None:
        self.closed = True


@dataclass
class SpanPipeline:
    """A pipeline stand-in: the transcript of a span is its times (``"0.2-1.0"``), one word
    with timestamps when they were asked for. ``delays`` holds each call's wait, in call order."""

    delays: list[float] = field(default_factory=list)
    calls: list[tuple[float, float, TranscribeOptions]] = field(default_factory=list)

    async def _answer(self, start_s: float, end_s: float, opts: TranscribeOptions) -> Transcript:
        self.calls.append((start_s, end_s, opts))
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        text = f"{start_s:.1f}-{end_s:.1f}"
        words = [Word(start_s, end_s, text)] if opts.asr.word_timestamps else []
        return Transcript("en", end_s, [TranscriptSegment(start_s, end_s, text, words)])

    async def transcribe_segments(
        self, segments: list[SpeechSegment], duration_s: float, opts: TranscribeOptions
    ) -> Transcript:
        (seg,) = segments
        return await self._answer(seg.start_s, seg.end_s, opts)

    async def transcribe_samples(
        self, samples: np.ndarray, opts: TranscribeOptions, offset_s: float = 0.0
    ) -> Transcript:
        return await self._answer(offset_s, offset_s + samples.size / SAMPLE_RATE, opts)


def make_session(
    streaming: ScriptedStreaming,
    pipeline: SpanPipeline,
    events: list[Event],
    realtime: RealtimeArgs | None = None,
    **options: Any,
) -> RealtimeSession:
    async def emit(event: Event) -> None:
        events.append(event)

    return RealtimeSession(
        cast(Any, streaming),
        cast(Any, pipeline),
        realtime or RealtimeArgs(),
        LimitsArgs(),
        SessionOptions(language="en", **options),
        emit,
    )


def seconds(s: float) -> np.ndarray:
    return np.full(round(s * SAMPLE_RATE), 0.1, np.float32)


async def fed(streaming: ScriptedStreaming, until_s: float) -> None:
    """Wait until the session has fed the Streaming handle ``until_s`` seconds of audio."""
    for _ in range(1000):
        if streaming.received_s >= until_s - 1e-9:
            await asyncio.sleep(0)  # let the session handle the answer
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"fed {streaming.received_s} s, waited for {until_s} s")


def finals(events: list[Event]) -> list[tuple[int, str, bool]]:
    return [(e.utterance, e.transcript.text, e.last) for e in events if isinstance(e, Final)]


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_finals_come_in_utterance_order_even_when_a_later_one_is_ready_first() -> None:
    async def go() -> None:
        streaming = ScriptedStreaming([("start", 0.2), ("end", 1.0), ("start", 1.2), ("end", 2.0)])
        pipeline = SpanPipeline(delays=[0.2, 0.0])  # the first utterance's final is slow
        events: list[Event] = []
        session = make_session(streaming, pipeline, events)
        await session.start()
        for _ in range(25):
            session.push(seconds(0.1))
            await fed(streaming, streaming.received_s + 0.1)
        await session.finish()
        await session.close()
        got = finals(events)
        assert got == [(0, "0.2-1.0", False), (1, "1.2-2.0", False), (2, "", True)], (got, events)
        turns = [
            (type(e).__name__, e.utterance) for e in events if isinstance(e, SpeechStarted | SpeechStopped)
        ]
        assert turns == [
            ("SpeechStarted", 0),
            ("SpeechStopped", 0),
            ("SpeechStarted", 1),
            ("SpeechStopped", 1),
        ]
        assert streaming.closed, "the session's state on its replica is closed"

    run(go)


def test_an_utterance_longer_than_max_utterance_s_is_cut_into_finals() -> None:
    async def go() -> None:
        streaming = ScriptedStreaming([("start", 0.0)])  # speech that never ends
        pipeline = SpanPipeline()
        events: list[Event] = []
        session = make_session(streaming, pipeline, events, RealtimeArgs(max_utterance_s=2.0))
        await session.start()
        for _ in range(10):
            session.push(seconds(0.5))
            await fed(streaming, streaming.received_s + 0.5)
        await session.finish()
        await session.close()
        got = finals(events)
        assert got == [(0, "0.0-2.0", False), (1, "2.0-4.0", False), (2, "4.0-5.0", True)], got

    run(go)


def test_commit_takes_what_came_since_the_last_one_with_word_timestamps_and_clear_forgets() -> None:
    async def go() -> None:
        streaming = ScriptedStreaming([])
        pipeline = SpanPipeline()
        events: list[Event] = []
        session = make_session(streaming, pipeline, events, turn_detection=False)
        await session.start()
        session.push(seconds(1.0))
        assert session.uncommitted_s == 1.0 and session.utterance == 0
        first = await session.commit()
        assert (first.utterance, first.start_s, first.end_s) == (0, 0.0, 1.0), first
        assert [w.word for w in first.transcript.words] == ["0.0-1.0"], first.transcript
        assert session.uncommitted_s == 0.0 and session.utterance == 1
        session.push(seconds(0.5))
        session.clear()
        assert session.uncommitted_s == 0.0
        session.push(seconds(0.3))
        second = await session.commit()
        assert (second.utterance, second.transcript.text) == (1, "1.5-1.8"), second
        assert second.transcript.words, "a commit's final has word timestamps"
        opts = pipeline.calls[-1][2]
        assert opts.post.punctuation is None and opts.post.itn is None  # the configured default
        await session.close()
        assert not [e for e in events if isinstance(e, Final)], "commit() returns its final"

    run(go)
