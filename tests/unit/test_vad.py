"""FSMN-VAD (real weights) on real speech with pauses."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from serve_app.contracts import SAMPLE_RATE, DecodedAudio
from serve_app.engines.vad import FsmnVad, split_regions
from serve_app.models import resolve
from tests.audio import with_pauses
from tests.conftest import SENTENCES


@pytest.fixture(scope="module")
def vad() -> FsmnVad:
    return FsmnVad(resolve("embedded:fsmn-vad"), max_segment_s=30)


def test_speech_with_pauses_is_cut_at_the_pauses(vad: FsmnVad, say: Callable[[str], np.ndarray]) -> None:
    parts = [say(s) for s in SENTENCES]
    audio = with_pauses(parts, pause_s=2.0)
    segments = vad.segment(DecodedAudio(audio))
    assert len(segments) == 2, f"got {[(s.start_s, s.end_s) for s in segments]}"
    # Each segment covers its sentence: starts near 2 s and near 2 + len0 + 2 s.
    first_end = 2.0 + len(parts[0]) / SAMPLE_RATE
    assert abs(segments[0].start_s - 2.0) < 0.4 and abs(segments[0].end_s - first_end) < 0.5
    assert abs(segments[1].start_s - (first_end + 2.0)) < 0.4
    for s in segments:
        assert len(s.samples) == pytest.approx((s.end_s - s.start_s) * SAMPLE_RATE, abs=2)


def test_silence_has_no_segments(vad: FsmnVad) -> None:
    assert vad.segment(DecodedAudio(np.zeros(3 * SAMPLE_RATE, dtype=np.float32))) == []


def test_long_speech_is_split_to_the_limit(say: Callable[[str], np.ndarray]) -> None:
    short = FsmnVad(resolve("embedded:fsmn-vad"), max_segment_s=2.0)
    speech = say("This sentence is spoken without any pause so that it runs for several seconds in a row.")
    segments = short.segment(DecodedAudio(with_pauses([speech], 0.5)))
    assert len(segments) >= 2
    assert all(s.duration_s <= 2.0 + 1e-3 for s in segments), [s.duration_s for s in segments]


def test_split_regions() -> None:
    assert split_regions([(0, 1000), (1200, 2000)], max_segment_s=30, merge_gap_s=0.5) == [(0, 2000)]
    assert split_regions([(0, 1000), (1200, 2000)], max_segment_s=30, merge_gap_s=0.1) == [
        (0, 1000),
        (1200, 2000),
    ]
    assert split_regions([(0, 70_000)], max_segment_s=30, merge_gap_s=0) == [
        (0, 23333),
        (23333, 46667),
        (46667, 70000),
    ]
    # Merging never builds a segment longer than the limit.
    assert split_regions([(0, 20_000), (20_100, 40_000)], max_segment_s=30, merge_gap_s=1) == [
        (0, 20_000),
        (20_100, 40_000),
    ]
