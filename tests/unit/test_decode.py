"""Decode: every container/codec/rate/channel layout ffmpeg reads → 16 kHz mono float32."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from serve_app.contracts import SAMPLE_RATE, AudioSource
from serve_app.engines import decode as decode_engine
from serve_app.engines.decode import (
    BLOCK_BYTES,
    DECODE_FAILURES,
    FfmpegDecoder,
    classify_failure,
    ffmpeg_exe,
    matching_rule,
)
from serve_app.errors import InternalError, InvalidRequest, PayloadTooLarge, UnsupportedAudio
from tools.audio import encode_wav, synthesize, transcode

T = TypeVar("T")


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


# --- bounded memory: a few MB in must never mean GBs out ---------------------------------------
# A 96 kHz 8-channel FLAC of silence is ~0.1 MB for 10 minutes (~2 MB for 3 hours); its frames
# as float32 are 1.8 GB (33 GB). The decode may hold its output (16 kHz mono float32, bounded by
# the window or the limit) plus a few blocks, whatever the input's rate and channels.

OUT_10_MIN = 600 * SAMPLE_RATE * 4
"""Bytes of 10 minutes of 16 kHz mono float32: 38.4 MB."""

SLACK = 3 * BLOCK_BYTES
"""A block of frames, its mono mix and the resampler's part, with room for the allocator."""


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 minutes of 96 kHz 8-channel silence as FLAC, written by ffmpeg (~3 s)."""
    path = tmp_path_factory.mktemp("long") / "10min-96k-8ch.flac"
    subprocess.run(
        [
            ffmpeg_exe(),
            *("-y", "-loglevel", "error", "-f", "lavfi"),
            *("-i", "anullsrc=r=96000:cl=7.1:nb_samples=16384", "-t", "600"),
            *("-c:a", "flac", "-compression_level", "0", str(path)),
        ],
        check=True,
    )
    return path


def _rss_peak_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def peak_memory(fn: Callable[[], T]) -> tuple[T, int, int]:
    """``fn()``, the peak of Python-traced allocations during it (numpy's buffers are traced)
    and the growth of the process's peak RSS over its RSS before (libsndfile's, libFLAC's and
    soxr's own allocations are not traced). Linux resets the peak RSS (``VmHWM``) when "5" is
    written to ``/proc/self/clear_refs``."""
    import tracemalloc

    import psutil

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = psutil.Process().memory_info().rss
    tracemalloc.start()
    try:
        result = fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, traced, _rss_peak_kb() * 1024 - base


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def test_a_high_rate_many_channel_upload_decodes_in_bounded_memory(long_flac: Path) -> None:
    data = long_flac.read_bytes()
    audio, traced, rss = peak_memory(lambda: FfmpegDecoder(max_audio_s=700).decode(data))
    assert audio.duration_s == pytest.approx(600, abs=0.01) and not np.any(audio.samples)
    got = f"traced peak {_mb(traced)}, RSS +{_mb(rss)} for {_mb(OUT_10_MIN)} of output"
    print(got)
    assert traced <= OUT_10_MIN + SLACK, got
    assert rss <= OUT_10_MIN + 2 * SLACK, got


def test_a_job_window_decodes_in_bounded_memory(long_flac: Path) -> None:
    """A window asks for 10 minutes from minute 1 of a 10-minute file: 9 come back, and the
    buffer is sized from the header (9 minutes), not from the window."""
    source = AudioSource(path=long_flac, start_s=60.0, duration_s=600.0)
    audio, traced, rss = peak_memory(lambda: FfmpegDecoder(max_audio_s=1.0).decode(source))
    assert audio.duration_s == pytest.approx(540, abs=0.01) and audio.complete
    out = 540 * SAMPLE_RATE * 4
    got = f"traced peak {_mb(traced)}, RSS +{_mb(rss)} for {_mb(out)} of output"
    print(got)
    assert traced <= out + SLACK, got
    assert rss <= out + 2 * SLACK, got


def test_ffmpeg_output_is_read_into_one_buffer(long_flac: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through ffmpeg (what every non-WAV/FLAC upload takes), the output is read as it comes
    into the output buffer: never all of stdout and then a copy of it."""
    monkeypatch.setattr(decode_engine, "read_natively", lambda *a: None)
    source = AudioSource(path=long_flac, start_s=0.0, duration_s=120.0)
    audio, traced, _ = peak_memory(lambda: FfmpegDecoder(max_audio_s=1.0).decode(source))
    assert audio.duration_s == pytest.approx(120, abs=0.01)
    out = 120 * SAMPLE_RATE * 4
    assert traced <= out + 2 * 1024 * 1024, f"traced peak {_mb(traced)} for {_mb(out)} of output"


def _unknown_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """libsndfile reports 2**63-1 frames for a stream that does not say its length (WAV clamps
    its header to the file, so one cannot be made from bytes: pretend)."""
    import soundfile

    monkeypatch.setattr(soundfile.SoundFile, "frames", property(lambda self: 2**63 - 1))


def _stereo_wav(seconds: float, rate: int = 48000) -> bytes:
    import io

    import soundfile

    t = np.arange(round(seconds * rate)) / rate
    frames = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1) * 0.3
    buf = io.BytesIO()
    soundfile.write(buf, frames.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_unknown_length_grows_the_output_and_stops_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    short, long = _stereo_wav(90.0), _stereo_wav(150.0)
    known = FfmpegDecoder(max_audio_s=120).decode(short).samples
    _unknown_length(monkeypatch)
    audio = FfmpegDecoder(max_audio_s=120).decode(short)
    np.testing.assert_array_equal(audio.samples, known)  # grown in place, same samples
    # Over the limit: decoding stops once the output passes the limit (+1 s), then 413.

    def over_the_limit() -> None:
        with pytest.raises(PayloadTooLarge):
            FfmpegDecoder(max_audio_s=60).decode(long)

    _, traced, _ = peak_memory(over_the_limit)
    out = 61 * SAMPLE_RATE * 4
    assert traced <= out + SLACK, f"traced peak {_mb(traced)} for at most {_mb(out)} of output"
