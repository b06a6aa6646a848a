"""Realtime plumbing, Ray-free: PCM16 frames of any size, streaming resampling, the bounded
16-bit buffer finals are cut from (and what it reserves from its budget), and FunASR's first
message."""

from __future__ import annotations

import numpy as np
import pytest

from serve_app.api.protocol import FunasrConfig
from serve_app.config import LimitsArgs
from serve_app.errors import BufferFull, InvalidRequest
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
    for i in range(5):  # 5 s of 1 s blocks, each filled with its index / 8
        buf.append(np.full(16000, i / 8, np.float32))
    assert buf.end_s == 5.0 and buf.start_s == 3.0
    assert set(np.unique(buf.slice(3.5, 4.5))) == {3 / 8, 4 / 8} and len(buf.slice(3.5, 4.5)) == 16000
    assert len(buf.slice(0.0, 3.0)) == 0  # dropped
    buf.drop_before(4.0)
    assert buf.start_s == 4.0 and set(np.unique(buf.slice(0, 10))) == {4 / 8}


class Ledger:
    """A budget that records what is reserved and refuses beyond ``limit`` bytes."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.held = limit, 0

    def reserve(self, nbytes: int) -> None:
        if self.limit is not None and self.held + nbytes > self.limit:
            raise BufferFull("full")
        self.held += nbytes

    def release(self, nbytes: int) -> None:
        self.held -= nbytes
        assert self.held >= 0, "released more than was reserved"


def test_buffer_keeps_16_bit_pcm_and_gives_float32_back() -> None:
    x = np.random.default_rng(1).uniform(-1, 1, 48000).astype(np.float32)
    x[:3] = [1.5, -2.0, 1.0]  # beyond full scale: clipped
    buf = AudioBuffer(max_s=60)
    for i in range(0, x.size, 777):  # frames of any size
        buf.append(x[i : i + 777])
    out = buf.slice(0, buf.end_s)
    assert out.dtype == np.float32 and out.size == x.size
    assert out[0] == 32767 / 32768 and out[1] == -1.0 and out[2] == 32767 / 32768, out[:3]
    np.testing.assert_allclose(out[3:], x[3:], atol=1 / 32768)
    assert all(b.dtype == np.int16 for b in buf._blocks)
    assert buf.nbytes == 2 * int(AudioBuffer.BLOCK_S * 16000)  # one block of 16-bit samples
    # PCM16 from a client comes back exactly, across block edges too.
    pcm = np.frombuffer(
        np.random.default_rng(2).integers(-32768, 32767, 400000).astype("<i2").tobytes(), "<i2"
    )
    exact = AudioBuffer(max_s=60)
    exact.append(pcm.astype(np.float32) / 32768)
    np.testing.assert_array_equal(exact.slice(0, exact.end_s) * 32768, pcm.astype(np.float32))
    np.testing.assert_array_equal(exact.slice(9.5, 10.5) * 32768, pcm[152000:168000].astype(np.float32))


def test_buffer_reserves_before_it_allocates_and_releases_everything() -> None:
    block = 2 * int(AudioBuffer.BLOCK_S * 16000)
    ledger = Ledger(limit=3 * block)
    buf = AudioBuffer(max_s=25, budget=ledger)  # a bounded (2pass) buffer: at most 3 blocks
    for _ in range(60):  # 60 s through a 25 s window
        buf.append(np.zeros(8000, np.float32))
        assert ledger.held == buf.nbytes <= 3 * block
    assert buf.end_s == 30.0 and buf.start_s == 5.0
    buf.drop_before(buf.end_s)
    assert ledger.held == 0 and buf.nbytes == 0
    # A block the budget refuses: nothing is added, nothing is taken.
    offline = AudioBuffer(max_s=3600, budget=Ledger(limit=2 * block))
    offline.append(np.zeros(int(19.5 * 16000), np.float32))
    with pytest.raises(BufferFull):
        offline.append(np.zeros(16000, np.float32))
    assert offline.end_s == 19.5 and offline.budget.held == 2 * block  # type: ignore[attr-defined]
    offline.append(np.zeros(8000, np.float32))  # what still fits in its last block
    offline.close()
    assert offline.budget.held == 0 and offline.end_s == 20.0  # type: ignore[attr-defined]


def test_buffer_fed_more_than_it_holds_at_once_keeps_the_tail() -> None:
    buf = AudioBuffer(max_s=1.0)
    buf.append(np.zeros(8000, np.float32))
    buf.append(np.linspace(-0.5, 0.5, 40000, dtype=np.float32))
    assert buf.end_s == 3.0 and buf.start_s == 2.0
    np.testing.assert_allclose(
        buf.slice(0, 3), np.linspace(-0.5, 0.5, 40000, dtype=np.float32)[-16000:], atol=1 / 32768
    )


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
