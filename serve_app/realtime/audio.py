"""Audio as it arrives on a realtime socket: 16-bit PCM frames of any size at the client's
rate, turned into 16 kHz float32; and the bounded buffer of recent audio a session keeps for
its finals."""

from __future__ import annotations

import numpy as np

from serve_app.contracts import SAMPLE_RATE

SUPPORTED_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


class Pcm16Stream:
    """Little-endian PCM16 mono bytes at ``rate`` → 16 kHz float32, frame by frame. A frame may
    end mid-sample (the odd byte waits for the next frame); other rates are resampled with a
    streaming filter (soxr), so chunk edges leave no clicks."""

    def __init__(self, rate: int) -> None:
        if rate not in SUPPORTED_RATES:
            raise ValueError(f"sample rate {rate} Hz is not supported; use one of {SUPPORTED_RATES}")
        self.rate = rate
        self._odd = b""
        self._resampler = None
        if rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")

    def push(self, data: bytes, last: bool = False) -> np.ndarray:
        data = self._odd + data
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        samples = np.frombuffer(data[:cut], dtype="<i2").astype(np.float32) / 32768.0
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        return np.ascontiguousarray(samples, dtype=np.float32)


class AudioBuffer:
    """The last ``max_s`` seconds of a stream, addressed by absolute stream time: finals are cut
    from it by the VAD's times, and what precedes them is dropped."""

    def __init__(self, max_s: float) -> None:
        self.max_samples = int(max_s * SAMPLE_RATE)
        self._chunks: list[np.ndarray] = []
        self._start = 0  # absolute sample index of the first buffered sample
        self._size = 0

    @property
    def end_s(self) -> float:
        """Stream time after the last sample received."""
        return (self._start + self._size) / SAMPLE_RATE

    @property
    def start_s(self) -> float:
        return self._start / SAMPLE_RATE

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._chunks.append(samples)
            self._size += samples.size
        over = self._size - self.max_samples
        if over > 0:
            self.drop_before((self._start + over) / SAMPLE_RATE)

    def slice(self, start_s: float, end_s: float) -> np.ndarray:
        """Samples of ``[start_s, end_s)`` that are still buffered."""
        whole = np.concatenate(self._chunks) if len(self._chunks) != 1 else self._chunks[0]
        if len(self._chunks) > 1:
            self._chunks = [whole]
        a = max(0, round(start_s * SAMPLE_RATE) - self._start)
        b = max(a, min(self._size, round(end_s * SAMPLE_RATE) - self._start))
        return whole[a:b] if self._chunks else np.zeros(0, np.float32)

    def drop_before(self, t_s: float) -> None:
        cut = min(self._size, round(t_s * SAMPLE_RATE) - self._start)
        if cut <= 0:
            return
        whole = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        rest = whole[cut:]
        self._chunks = [rest] if rest.size else []
        self._start += cut
        self._size = rest.size
