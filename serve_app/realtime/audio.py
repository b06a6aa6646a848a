"""Audio as it arrives on a realtime socket: 16-bit PCM frames of any size at the client's
rate, turned into 16 kHz float32; and the bounded buffer of recent audio a session keeps for
its finals."""

from __future__ import annotations

from typing import Protocol

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


class Budget(Protocol):
    """Who pays for buffered bytes (``serve_app.realtime.capacity.SocketSlot``): ``reserve``
    raises when there is no room, before anything is allocated."""

    def reserve(self, nbytes: int) -> None: ...

    def release(self, nbytes: int) -> None: ...


class Unmetered:
    """A budget without a cap (tools and tests)."""

    def reserve(self, nbytes: int) -> None:
        pass

    def release(self, nbytes: int) -> None:
        pass


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as 16-bit PCM (clipped at ±1; PCM16 in gives its own values
    back exactly)."""
    return np.clip(np.rint(np.asarray(samples, np.float32) * 32768.0), -32768, 32767).astype(np.int16)


class AudioBuffer:
    """The last ``max_s`` seconds of a stream, addressed by absolute stream time: finals are cut
    from it by the VAD's times, and what precedes them is dropped.

    Kept as 16-bit PCM (half of float32; slices come out as 16 kHz float32) in blocks of
    ``BLOCK_S`` seconds, each reserved from ``budget`` before it is allocated and released when
    it is dropped: a buffer's cost is what its blocks hold, whatever the frame size, and large
    blocks go back to the operating system when freed (thousands of frame-sized arrays would
    stay in the allocator's arenas)."""

    BLOCK_S = 10.0

    def __init__(self, max_s: float, budget: Budget | None = None) -> None:
        self.max_samples = max(1, int(max_s * SAMPLE_RATE))
        self.budget: Budget = budget or Unmetered()
        self._block = int(self.BLOCK_S * SAMPLE_RATE)
        self._blocks: list[np.ndarray] = []  # int16, _block samples each; the last one filling
        self._offset = 0  # index in _blocks[0] of the first buffered sample
        self._start = 0  # absolute sample index of the first buffered sample
        self._size = 0

    @property
    def end_s(self) -> float:
        """Stream time after the last sample received."""
        return (self._start + self._size) / SAMPLE_RATE

    @property
    def start_s(self) -> float:
        return self._start / SAMPLE_RATE

    @property
    def size(self) -> int:
        """Samples buffered."""
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes its blocks hold (what it has reserved)."""
        return len(self._blocks) * self._block * 2

    def append(self, samples: np.ndarray) -> None:
        """Add ``samples`` (float32); the oldest go beyond ``max_s``. Raises what the budget
        raises, with nothing added, when a new block finds no room."""
        n = int(samples.size)
        if n == 0:
            return
        over = self._size + n - self.max_samples
        if over > 0:  # dropped first: the blocks they free pay for the new ones
            self.drop_before((self._start + over) / SAMPLE_RATE)
        data = to_int16(samples[-self.max_samples :] if n > self.max_samples else samples)
        if data.size < n:  # more than the whole buffer at once: only its tail is kept
            self.drop_before(self.end_s)
            self._start += n - data.size
        end = self._offset + self._size  # position after the last sample, from _blocks[0]
        need = -(-(end + data.size) // self._block) - len(self._blocks)
        if need > 0:
            self.budget.reserve(need * self._block * 2)
            self._blocks.extend(np.empty(self._block, np.int16) for _ in range(need))
        pos = 0
        while pos < data.size:
            block, at = divmod(end + pos, self._block)
            k = min(self._block - at, data.size - pos)
            self._blocks[block][at : at + k] = data[pos : pos + k]
            pos += k
        self._size += data.size

    def slice(self, start_s: float, end_s: float) -> np.ndarray:
        """Samples of ``[start_s, end_s)`` that are still buffered, as float32."""
        a = max(0, round(start_s * SAMPLE_RATE) - self._start)
        b = max(a, min(self._size, round(end_s * SAMPLE_RATE) - self._start))
        out = np.empty(b - a, np.float32)
        pos, i = 0, self._offset + a
        while pos < out.size:
            block, at = divmod(i, self._block)
            k = min(self._block - at, out.size - pos)
            out[pos : pos + k] = self._blocks[block][at : at + k]
            pos, i = pos + k, i + k
        out *= 1.0 / 32768.0
        return out

    def drop_before(self, t_s: float) -> None:
        """Forget what precedes stream time ``t_s``; blocks left empty are freed."""
        cut = min(self._size, round(t_s * SAMPLE_RATE) - self._start)
        if cut <= 0:
            return
        self._start += cut
        self._size -= cut
        self._offset += cut
        free = len(self._blocks) if self._size == 0 else self._offset // self._block
        if free:
            del self._blocks[:free]
            self._offset = 0 if self._size == 0 else self._offset - free * self._block
            self.budget.release(free * self._block * 2)

    def close(self) -> None:
        """Free every block (the stream time stays where it is)."""
        self.drop_before(self.end_s)
        if self._blocks:  # nothing buffered, but a block was reserved
            self.budget.release(self.nbytes)
            self._blocks, self._offset = [], 0
