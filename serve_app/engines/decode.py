"""Decode any container/codec ffmpeg reads into 16 kHz mono float32, from memory.

WAV and FLAC, the formats of most recordings that reach a transcription server, are read in
process with libsndfile (``soundfile``) and resampled with a polyphase filter: ~1 ms for 10 s
of audio against ~20 ms for spawning ffmpeg. Everything else, and any WAV/FLAC libsndfile
refuses, goes to ffmpeg: the upload is written to an anonymous in-memory file
(``memfd_create``) that ffmpeg opens as ``/dev/fd/N``: seekable, so MP4/M4A with the index at
the end decode, and nothing is ever written to disk. The ffmpeg binary is the one bundled in
``imageio-ffmpeg``.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the command line
import numpy as np

from serve_app.contracts import SAMPLE_RATE, AudioSource, DecodedAudio
from serve_app.errors import InternalError, InvalidRequest, PayloadTooLarge, ServeError, UnsupportedAudio

logger = logging.getLogger(__name__)


@cache
def ffmpeg_exe() -> str:
    """The bundled ffmpeg binary (no system ffmpeg needed)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@dataclass(frozen=True)
class _Rule:
    needle: str
    error: type[ServeError]
    message: str


# ffmpeg's stderr → our error. First match wins, so specific rules come before the generic
# "Invalid data" that ffmpeg prints after most of them. Checked only when ffmpeg exits non-zero.
# Every row is reached by a real input in tests/unit/test_decode.py; anything unmatched is a
# 500: we do not blame the client for a failure we do not understand.
DECODE_FAILURES: tuple[_Rule, ...] = (
    # MP4 family whose index (at the end of the file) is missing: an upload cut short.
    _Rule("moov atom not found", UnsupportedAudio, "the MP4/M4A file is truncated (no moov atom)"),
    # A media file, but with no audio stream (a silent video, an image).
    _Rule("matches no streams", UnsupportedAudio, "the file has no audio stream"),
    # A known container whose audio codec this ffmpeg cannot decode.
    _Rule("no decoder found for", UnsupportedAudio, "the audio codec is not supported"),
    # The demuxer ran off the end of a damaged container (e.g. a cut Matroska file); the input
    # is an in-memory file, so this is never the disk's fault.
    _Rule("Error opening input: Input/output error", UnsupportedAudio, "the file is damaged or truncated"),
    # Not a media file at all: no demuxer recognises the bytes.
    _Rule(
        "Invalid data found when processing input",
        UnsupportedAudio,
        "the upload is not a media file ffmpeg can read",
    ),
)


def matching_rule(stderr: str) -> _Rule | None:
    return next((rule for rule in DECODE_FAILURES if rule.needle in stderr), None)


def classify_failure(stderr: str) -> ServeError:
    """Map ffmpeg's stderr to an error with the right status code."""
    rule = matching_rule(stderr)
    if rule is not None:
        return rule.error(rule.message)
    tail = stderr.strip().splitlines()[-1:] or ["no output"]
    logger.error("unclassified ffmpeg failure: %s", stderr[-2000:])
    return InternalError(f"audio decoding failed ({tail[0][:200]})")


NATIVE_MAGIC = (b"RIFF", b"RF64", b"fLaC")
"""WAV (RIFF/RF64) and FLAC: read in process."""


def read_natively(source: AudioSource, want_s: float, limit_s: float | None) -> np.ndarray | None:
    """WAV/FLAC samples of the source's window as 16 kHz mono float32, or ``None`` when this is
    not a WAV/FLAC that libsndfile reads (then ffmpeg decides, and explains any failure).
    ``limit_s``: a whole upload longer than this is refused from its header, before decoding."""
    import soundfile as sf

    if source.path is not None:
        with open(source.path, "rb") as f:
            head = f.read(4)
        target: str | io.BytesIO = str(source.path)
    else:
        assert source.data is not None
        head, target = source.data[:4], io.BytesIO(source.data)
    if head not in NATIVE_MAGIC:
        return None
    try:
        with sf.SoundFile(target) as f:
            rate = f.samplerate
            # A FLAC or WAV written to a pipe does not know its length (libsndfile then
            # reports 2**63-1 frames): trust the header only when it is plausible. (Such a FLAC
            # cannot be read here at all, libsndfile fails to seek in it: ffmpeg takes it.)
            known = f.frames < 2**40
            if limit_s is not None and known and f.frames > (limit_s + 1.0) * rate:
                raise PayloadTooLarge(f"audio is longer than the limit of {limit_s:.0f} s")
            start = round(source.start_s * rate)
            if known and start >= f.frames:
                return np.zeros(0, np.float32)
            if start:
                f.seek(start)
            # In blocks: soundfile allocates a whole read up front, and an unknown length
            # would make that the limit's worth (hours) of samples.
            left, blocks = round(want_s * rate), []
            while left > 0:
                block = f.read(min(left, 60 * rate), dtype="float32", always_2d=True)
                if not len(block):
                    break
                blocks.append(block)
                left -= len(block)
            frames = np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return None
    mono = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    if rate != SAMPLE_RATE:
        from scipy.signal import resample_poly

        g = math.gcd(rate, SAMPLE_RATE)
        mono = resample_poly(mono, SAMPLE_RATE // g, rate // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def probe_duration(path: Path) -> float | None:
    """A recording's length in seconds from its header, without decoding it (libsndfile for
    WAV/FLAC, ffmpeg's ``Duration:`` line otherwise); ``None`` when the file does not say."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if 0 < info.frames < 2**40:
            return float(info.frames / info.samplerate)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        pass
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    m = _DURATION.search(proc.stderr.decode("utf-8", "replace"))
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else None


class FfmpegDecoder:
    """An ``AudioSource`` in, ``DecodedAudio`` out (WAV/FLAC in process, the rest by ffmpeg)."""

    def __init__(self, max_audio_s: float, timeout_s: float = 120.0, threads: int = 1) -> None:
        self.max_audio_s = max_audio_s
        self.timeout_s = timeout_s
        self.threads = threads

    def _command(self, source: str, start_s: float, duration_s: float) -> list[str]:
        stream = ffmpeg.input(source, threads=self.threads, **({"ss": start_s} if start_s else {})).output(
            "pipe:",
            format="f32le",
            acodec="pcm_f32le",
            ac=1,
            ar=SAMPLE_RATE,
            map="0:a:0",
            t=duration_s,
        )
        return list(
            stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_exe())
        )

    def decode(self, source: AudioSource | bytes) -> DecodedAudio:
        """The whole upload (at most ``max_audio_s``, else 413), or the window the source names."""
        if isinstance(source, bytes):
            source = AudioSource(data=source)
        window = source.duration_s is not None or source.start_s > 0
        # Decode one second past the limit: enough to know it was crossed, without ever
        # holding an unbounded file in memory.
        want_s = source.duration_s if source.duration_s is not None else self.max_audio_s + 1.0
        if source.data is not None and not source.data:
            raise InvalidRequest("the uploaded file is empty")
        samples = read_natively(source, want_s, self.max_audio_s if not window else None)
        if samples is None and source.path is not None:
            samples = self._run(str(source.path), source.start_s, want_s, ())
        elif samples is None:
            assert source.data is not None
            samples = self._from_memory(source.data, source.start_s, want_s)
        if samples.size == 0 and not (window and source.start_s > 0):
            # ffmpeg "succeeded" but produced nothing: a container with an empty audio track.
            raise UnsupportedAudio("the file contains no audio samples")
        audio = DecodedAudio(
            samples=samples,
            offset_s=source.start_s,
            # A window that came back whole may have more after it; a short one is the end.
            complete=not window or samples.size < round(want_s * SAMPLE_RATE) - SAMPLE_RATE // 100,
        )
        if not window and audio.duration_s > self.max_audio_s:
            raise PayloadTooLarge(f"audio is longer than the limit of {self.max_audio_s:.0f} s")
        return audio

    def _from_memory(self, data: bytes, start_s: float, want_s: float) -> np.ndarray:
        fd = os.memfd_create("upload", 0)
        try:
            with os.fdopen(os.dup(fd), "wb", closefd=True) as f:
                f.write(data)
            return self._run(f"/dev/fd/{fd}", start_s, want_s, (fd,))
        finally:
            os.close(fd)

    def _run(self, source: str, start_s: float, want_s: float, pass_fds: tuple[int, ...]) -> np.ndarray:
        try:
            proc = subprocess.run(
                self._command(source, start_s, want_s),
                pass_fds=pass_fds,
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise InternalError(f"audio decoding took longer than {self.timeout_s:.0f} s") from e
        if proc.returncode != 0:
            raise classify_failure(proc.stderr.decode("utf-8", "replace"))
        return np.frombuffer(proc.stdout, dtype=np.float32).copy()
