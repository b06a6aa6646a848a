"""The production FunASR path end to end: random-weight Paraformer + real FSMN-VAD +
random-weight CT-punc + Chinese ITN, through HTTP."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np

from tests.support import SENTENCES
from tools.audio import encode_wav, with_pauses


def test_funasr_graph_end_to_end(funasr_app: str, say: Callable[[str], np.ndarray]) -> None:
    audio = encode_wav(with_pauses([say(s) for s in SENTENCES], pause_s=2.0))
    resp = httpx.post(
        f"{funasr_app}/v1/audio/transcriptions",
        files={"file": ("s.wav", audio)},
        data={"model": "paraformer-tiny", "response_format": "verbose_json"},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["language"] == "zh" and len(body["segments"]) == 2, body
    # Random weights: the words are noise, but every speech segment must yield tokens.
    assert all(s["text"] for s in body["segments"]), body["segments"]
    assert body["text"] == "".join(s["text"] for s in body["segments"])


def test_punctuation_switch(funasr_app: str, say: Callable[[str], np.ndarray]) -> None:
    audio = encode_wav(with_pauses([say(SENTENCES[0])], pause_s=0.5))

    def text(punctuation: str) -> str:
        r = httpx.post(
            f"{funasr_app}/v1/audio/transcriptions",
            files={"file": ("s.wav", audio)},
            data={"punctuation": punctuation, "itn": "false"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        return str(r.json()["text"])

    plain, punctuated = text("false").replace(" ", ""), text("true").replace(" ", "")
    # The punctuation model only inserts marks: stripping them gives back the plain text.
    marks = "，。？、,.?"  # FunASR uses ASCII marks after Latin words
    assert punctuated.translate({ord(c): None for c in marks}) == plain
    assert any(c in punctuated for c in marks), punctuated
