"""The shipped local config, driven by the official openai SDK, on real English speech."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.support import SENTENCES
from tools.audio import encode_wav, with_pauses

BECKETT_WORDS = ["ever", "tried", "failed", "matter", "try", "again", "fail", "better"]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def assert_heard(text: str, expected: str, recall: float = 0.75) -> None:
    """Most expected words come back. Whisper tiny.en has a WER of about 0.25 on espeak's
    synthetic voice, so one misheard word must not fail the test; a wrong pipeline
    (wrong sample rate, cut segments, mangled text) loses far more than a quarter."""
    want = words(expected)
    got = set(words(text))
    heard = [w for w in want if w in got]
    assert len(heard) >= recall * len(want), f"heard {heard} of {want} in {text!r}"


@pytest.fixture(scope="module")
def client(local_app: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{local_app}/v1", api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def two_sentences(say: Callable[[str], np.ndarray]) -> bytes:
    return encode_wav(with_pauses([say(s) for s in SENTENCES], pause_s=2.0))


def test_health_ready_models(local_app: str) -> None:
    assert httpx.get(f"{local_app}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{local_app}/readyz").json()
    assert ready["status"] == "ready" and all(ready["stages"].values()), ready
    ids = [m["id"] for m in httpx.get(f"{local_app}/v1/models").json()["data"]]
    assert ids == ["whisper-1", "whisper-tiny.en"]


def test_sdk_lists_models(client: openai.OpenAI) -> None:
    assert "whisper-1" in [m.id for m in client.models.list()]


def test_json_human_speech(client: openai.OpenAI, beckett_wav: Path) -> None:
    with beckett_wav.open("rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    got = words(result.text)
    missing = [w for w in BECKETT_WORDS if w not in got]
    assert not missing, f"missing {missing} in {result.text!r}"


def test_text_format(client: openai.OpenAI, two_sentences: bytes) -> None:
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("s.wav", two_sentences), response_format="text"
    )
    assert isinstance(text, str)
    assert_heard(text, " ".join(SENTENCES))


def test_verbose_json_segments_and_words(client: openai.OpenAI, two_sentences: bytes) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1",
        file=("s.wav", two_sentences),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert result.duration == pytest.approx(len(two_sentences) / 32000, abs=0.1)
    assert result.segments is not None and len(result.segments) == 2, result.segments
    first, second = result.segments
    assert 1.5 < first.start < 2.4 and first.end < second.start, (first, second)
    assert_heard(first.text, SENTENCES[0])
    assert_heard(second.text, SENTENCES[1])
    assert result.words and len(result.words) >= 10
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and result.words[0].start >= first.start - 0.05


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles(client: openai.OpenAI, two_sentences: bytes, fmt: str) -> None:
    body = client.audio.transcriptions.create(
        model="whisper-1", file=("s.wav", two_sentences), response_format=fmt
    )  # type: ignore[call-overload]
    assert isinstance(body, str)
    stamps = re.findall(r"(\d\d:\d\d:\d\d[,.]\d\d\d) --> (\d\d:\d\d:\d\d[,.]\d\d\d)", body)
    assert len(stamps) == 2, body
    assert (fmt == "vtt") == body.startswith("WEBVTT")
    assert_heard(body, " ".join(SENTENCES))


def test_silence_is_200_with_empty_text(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("s.wav", encode_wav(np.zeros(32000)))
    )
    assert result.text == ""


def test_stereo_48k_mp3_works(client: openai.OpenAI, two_sentences: bytes) -> None:
    from tools.audio import transcode

    mp3 = transcode(two_sentences, ["-ar", "48000", "-ac", "2", "-c:a", "libmp3lame", "-f", "mp3"])
    result = client.audio.transcriptions.create(model="whisper-1", file=("s.mp3", mp3))
    assert_heard(result.text, " ".join(SENTENCES))
