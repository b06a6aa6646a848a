"""Realtime plumbing, Ray-free: PCM16 frames of any size, streaming resampling, the bounded
buffer finals are cut from, and FunASR's first message."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.api.protocol import FunasrConfig
from serve_app.config import LimitsArgs
from serve_app.errors import InvalidRequest
from serve_app.realtime.audio import AudioBuffer, Pcm16Stream
from tests.support import pcm16


def test_frames_of_any_size_give_the_same_samples() -> None:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    data = pcm16(x)
    whole = Pcm16Stream(16000).push(data)
    stream = Pcm16Stream(16000)
    pieces = [stream.push(data[i : i + 777]) for i in range(0, len(data), 777)]  # odd sizes: split samples
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    np.testing.assert_allclose(whole, x, atol=2 / 32767)  # int16 truncation and 32767 vs 32768 scaling


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_streaming_resampling_matches_resampling_at_once(rate: int) -> None:
    t = np.arange(rate * 2) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    data = pcm16(tone)
    stream = Pcm16Stream(rate)
    chunks = [stream.push(data[i : i + rate // 5 * 2]) for i in range(0, len(data), rate // 5 * 2)]
    chunks.append(stream.push(b"", last=True))
    out = np.concatenate(chunks)
    assert abs(len(out) - 32000) <= 2, len(out)
    ref = 0.3 * np.sin(2 * np.pi * 440 * np.arange(len(out)) / 16000)
    # Away from the filter's edges the stream is the same tone, with no clicks at chunk joins.
    err = np.abs(
        out[400:-400]
        - ref[400:-400] * (np.dot(out[400:-400], ref[400:-400]) / np.dot(ref[400:-400], ref[400:-400]))
    )
    assert err.max() < 0.02, err.max()


def test_unsupported_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="12345"):
        Pcm16Stream(12345)


def test_buffer_slices_by_stream_time_and_stays_bounded() -> None:
    buf = AudioBuffer(max_s=2.0)
    for i in range(5):  # 5 s of 1 s blocks, each filled with its index
        buf.append(np.full(16000, i, np.float32))
    assert buf.end_s == 5.0 and buf.start_s == 3.0
    assert set(np.unique(buf.slice(3.5, 4.5))) == {3.0, 4.0} and len(buf.slice(3.5, 4.5)) == 16000
    assert len(buf.slice(0.0, 3.0)) == 0  # dropped
    buf.drop_before(4.0)
    assert buf.start_s == 4.0 and set(np.unique(buf.slice(0, 10))) == {4.0}


def test_funasr_config_hotwords_and_limits() -> None:
    limits = LimitsArgs(max_prompt_chars=40)
    cfg = FunasrConfig.parse(
        {"mode": "2pass", "hotwords": '{"阿里巴巴": 20, "通义实验室": 30}', "extra": 1}, limits
    )
    assert cfg.hotword_list() == "阿里巴巴 通义实验室" and cfg.pcm and cfg.audio_fs == 16000
    assert FunasrConfig.parse({"hotwords": "alpha,beta"}, limits).hotword_list() == "alpha beta"
    assert FunasrConfig.parse({}, limits).hotword_list() is None
    with pytest.raises(InvalidRequest, match="mode"):
        FunasrConfig.parse({"mode": "3pass"}, limits)
    with pytest.raises(InvalidRequest, match="hotwords: at most 40"):
        FunasrConfig.parse({"hotwords": "x" * 41}, limits)
    with pytest.raises(InvalidRequest, match="12345 Hz"):
        FunasrConfig.parse({"audio_fs": 12345}, limits)
