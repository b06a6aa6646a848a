"""Decode: every container/codec/rate/channel layout ffmpeg reads → 16 kHz mono float32."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from serve_app.contracts import SAMPLE_RATE, AudioSource
from serve_app.engines.decode import (
    DECODE_FAILURES,
    FfmpegDecoder,
    classify_failure,
    ffmpeg_exe,
    matching_rule,
)
from serve_app.errors import InternalError, InvalidRequest, PayloadTooLarge, UnsupportedAudio
from tools.audio import encode_wav, synthesize, transcode


@pytest.fixture(scope="module")
def speech(say: Callable[[str], np.ndarray]) -> np.ndarray:
    return say("Decoding must work for every format a user uploads.")


@pytest.fixture(scope="module")
def source_wav(speech: np.ndarray) -> bytes:
    return encode_wav(speech)


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


def test_truncated_mp3_still_decodes_what_is_there(source_wav: bytes) -> None:
    mp3 = transcode(source_wav, CASES["mp3-44k-stereo"])
    audio = FfmpegDecoder(max_audio_s=60).decode(mp3[: len(mp3) // 2])
    assert audio.duration_s > 0.5


def test_too_long_is_413() -> None:
    long = encode_wav(np.zeros(SAMPLE_RATE * 12, dtype=np.float32))
    with pytest.raises(PayloadTooLarge):
        FfmpegDecoder(max_audio_s=10).decode(long)
    assert FfmpegDecoder(max_audio_s=13).decode(long).duration_s == pytest.approx(12, abs=0.01)


def _with_format_tag(wav: bytes, tag: int) -> bytes:
    """A WAV whose header names codec ``tag`` (no decoder exists for 0x1234)."""
    return wav[:20] + struct.pack("<H", tag) + wav[22:]


def _m4a(wav: bytes, tmp: Path) -> bytes:
    path = tmp / "x.m4a"
    subprocess.run(
        [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", "pipe:0", "-c:a", "aac", str(path)],
        input=wav,
        check=True,
    )
    return path.read_bytes()


def _video(seconds: float) -> bytes:
    return synthesize(
        ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=5"],
        ["-t", str(seconds), "-c:v", "mpeg4", "-f", "matroska"],
    )


# Real inputs, what ffmpeg says about them, and the answer: every row of DECODE_FAILURES is
# reached by at least one of them (checked below), so a rule that real ffmpeg no longer
# triggers, or one shadowed by an earlier rule, fails here.
FAILURES: dict[str, tuple[Callable[[bytes, Path], bytes], str]] = {
    "random bytes": (lambda w, t: os.urandom(4096), "not a media file"),
    "text file": (lambda w, t: b"hello, this is text\n" * 50, "not a media file"),
    "RIFF header then garbage": (lambda w, t: b"RIFF" + os.urandom(3000), "not a media file"),
    "MPEG sync then garbage": (lambda w, t: b"\xff\xfb\x90\x00" + os.urandom(3000), "not a media file"),
    "M4A cut before its index": (lambda w, t: _m4a(w, t)[:200], "truncated (no moov atom)"),
    "video without audio": (lambda w, t: _video(1.0), "no audio stream"),
    "WAV with an unknown codec": (lambda w, t: _with_format_tag(w, 0x1234), "codec is not supported"),
    "Matroska cut short": (lambda w, t: _video(0.2)[:300], "damaged or truncated"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_real_ffmpeg_failures_are_classified(case: str, source_wav: bytes, tmp_path: Path) -> None:
    make, message = FAILURES[case]
    with pytest.raises(UnsupportedAudio, match=re.escape(message)):
        FfmpegDecoder(max_audio_s=60).decode(make(source_wav, tmp_path))


def test_every_rule_is_reached_by_a_real_input(source_wav: bytes, tmp_path: Path) -> None:
    decoder = FfmpegDecoder(max_audio_s=60)
    reached = set()
    for make, _ in FAILURES.values():
        fd = os.memfd_create("case")
        os.write(fd, make(source_wav, tmp_path))
        try:
            proc = subprocess.run(
                decoder._command(f"/dev/fd/{fd}", 0.0, 61.0), pass_fds=(fd,), capture_output=True
            )
        finally:
            os.close(fd)
        assert proc.returncode != 0
        rule = matching_rule(proc.stderr.decode())
        assert rule is not None, proc.stderr.decode()
        reached.add(rule.needle)
    assert reached == {r.needle for r in DECODE_FAILURES}, (
        f"rules no real input reaches: {set(r.needle for r in DECODE_FAILURES) - reached}"
    )


def test_unknown_failure_is_500_without_internals() -> None:
    err = classify_failure("Segmentation fault in some_internal_fn at 0xdeadbeef\n")
    assert isinstance(err, InternalError) and err.status_code == 500


def test_window_of_a_file_on_disk(tmp_path: Path, speech: np.ndarray) -> None:
    """Jobs decode long recordings window by window from a shared volume."""
    path = tmp_path / "long.wav"
    audio = np.concatenate([speech, np.zeros(SAMPLE_RATE, np.float32), speech])
    path.write_bytes(encode_wav(audio))
    total = len(audio) / SAMPLE_RATE
    decoder = FfmpegDecoder(max_audio_s=1.0)  # the per-upload limit does not bound windows
    first = decoder.decode(AudioSource(path=path, start_s=0.0, duration_s=2.0))
    assert first.duration_s == pytest.approx(2.0, abs=0.01) and not first.complete and first.offset_s == 0.0
    np.testing.assert_allclose(first.samples, audio[: 2 * SAMPLE_RATE], atol=1e-3)
    tail = decoder.decode(AudioSource(path=path, start_s=total - 0.5, duration_s=2.0))
    assert tail.complete and tail.duration_s == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(tail.samples, audio[-len(tail.samples) :], atol=1e-3)
    past = decoder.decode(AudioSource(path=path, start_s=total + 1.0, duration_s=2.0))
    assert past.complete and past.duration_s == 0.0


@pytest.mark.parametrize("name", ["wav-s16-16k-mono", "wav-s24-48k-stereo", "flac-96k"])
def test_wav_and_flac_decode_without_spawning_ffmpeg(
    name: str, source_wav: bytes, speech: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Through a file, as recorders write them (a FLAC written to a pipe has no length in its
    # header; libsndfile cannot read that one and ffmpeg takes it, as test_decodes_format shows).
    out = tmp_path / f"x.{CASES[name][-1]}"
    subprocess.run(
        [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", "pipe:0", *CASES[name][:-2], str(out)],
        input=source_wav,
        check=True,
    )
    data = out.read_bytes()

    def no_spawn(*a: object, **k: object) -> None:
        raise AssertionError("ffmpeg was spawned for a WAV/FLAC upload")

    monkeypatch.setattr(subprocess, "run", no_spawn)
    audio = FfmpegDecoder(max_audio_s=60).decode(data)
    assert abs(audio.duration_s - len(speech) / SAMPLE_RATE) < 0.01
    assert _corr(audio.samples, speech) > 0.99


def test_a_long_wav_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    long = encode_wav(np.zeros(SAMPLE_RATE * 30, dtype=np.float32))
    with pytest.raises(PayloadTooLarge, match="10 s"):
        FfmpegDecoder(max_audio_s=10).decode(long)
