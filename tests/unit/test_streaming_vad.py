"""Streaming FSMN-VAD (FunASR's real weights) on espeak speech with pauses, fed in pieces."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.contracts import SAMPLE_RATE
from serve_app.engines.streaming_vad import StreamingFsmnVad, VadEvent, VadSession
from serve_app.model_paths import resolve
from tests.support import SENTENCES
from tools.audio import speak, with_pauses

PAUSE_S = 2.0


@pytest.fixture(scope="module")
def vad() -> StreamingFsmnVad:
    return StreamingFsmnVad(resolve("embedded:fsmn-vad"), max_end_silence_ms=800)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Two sentences with 2 s pauses around them, and where each sentence truly is."""
    parts = [np.asarray(speak(s, trim=True)) for s in SENTENCES]
    truth, t = [], PAUSE_S
    for p in parts:
        truth.append((t, t + len(p) / SAMPLE_RATE))
        t += len(p) / SAMPLE_RATE + PAUSE_S
    return with_pauses(parts, PAUSE_S), truth


def stream(vad: StreamingFsmnVad, session: VadSession, audio: np.ndarray, piece: int) -> list[VadEvent]:
    events: list[VadEvent] = []
    for i in range(0, len(audio), piece):
        events += vad.feed(session, audio[i : i + piece], is_final=i + piece >= len(audio))
    return events


def as_regions(events: list[VadEvent]) -> list[tuple[float, float]]:
    kinds = [e.kind for e in events]
    assert kinds == ["start", "end"] * (len(kinds) // 2), f"got {events}"
    return [(events[i].time_s, events[i + 1].time_s) for i in range(0, len(events), 2)]


def test_speech_start_and_end_are_found_near_the_truth(
    vad: StreamingFsmnVad, speech: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    audio, truth = speech
    regions = as_regions(stream(vad, vad.new_session(), audio, 3200))
    assert len(regions) == len(truth), f"got {regions}, want {truth}"
    for (beg, end), (true_beg, true_end) in zip(regions, truth, strict=True):
        # FunASR backs a start up by 200 ms and carries an end 100 ms on: allow for both.
        assert abs(beg - true_beg) < 0.35 and abs(end - true_end) < 0.35, f"got {regions}, want {truth}"


def test_events_do_not_depend_on_piece_size(
    vad: StreamingFsmnVad, speech: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    audio, _ = speech
    reference = stream(vad, vad.new_session(), audio, 3200)
    for piece in (960, 5000, 16000):
        assert stream(vad, vad.new_session(), audio, piece) == reference, f"piece {piece}"


def test_interleaved_sessions_are_isolated(
    vad: StreamingFsmnVad, speech: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    audio, _ = speech
    other = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), audio[: len(audio) // 2]])
    alone = [stream(vad, vad.new_session(), a, 3200) for a in (audio, other)]
    sessions = [vad.new_session(), vad.new_session()]
    got: list[list[VadEvent]] = [[], []]
    pieces = [[(a[i : i + 3200], i + 3200 >= len(a)) for i in range(0, len(a), 3200)] for a in (audio, other)]
    while any(pieces):
        # Alternate the order each round; one session runs out first.
        order = [1, 0] if len(pieces[0]) % 2 else [0, 1]
        ks = [k for k in order if pieces[k]]
        items = [(sessions[k], *pieces[k].pop(0)) for k in ks]
        for k, events in zip(ks, vad.step(items), strict=True):
            got[k] += events
    assert got == alone


def test_final_closes_open_speech_and_the_clock_runs_on(
    vad: StreamingFsmnVad, speech: tuple[np.ndarray, list[tuple[float, float]]]
) -> None:
    audio, truth = speech
    cut = int((truth[0][0] + 1.0) * SAMPLE_RATE)  # stop one second into the first sentence
    session = vad.new_session()
    events = stream(vad, session, audio[:cut], 3200)
    assert [e.kind for e in events] == ["start", "end"], f"got {events}"
    assert abs(events[1].time_s - cut / SAMPLE_RATE) < 0.1
    # The same session goes on with the whole recording: times count from the stream start.
    again = as_regions(stream(vad, session, audio, 3200))
    offset = cut / SAMPLE_RATE
    assert len(again) == len(truth)
    for (beg, end), (true_beg, true_end) in zip(again, truth, strict=True):
        assert abs(beg - offset - true_beg) < 0.35 and abs(end - offset - true_end) < 0.35, f"got {again}"


def test_silence_has_no_events_and_state_stays_small(vad: StreamingFsmnVad) -> None:
    session = vad.new_session()
    assert stream(vad, session, np.zeros(5 * SAMPLE_RATE, np.float32), 3200) == []
    segment = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), np.asarray(speak("hello world", trim=True))])
    session = vad.new_session()
    for _ in range(6):
        for i in range(0, len(segment), 3200):
            vad.feed(session, segment[i : i + 3200])
    assert len(session.cache["stats"].output_data_buf) <= 1, "sent segments are dropped"
    vad.feed(session, np.zeros(0, np.float32), is_final=True)
    assert not session.in_speech and session.offset_samples == session.samples_seen
