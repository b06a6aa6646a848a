"""Decode any container/codec ffmpeg reads into 16 kHz mono float32, from memory.

The upload is written to an anonymous in-memory file (``memfd_create``) that ffmpeg opens
as ``/dev/fd/N``: seekable, so MP4/M4A with the index at the end decode, and nothing is
ever written to disk. The ffmpeg binary is the one bundled in ``imageio-ffmpeg``.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from functools import cache

import ffmpeg  # ffmpeg-python: builds the command line
import numpy as np

from serve_app.contracts import SAMPLE_RATE, DecodedAudio
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


# ffmpeg's stderr → our error. First match wins; checked only when ffmpeg exits non-zero
# or produces no samples. Anything unmatched is a 500: we do not blame the client for a
# failure we do not understand.
DECODE_FAILURES: tuple[_Rule, ...] = (
    # The demuxer could not make sense of the bytes: not a media file at all, or truncated.
    _Rule(
        "Invalid data found when processing input",
        UnsupportedAudio,
        "the upload is not a media file ffmpeg can read",
    ),
    # A media file, but with no audio stream (e.g. a silent video, an image).
    _Rule("matches no streams", UnsupportedAudio, "the file has no audio stream"),
    _Rule("does not contain any stream", UnsupportedAudio, "the file has no audio stream"),
    # MP4 family with a broken or missing index.
    _Rule("moov atom not found", UnsupportedAudio, "the MP4/M4A file is truncated (no moov atom)"),
    # Known container, codec not compiled into this ffmpeg.
    _Rule("Decoder (codec", UnsupportedAudio, "the audio codec is not supported"),
    _Rule("Unknown decoder", UnsupportedAudio, "the audio codec is not supported"),
    # The probe could not determine the format parameters (garbage with a plausible header).
    _Rule("could not find codec parameters", UnsupportedAudio, "the audio stream could not be parsed"),
    _Rule("Could not find codec parameters", UnsupportedAudio, "the audio stream could not be parsed"),
    _Rule("Invalid argument", UnsupportedAudio, "the upload is not a media file ffmpeg can read"),
    _Rule("End of file", UnsupportedAudio, "the upload ends before any audio"),
)


def classify_failure(stderr: str) -> ServeError:
    """Map ffmpeg's stderr to an error with the right status code."""
    for rule in DECODE_FAILURES:
        if rule.needle in stderr:
            return rule.error(rule.message)
    tail = stderr.strip().splitlines()[-1:] or ["no output"]
    logger.error("unclassified ffmpeg failure: %s", stderr[-2000:])
    return InternalError(f"audio decoding failed ({tail[0][:200]})")


class FfmpegDecoder:
    """Bytes in, ``DecodedAudio`` out."""

    def __init__(self, max_audio_s: float, timeout_s: float = 120.0, threads: int = 1) -> None:
        self.max_audio_s = max_audio_s
        self.timeout_s = timeout_s
        self.threads = threads

    def _command(self, source: str) -> list[str]:
        stream = ffmpeg.input(source, threads=self.threads).output(
            "pipe:",
            format="f32le",
            acodec="pcm_f32le",
            ac=1,
            ar=SAMPLE_RATE,
            map="0:a:0",
            # Decode one second past the limit: enough to know the limit was crossed,
            # without ever holding an unbounded file in memory.
            t=self.max_audio_s + 1.0,
        )
        return list(
            stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_exe())
        )

    def decode(self, data: bytes) -> DecodedAudio:
        if not data:
            raise InvalidRequest("the uploaded file is empty")
        fd = os.memfd_create("upload", 0)
        try:
            with os.fdopen(os.dup(fd), "wb", closefd=True) as f:
                f.write(data)
            try:
                proc = subprocess.run(
                    self._command(f"/dev/fd/{fd}"),
                    pass_fds=(fd,),
                    capture_output=True,
                    timeout=self.timeout_s,
                    check=False,
                )
            except subprocess.TimeoutExpired as e:
                raise InternalError(f"audio decoding took longer than {self.timeout_s:.0f} s") from e
        finally:
            os.close(fd)
        stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise classify_failure(stderr)
        samples = np.frombuffer(proc.stdout, dtype=np.float32)
        if samples.size == 0:
            # ffmpeg "succeeded" but produced nothing: a container with an empty audio track.
            raise UnsupportedAudio("the file contains no audio samples")
        audio = DecodedAudio(samples=samples.copy())
        if audio.duration_s > self.max_audio_s:
            raise PayloadTooLarge(f"audio is longer than the limit of {self.max_audio_s:.0f} s")
        return audio
