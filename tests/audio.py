"""Test audio made at test time: espeak-ng speech, silence, and re-encodings through the
bundled ffmpeg. Nothing binary is committed."""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import numpy as np

from serve_app.engines.decode import ffmpeg_exe

SR = 16_000


def wav_bytes(samples: np.ndarray, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def read_wav(data: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768


def speak(text: str, cache: Path, voice: str = "en-us") -> np.ndarray:
    """espeak-ng speech as 16 kHz float32 (cached per text)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{abs(hash((text, voice)))}.wav"
    if not out.exists():
        raw = subprocess.run(
            ["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True
        ).stdout
        out.write_bytes(transcode(raw, ["-ar", str(SR), "-ac", "1", "-f", "wav"]))
    return read_wav(out.read_bytes())


def with_pauses(parts: list[np.ndarray], pause_s: float) -> np.ndarray:
    gap = np.zeros(int(pause_s * SR), dtype=np.float32)
    out: list[np.ndarray] = [gap]
    for p in parts:
        out += [p, gap]
    return np.concatenate(out)


def transcode(data: bytes, out_args: list[str], in_args: list[str] | None = None) -> bytes:
    """Re-encode ``data`` with the bundled ffmpeg (stdin → stdout)."""
    cmd = [
        ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        *(in_args or []),
        "-i",
        "pipe:0",
        *out_args,
        "pipe:1",
    ]
    return subprocess.run(cmd, input=data, check=True, capture_output=True).stdout


def synthesize(in_args: list[str], out_args: list[str]) -> bytes:
    """Media made by ffmpeg from its own sources (lavfi), no input file."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *in_args, *out_args, "pipe:1"]
    return subprocess.run(cmd, check=True, capture_output=True).stdout
