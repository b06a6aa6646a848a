"""Decode any container/codec ffmpeg reads into 16 kHz mono float32, from memory.

WAV and FLAC, the formats of most recordings that reach a transcription server, are read in
process with libsndfile (``soundfile``) and resampled with a streaming filter (soxr): ~1 ms for
10 s of audio against ~20 ms for spawning ffmpeg. Everything else, and any WAV/FLAC libsndfile
refuses, goes to ffmpeg: the upload is written to an anonymous in-memory file
(``memfd_create``) that ffmpeg opens as ``/dev/fd/N``: seekable, so MP4/M4A with the index at
the end decode, and nothing is ever written to disk. The ffmpeg binary is the one bundled in
``imageio-ffmpeg``.

Memory is bounded by the output, whatever the input: the output (16 kHz mono float32, at most
the window or the limit) is one buffer written in place, and the input passes through a block
of ``BLOCK_BYTES`` at a time, mixed down and resampled as it comes. A few MB of FLAC that says
"3 hours, 96 kHz, 8 channels" costs the 3 hours of 16 kHz mono it decodes to (691 MB at the
default limit), never the 33 GB of its frames.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import selectors
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import ffmpeg  # ffmpeg-python: builds the command line
import numpy as np

from serve_app.contracts import SAMPLE_RATE, AudioSource, DecodedAudio
from serve_app.errors import InternalError, InvalidRequest, PayloadTooLarge, ServeError, UnsupportedAudio

if TYPE_CHECKING:
    import soundfile

# The replica's log, where Serve adds the request id: ffmpeg's own words go there, not to clients.
logger = logging.getLogger("ray.serve")


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
    """Map ffmpeg's stderr to an error with the right status code and a short message of our
    own: ffmpeg's text (paths, library internals) goes to the log, never to the client."""
    rule = matching_rule(stderr)
    detail = stderr.strip()[-2000:] or "no output"
    if rule is not None:
        logger.info("ffmpeg refused the input (%s): %s", rule.message, detail)
        return rule.error(rule.message)
    logger.error("unclassified ffmpeg failure: %s", detail)
    return InternalError("audio decoding failed")


NATIVE_MAGIC = (b"RIFF", b"RF64", b"fLaC")
"""WAV (RIFF/RF64) and FLAC: read in process."""


BLOCK_BYTES = 4 * 1024 * 1024
"""Input read per step, as float32 frames × channels: the peak of a decode is its output plus
about this much (the block, its mono mix, the resampler's part), whatever the rate and channel
count. 4 MB is 65 s of 16 kHz mono and 1.4 s of 96 kHz 8-channel audio."""

GROW_SAMPLES = 60 * SAMPLE_RATE
"""An output of unknown length grows by a quarter of itself, and at least this much, at a time."""


class _Output:
    """The decoded samples, written in place into one float32 buffer: sized from the header
    when the length is known, grown (``realloc``, no copy of what is there) when it is not, never
    past ``cap`` samples. No list of blocks and no final concatenation: never two copies."""

    def __init__(self, expected: int, cap: int) -> None:
        self.cap = cap
        self.buf = np.empty(max(0, min(expected, cap)), np.float32)
        self.n = 0

    def room(self, want: int) -> int:
        """Free samples for the next ``want`` (grown when needed); fewer at the cap, 0 when full."""
        free = len(self.buf) - self.n
        if free < want and len(self.buf) < self.cap:
            size = min(self.cap, max(self.n + want, len(self.buf) + max(len(self.buf) // 4, GROW_SAMPLES)))
            # No view of the buffer outlives a call of this class, so nothing points at the old one.
            self.buf.resize(size, refcheck=False)
            free = size - self.n
        return min(free, want)

    def write(self, x: np.ndarray) -> bool:
        """Append ``x``, or as much of it as fits; False when the cap cut it."""
        k = self.room(len(x))
        self.buf[self.n : self.n + k] = x[:k]
        self.n += k
        return k == len(x)

    def result(self) -> np.ndarray:
        self.buf.resize(self.n, refcheck=False)  # shrinks in place
        return self.buf


def read_natively(source: AudioSource, want_s: float, limit_s: float | None) -> np.ndarray | None:
    """WAV/FLAC samples of the source's window as 16 kHz mono float32, or ``None`` when this is
    not a WAV/FLAC that libsndfile reads (then ffmpeg decides, and explains any failure).
    ``limit_s``: a whole upload longer than this is refused from its header, before decoding.
    At most ``want_s`` of output is decoded, block by block (``BLOCK_BYTES``)."""
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
            return _read_blocks(f, source.start_s, want_s, limit_s)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        return None


def _read_blocks(f: soundfile.SoundFile, start_s: float, want_s: float, limit_s: float | None) -> np.ndarray:
    import soxr

    rate, channels = f.samplerate, f.channels
    # A FLAC or WAV written to a pipe does not know its length (libsndfile then reports
    # 2**63-1 frames): trust the header only when it is plausible. (Such a FLAC cannot be read
    # here at all, libsndfile fails to seek in it: ffmpeg takes it.)
    known = f.frames < 2**40
    if limit_s is not None and known and f.frames > (limit_s + 1.0) * rate:
        raise PayloadTooLarge(f"audio is longer than the limit of {limit_s:.0f} s")
    start = round(start_s * rate)
    if known and start >= f.frames:
        return np.zeros(0, np.float32)
    if start:
        f.seek(start)
    left = round(want_s * rate)  # input frames still wanted
    cap = round(want_s * SAMPLE_RATE)  # the output's bound: the window, or the limit + 1 s
    # A few samples of slack: the resampler may round the total up.
    expected = math.ceil(min(left, f.frames - start) * SAMPLE_RATE / rate) + 16 if known else GROW_SAMPLES
    out = _Output(expected, cap)
    block = np.empty((max(1, BLOCK_BYTES // (4 * channels)), channels), np.float32)
    mix = np.full(channels, 1.0 / channels, np.float32)
    mono_buf = np.empty(len(block), np.float32) if channels > 1 else None
    resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None
    while True:
        ask = min(left, len(block))
        frames = f.read(ask, out=block) if ask else block[:0]
        left -= len(frames)
        last = left <= 0 or len(frames) < ask  # the window is read, or the file ended
        if mono_buf is None:
            mono = frames[:, 0]
        else:
            mono = np.dot(frames, mix, out=mono_buf[: len(frames)])  # BLAS; matmul with out= is not
        if resampler is not None:
            mono = resampler.resample_chunk(mono, last=last)
        if not out.write(mono) or last:
            break
    return out.result()


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
        """ffmpeg's f32le stdout read as it comes, straight into the output buffer (never a copy
        of the whole stream), at most ``want_s`` of it; its stderr kept to classify a failure."""
        cap = round(want_s * SAMPLE_RATE)
        out = _Output(min(cap, GROW_SAMPLES), cap)
        stderr = _Tail()
        proc = subprocess.Popen(
            self._command(source, start_s, want_s),
            pass_fds=pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        try:
            capped = self._pump(proc, out, stderr, time.monotonic() + self.timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        if proc.returncode != 0 and not capped:
            raise classify_failure(stderr.text())
        return out.result()

    def _pump(self, proc: subprocess.Popen[bytes], out: _Output, stderr: _Tail, deadline: float) -> bool:
        """Read ffmpeg's two pipes until both close; True when the output reached its cap (then
        ffmpeg was stopped: with ``-t`` that is at most a rounding away from its own end)."""
        assert proc.stdout is not None and proc.stderr is not None
        nbytes = 0  # bytes of output so far: a read may end inside a sample
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            sel.register(proc.stderr, selectors.EVENT_READ)
            while sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise InternalError(f"audio decoding took longer than {self.timeout_s:.0f} s")
                for key, _ in sel.select(remaining):
                    if key.fileobj is proc.stderr:
                        chunk = os.read(proc.stderr.fileno(), 65536)
                        stderr.add(chunk)
                        if not chunk:
                            sel.unregister(proc.stderr)
                        continue
                    room = out.room(GROW_SAMPLES // 4)
                    if room == 0:
                        proc.kill()
                        return True
                    raw = out.buf.view(np.uint8)[nbytes : (out.n + room) * 4]
                    got = os.readv(proc.stdout.fileno(), [raw.data])
                    del raw  # no view may outlive a read: the buffer grows in place
                    nbytes += got
                    out.n = nbytes // 4
                    if not got:
                        sel.unregister(proc.stdout)
        return False


class _Tail:
    """ffmpeg's stderr, bounded: its beginning and its end (a damaged long file may print an
    error per frame), which is where the lines ``DECODE_FAILURES`` looks for are."""

    KEEP = 32 * 1024

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()

    def add(self, chunk: bytes) -> None:
        if len(self.head) < self.KEEP:
            take = self.KEEP - len(self.head)
            self.head += chunk[:take]
            chunk = chunk[take:]
        self.tail += chunk
        del self.tail[: max(0, len(self.tail) - self.KEEP)]

    def text(self) -> str:
        return (bytes(self.head) + bytes(self.tail)).decode("utf-8", "replace")
