"""FSMN-VAD segmentation: speech regions, cut to at most ``max_segment_s``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from serve_app.contracts import SAMPLE_RATE, DecodedAudio, Segmentation, SpeechSegment
from serve_app.engines.funasr_loader import load_automodel


def split_regions(
    regions_ms: list[tuple[int, int]], max_segment_s: float, merge_gap_s: float
) -> list[tuple[int, int]]:
    """Merge regions closer than ``merge_gap_s`` while they fit, then cut any region longer
    than ``max_segment_s`` into equal pieces that do."""
    max_ms = int(max_segment_s * 1000)
    merged: list[tuple[int, int]] = []
    for beg, end in sorted(regions_ms):
        if merged and beg - merged[-1][1] <= merge_gap_s * 1000 and end - merged[-1][0] <= max_ms:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((beg, end))
    out: list[tuple[int, int]] = []
    for beg, end in merged:
        pieces = max(1, -(-(end - beg) // max_ms))
        step = (end - beg) / pieces
        out.extend((round(beg + i * step), round(beg + (i + 1) * step)) for i in range(pieces))
    return out


class FsmnVad:
    """FunASR FSMN-VAD over a whole file."""

    def __init__(
        self, model_dir: Path, max_segment_s: float = 30.0, merge_gap_s: float = 0.0, threads: int = 1
    ) -> None:
        self.max_segment_s = max_segment_s
        self.merge_gap_s = merge_gap_s
        self._model = load_automodel(model_dir, device="cpu", threads=threads)
        # AutoModel rewrites its own kwargs per call: one call at a time.
        self._lock = threading.Lock()

    def regions_ms(self, samples: np.ndarray) -> list[tuple[int, int]]:
        if samples.size < SAMPLE_RATE // 10:
            return []
        with self._lock, torch.no_grad():
            out = self._model.generate(input=samples, fs=SAMPLE_RATE, disable_pbar=True)
        value = out[0].get("value", []) if out else []
        return [(int(b), int(e)) for b, e in value if e > b]

    def segment(self, audio: DecodedAudio) -> list[SpeechSegment]:
        """Speech segments of ``audio`` with absolute times (shifted by ``audio.offset_s``)."""
        n = len(audio.samples)
        segments = []
        for beg, end in split_regions(self.regions_ms(audio.samples), self.max_segment_s, self.merge_gap_s):
            a, b = beg * SAMPLE_RATE // 1000, min(n, end * SAMPLE_RATE // 1000)
            if b - a >= SAMPLE_RATE // 100:
                segments.append(
                    SpeechSegment(
                        start_s=audio.offset_s + a / SAMPLE_RATE,
                        end_s=audio.offset_s + b / SAMPLE_RATE,
                        samples=audio.samples[a:b],
                    )
                )
        return segments

    def segmentation(self, audio: DecodedAudio) -> Segmentation:
        return cut_window(audio, self.segment(audio))

    def windows(self, audio: DecodedAudio, window_s: float) -> Iterator[Segmentation]:
        """``audio`` segmented window by window, each window starting where the previous one's
        ``next_start_s`` says (so speech is never cut at a window's edge): a long recording's
        first segments are ready long before the VAD has read its end."""
        n = len(audio.samples)
        size = int(window_s * SAMPLE_RATE)
        start = 0
        while True:
            end = min(n, start + size)
            window = DecodedAudio(
                audio.samples[start:end],
                offset_s=audio.offset_s + start / SAMPLE_RATE,
                complete=audio.complete and end >= n,
            )
            seg = self.segmentation(window)
            yield seg
            if seg.next_start_s is None or end >= n:
                return
            start = round((seg.next_start_s - audio.offset_s) * SAMPLE_RATE)


WINDOW_TAIL_S = 0.3
"""Speech ending this close to a window's cut is taken to run on into the next window."""


def cut_window(audio: DecodedAudio, segments: list[SpeechSegment]) -> Segmentation:
    """The segmentation of ``audio``. For a window cut short of the recording's end,
    ``next_start_s`` says where the next window starts: at the cut, or, when speech runs into
    the cut, where that speech starts (it is left to the next window, so no segment is cut
    mid-word). A segment that starts at the window's own start is kept, or no window would
    advance."""
    end_s = audio.offset_s + audio.duration_s
    if audio.complete:
        return Segmentation(duration_s=audio.duration_s, segments=segments, offset_s=audio.offset_s)
    if segments:
        last = segments[-1]
        if end_s - last.end_s <= WINDOW_TAIL_S and last.start_s > audio.offset_s + WINDOW_TAIL_S:
            return Segmentation(
                duration_s=last.start_s - audio.offset_s,
                segments=segments[:-1],
                offset_s=audio.offset_s,
                next_start_s=last.start_s,
            )
    return Segmentation(
        duration_s=audio.duration_s, segments=segments, offset_s=audio.offset_s, next_start_s=end_s
    )
