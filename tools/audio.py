"""Test speech and media made at run time: espeak-ng speech, pauses, re-encodings and synthetic
media through the bundled ffmpeg. Nothing binary is committed. The one espeak helper of the
project: tests, the load clips and the benchmark all use it."""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave

import numpy as np

from serve_app.contracts import SAMPLE_RATE
from serve_app.engines.decode import ffmpeg_exe
from serve_app.engines.wav import encode_wav, write_wav

__all__ = [
    "EspeakMissing",
    "encode_wav",
    "read_wav",
    "resample",
    "speak",
    "synthesize",
    "transcode",
    "with_pauses",
    "write_wav",
]


class EspeakMissing(RuntimeError):
    """``espeak-ng`` is not on PATH (``make system-test-deps`` installs it)."""


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] and the rate of 16-bit PCM WAV bytes (channels averaged)."""
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        # espeak-ng --stdout writes a placeholder frame count: read to the end instead.
        pcm = np.frombuffer(w.readframes(2**31 - 1), dtype="<i2")
    samples = pcm.reshape(-1, channels).mean(axis=1) / 32768.0
    return samples.astype(np.float32), rate


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by truncating (or zero-padding) the spectrum: exact for a finite
    clip and numpy-only; the sentences are short, so one FFT each is cheap."""
    if rate == target or x.size == 0:
        return x
    n_out = round(x.size * target / rate)
    spectrum = np.fft.rfft(x)
    y = np.fft.irfft(spectrum if n_out >= x.size else spectrum[: n_out // 2 + 1], n=n_out)
    return (y * (n_out / x.size)).astype(np.float32)


@functools.lru_cache(maxsize=256)
def speak(text: str, voice: str = "en-us", trim: bool = False) -> np.ndarray:
    """``text`` spoken by espeak-ng as 16 kHz float32 (read-only: it is cached). ``trim`` cuts
    the silence espeak pads at both ends, for callers that place every pause themselves.
    Mandarin: pass tone-numbered pinyin with ``voice="cmn-latn-pinyin"``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakMissing("espeak-ng is not installed; run `make system-test-deps`")
    wav = subprocess.run([exe, "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    samples, rate = read_wav(wav)
    if trim:
        voiced = np.flatnonzero(np.abs(samples) > 0.01)
        if voiced.size:
            samples = samples[voiced[0] : voiced[-1] + 1]
    out = resample(samples, rate)
    out.flags.writeable = False
    return out


def with_pauses(parts: list[np.ndarray], pause_s: float) -> np.ndarray:
    """``parts`` joined by ``pause_s`` of digital silence, with the same pause before and after."""
    gap = np.zeros(int(pause_s * SAMPLE_RATE), dtype=np.float32)
    out: list[np.ndarray] = [gap]
    for p in parts:
        out += [p, gap]
    return np.concatenate(out)


def transcode(data: bytes, out_args: list[str], in_args: list[str] | None = None) -> bytes:
    """Re-encode ``data`` with the bundled ffmpeg (stdin → stdout)."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *(in_args or []), "-i", "pipe:0"]
    return subprocess.run([*cmd, *out_args, "pipe:1"], input=data, check=True, capture_output=True).stdout


def synthesize(in_args: list[str], out_args: list[str]) -> bytes:
    """Media made by ffmpeg from its own sources (lavfi), no input file."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *in_args, *out_args, "pipe:1"]
    return subprocess.run(cmd, check=True, capture_output=True).stdout
