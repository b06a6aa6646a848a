"""16-bit PCM WAV without ffmpeg: the warm-up input of the decode stage, and what tools and
tests write."""

from __future__ import annotations

import io
import os
import wave
from pathlib import Path

import numpy as np

from serve_app.contracts import SAMPLE_RATE


def encode_wav(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """Mono float32 samples in [-1, 1] → 16-bit PCM WAV bytes (clipped, not wrapped)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())
    return buf.getvalue()


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """``encode_wav`` to a file, atomically: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(encode_wav(samples, rate))
    tmp.replace(path)
