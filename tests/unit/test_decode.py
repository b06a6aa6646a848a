"""Decode: every container/codec/rate/channel layout ffmpeg reads → 16 kHz mono float32."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np
import pytest

from serve_app.contracts import SAMPLE_RATE
from serve_app.engines.decode import DECODE_FAILURES, FfmpegDecoder, classify_failure
from serve_app.errors import InternalError, InvalidRequest, PayloadTooLarge, UnsupportedAudio
from tests.audio import synthesize, transcode, wav_bytes


@pytest.fixture(scope="module")
def speech(say: Callable[[str], np.ndarray]) -> np.ndarray:
    return say("Decoding must work for every format a user uploads.")


@pytest.fixture(scope="module")
def source_wav(speech: np.ndarray) -> bytes:
    return wav_bytes(speech)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of 10 ms energy envelopes, best over ±100 ms of shift (lossy codecs add
    encoder delay: MP3 ~25 ms, Opus ~6.5 ms)."""

    def env(x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.mean(x[: len(x) // 160 * 160].reshape(-1, 160) ** 2, axis=1))

    ea, eb = env(a), env(b)
    best = -1.0
    for lag in range(-10, 11):
        x, y = (ea[lag:], eb) if lag >= 0 else (ea, eb[-lag:])
        k = min(len(x), len(y))
        best = max(best, float(np.corrcoef(x[:k], y[:k])[0, 1]))
    return best


CASES = {
    "wav-s16-16k-mono": ["-f", "wav"],
    "wav-s16-8k-mono": ["-ar", "8000", "-f", "wav"],
    "wav-s24-48k-stereo": ["-ar", "48000", "-ac", "2", "-c:a", "pcm_s24le", "-f", "wav"],
    "wav-u8-22k-mono": ["-ar", "22050", "-c:a", "pcm_u8", "-f", "wav"],
    "wav-f32-44k-6ch": ["-ar", "44100", "-ac", "6", "-c:a", "pcm_f32le", "-f", "wav"],
    "mp3-44k-stereo": ["-ar", "44100", "-ac", "2", "-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "m4a-aac-48k": ["-ar", "48000", "-c:a", "aac", "-b:a", "64k", "-f", "ipod"],
    "ogg-vorbis-32k": ["-ar", "32000", "-c:a", "libvorbis", "-f", "ogg"],
    "opus-48k-stereo": ["-ar", "48000", "-ac", "2", "-c:a", "libopus", "-b:a", "32k", "-f", "opus"],
    "flac-96k": ["-ar", "96000", "-c:a", "flac", "-f", "flac"],
}


@pytest.mark.parametrize("name", list(CASES))
def test_decodes_format(name: str, source_wav: bytes, speech: np.ndarray) -> None:
    # m4a (MP4) needs a seekable output to write its index at the end: encode via a file.
    if name.startswith("m4a"):
        with tempfile.NamedTemporaryFile(suffix=".m4a") as f:
            import subprocess

            from serve_app.engines.decode import ffmpeg_exe

            subprocess.run(
                [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", "pipe:0", *CASES[name][:-2], f.name],
                input=source_wav,
                check=True,
            )
            data = open(f.name, "rb").read()
    else:
        data = transcode(source_wav, CASES[name])
    audio = FfmpegDecoder(max_audio_s=60).decode(data)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert abs(audio.duration_s - len(speech) / SAMPLE_RATE) < 0.15, f"{name}: got {audio.duration_s:.3f} s"
    assert 0.0 < np.abs(audio.samples).max() <= 1.0001
    assert _corr(audio.samples, speech) > 0.9, f"{name}: decoded audio does not match the source"


def test_leaves_no_files_behind(source_wav: bytes) -> None:
    tmp = tempfile.gettempdir()
    before = set(os.listdir(tmp))
    decoder = FfmpegDecoder(max_audio_s=60)
    for _ in range(3):
        decoder.decode(source_wav)
        with pytest.raises(UnsupportedAudio):
            decoder.decode(b"not audio at all" * 100)
    assert set(os.listdir(tmp)) - before == set()


def test_empty_upload_is_400() -> None:
    with pytest.raises(InvalidRequest):
        FfmpegDecoder(max_audio_s=60).decode(b"")


def test_garbage_is_415() -> None:
    with pytest.raises(UnsupportedAudio, match="not a media file"):
        FfmpegDecoder(max_audio_s=60).decode(os.urandom(4096))


def test_video_without_audio_is_415() -> None:
    video = synthesize(
        ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=5"], ["-t", "1", "-c:v", "mpeg4", "-f", "matroska"]
    )
    with pytest.raises(UnsupportedAudio, match="no audio stream"):
        FfmpegDecoder(max_audio_s=60).decode(video)


def test_truncated_mp3_still_decodes_what_is_there(source_wav: bytes) -> None:
    mp3 = transcode(source_wav, CASES["mp3-44k-stereo"])
    audio = FfmpegDecoder(max_audio_s=60).decode(mp3[: len(mp3) // 2])
    assert audio.duration_s > 0.5


def test_too_long_is_413() -> None:
    long = wav_bytes(np.zeros(SAMPLE_RATE * 12, dtype=np.float32))
    with pytest.raises(PayloadTooLarge):
        FfmpegDecoder(max_audio_s=10).decode(long)
    assert FfmpegDecoder(max_audio_s=13).decode(long).duration_s == pytest.approx(12, abs=0.01)


@pytest.mark.parametrize("rule", DECODE_FAILURES, ids=lambda r: r.needle)
def test_failure_table_rows(rule) -> None:  # type: ignore[no-untyped-def]
    err = classify_failure(f"[in#0 @ 0x1] something: {rule.needle} here\n")
    assert isinstance(err, rule.error) and err.status_code in (400, 413, 415)


def test_unknown_failure_is_500_without_internals() -> None:
    err = classify_failure("Segmentation fault in some_internal_fn at 0xdeadbeef\n")
    assert isinstance(err, InternalError) and err.status_code == 500
