"""Render a ``Transcript`` in the OpenAI response formats."""

from __future__ import annotations

from typing import Any, Literal, get_args

from serve_app.contracts import Transcript
from serve_app.errors import InvalidRequest

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def parse_format(value: str | None) -> ResponseFormat:
    fmt = value or "json"
    if fmt not in RESPONSE_FORMATS:
        raise InvalidRequest(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}; got {fmt!r}")
    return fmt  # type: ignore[return-value]


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(t: Transcript) -> str:
    blocks = []
    for i, seg in enumerate((s for s in t.segments if s.text.strip()), start=1):
        blocks.append(
            f"{i}\n{_timestamp(seg.start_s, ',')} --> {_timestamp(seg.end_s, ',')}\n{seg.text.strip()}\n"
        )
    return "\n".join(blocks)


def to_vtt(t: Transcript) -> str:
    cues = [
        f"{_timestamp(seg.start_s, '.')} --> {_timestamp(seg.end_s, '.')}\n{seg.text.strip()}\n"
        for seg in t.segments
        if seg.text.strip()
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_verbose(t: Transcript, words: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": t.language,
        "duration": round(t.duration_s, 3),
        "text": t.text,
        "segments": [
            {
                "id": i,
                "seek": 0,
                "start": round(s.start_s, 3),
                "end": round(s.end_s, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for i, s in enumerate(t.segments)
        ],
    }
    if words:
        body["words"] = [
            {"word": w.word, "start": round(w.start_s, 3), "end": round(w.end_s, 3)} for w in t.words
        ]
    return body


def render(t: Transcript, fmt: ResponseFormat, words: bool) -> str | dict[str, Any]:
    """The response body: a dict for the JSON formats, a string otherwise."""
    if fmt == "json":
        return {"text": t.text}
    if fmt == "verbose_json":
        return to_verbose(t, words)
    if fmt == "srt":
        return to_srt(t)
    if fmt == "vtt":
        return to_vtt(t)
    return t.text + "\n" if t.text else ""
