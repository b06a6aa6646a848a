"""FSMN-VAD (real weights) on real speech with pauses."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from serve_app.contracts import SAMPLE_RATE, DecodedAudio, SpeechSegment
from serve_app.engines.vad import FsmnVad, cut_window, split_regions
from serve_app.model_paths import resolve
from tests.support import SENTENCES
from tools.audio import with_pauses


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


def _seg(a: float, b: float) -> SpeechSegment:
    return SpeechSegment(a, b, np.zeros(int((b - a) * SAMPLE_RATE), np.float32))


def test_window_leaves_speech_running_into_the_cut_to_the_next_window() -> None:
    window = DecodedAudio(np.zeros(60 * SAMPLE_RATE, np.float32), offset_s=600.0, complete=False)
    seg = cut_window(window, [_seg(601.0, 610.0), _seg(655.0, 659.9)])
    assert [s.start_s for s in seg.segments] == [601.0]
    assert seg.next_start_s == 655.0 and seg.duration_s == pytest.approx(55.0)
    # Speech that ends well before the cut is kept; the next window starts at the cut.
    seg = cut_window(window, [_seg(601.0, 610.0), _seg(640.0, 650.0)])
    assert len(seg.segments) == 2 and seg.next_start_s == pytest.approx(660.0)


def test_window_always_advances_and_the_last_window_ends() -> None:
    # One segment from the window's start to its cut: kept, or the next window would be this one.
    window = DecodedAudio(np.zeros(30 * SAMPLE_RATE, np.float32), offset_s=30.0, complete=False)
    seg = cut_window(window, [_seg(30.0, 60.0)])
    assert len(seg.segments) == 1 and seg.next_start_s == pytest.approx(60.0)
    last = DecodedAudio(np.zeros(5 * SAMPLE_RATE, np.float32), offset_s=60.0, complete=True)
    assert cut_window(last, [_seg(60.5, 64.99)]).next_start_s is None


def test_segments_of_a_window_have_absolute_times(vad: FsmnVad, say: Callable[[str], np.ndarray]) -> None:
    audio = with_pauses([say(SENTENCES[0])], 1.0)
    whole = vad.segment(DecodedAudio(audio))
    shifted = vad.segment(DecodedAudio(audio, offset_s=100.0))
    assert [round(s.start_s - 100.0, 3) for s in shifted] == [round(s.start_s, 3) for s in whole]


def test_window_by_window_segmentation_cuts_no_speech(vad: FsmnVad, say: Callable[[str], np.ndarray]) -> None:
    """A recording segmented in short windows gives the segments of the whole recording: speech
    that crosses a window's edge is left to the next window, which starts at it."""
    audio = with_pauses([say(s) for s in SENTENCES * 3], pause_s=1.5)
    whole = [(round(s.start_s, 1), round(s.end_s, 1)) for s in vad.segment(DecodedAudio(audio))]
    longest = max(b - a for a, b in whole)
    parts = list(vad.windows(DecodedAudio(audio), window_s=2 * longest))
    assert len(parts) >= 2
    windowed = [(round(s.start_s, 1), round(s.end_s, 1)) for p in parts for s in p.segments]
    assert len(windowed) == len(whole), (windowed, whole)
    for (a, b), (c, d) in zip(windowed, whole, strict=True):
        assert abs(a - c) <= 0.3 and abs(b - d) <= 0.3, (windowed, whole)
    assert sum(p.duration_s for p in parts) == pytest.approx(len(audio) / SAMPLE_RATE, abs=0.01)
    assert parts[-1].next_start_s is None and all(p.next_start_s is not None for p in parts[:-1])
