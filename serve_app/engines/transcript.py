"""Transcript assembly: an engine's per-segment results, with times relative to each segment,
become one transcript with absolute times in the recording."""

from __future__ import annotations

from collections.abc import Sequence

from serve_app.contracts import AsrResult, Segmentation, Transcript, TranscriptSegment, Word


def assemble(seg: Segmentation, results: Sequence[AsrResult], language: str) -> Transcript:
    if len(results) != len(seg.segments):
        raise ValueError(f"{len(results)} results for {len(seg.segments)} segments")
    segments = [
        TranscriptSegment(
            start_s=s.start_s,
            end_s=s.end_s,
            text=r.text,
            words=[Word(s.start_s + w.start_s, s.start_s + w.end_s, w.word) for w in r.words],
        )
        for s, r in zip(seg.segments, results, strict=True)
    ]
    return Transcript(
        language=language,
        duration_s=seg.duration_s,
        segments=segments,
        offset_s=seg.offset_s,
        next_start_s=seg.next_start_s,
    )


def merge(parts: Sequence[Transcript]) -> Transcript:
    """Consecutive windows' transcripts as one (the windows tile the recording)."""
    if not parts:
        raise ValueError("nothing to merge")
    first, last = parts[0], parts[-1]
    return Transcript(
        language=first.language,
        duration_s=sum(p.duration_s for p in parts),
        segments=[s for p in parts for s in p.segments],
        offset_s=first.offset_s,
        next_start_s=last.next_start_s,
    )
