"""FunASR's realtime protocol from the client's side: the messages, and what a session's timing says.

Shared by the realtime benchmark (``bench/realtime.py``, asyncio) and the Locust ``RealtimeUser``
(``load/locustfile.py``, gevent): each records a :class:`SessionTrace` while it streams and reads
the same figures from it. Plain Python (no websockets, no Locust), so unit tests can check the
arithmetic and the report stays light.

How the figures are taken (all times are the client's ``time.perf_counter()``):

* **first partial**: from the moment the first audio frame was sent to the first partial received.
* **partial latency**: the streaming Paraformer decodes 600 ms chunks (``realtime.chunk_size``
  ``[0, 10, 5]`` × 60 ms), and FunASR's replies carry no stream position, so the client cannot
  tell which chunk a partial answers. Each partial is attributed to the *latest chunk boundary
  already sent*: boundary k is the moment the frame holding sample ``9600·k − 1`` (the last of
  the k-th 600 ms of the stream) was sent, and the end of the audio counts as one (the last,
  shorter chunk). Latency = arrival − that moment: the server gathering 200 ms VAD chunks, the
  step's batch wait and forward pass, and the trip back. Partials arriving before the first
  boundary (a model that answers inside the first chunk) are left to the first-partial figure.
  Two limits, both inherent to what the wire shows: (1) it is a *lower bound* once the server
  is more than a chunk behind: a partial for an old chunk is then attributed to a newer
  boundary, so while audio flows the figure stays under 600 ms plus the client's pacing jitter.
  Falling behind shows in **final after end** instead (the acknowledgement waits for the
  backlog) and, past ``realtime.max_backlog_s``, as failed sessions (close 1008). (2) After an
  endpoint the server starts its chunking afresh for the next utterance, so its chunks may be
  offset from the stream-start grid by up to a chunk; partials are then attributed up to 600 ms
  off in either direction.
* **final after end**: from the end message (``{"is_speaking": false, "is_end": true}``) to the
  ``{"is_end": true, "is_final": true}`` acknowledgement, which the server sends after the last
  final (2pass) or after flushing the last partial (online).
"""

from __future__ import annotations

import bisect
import io
import json
import wave
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SAMPLE_RATE = 16_000
FRAME_BYTES = 1920
"""60 ms of 16 kHz 16-bit mono: the frame FunASR's own client sends (``chunk_interval`` 10)."""
FRAME_S = FRAME_BYTES / 2 / SAMPLE_RATE
CHUNK_SAMPLES = 9600
"""The streaming model's chunk: 600 ms (``realtime.chunk_size`` ``[0, 10, 5]`` in 60 ms frames)."""
CHUNK_S = CHUNK_SAMPLES / SAMPLE_RATE
END_MESSAGE = json.dumps({"is_speaking": False, "is_end": True})
"""The end of a stream as FunASR's newer client says it: the server acknowledges it."""

Mode = Literal["online", "2pass"]
Reply = Literal["partial", "final", "end", "error", "other"]


def ws_url(http_url: str, path: str = "/") -> str:
    """The WebSocket URL of ``path`` under ``http_url`` (FunASR's protocol is served at ``/`` of
    the app: ``http://127.0.0.1:8000`` → ``ws://127.0.0.1:8000/``, a route prefix kept)."""
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if http_url.startswith(http):
            http_url = ws + http_url[len(http) :]
            break
    return http_url.rstrip("/") + path


def config_message(mode: Mode, wav_name: str) -> str:
    """The configuration FunASR's Python client sends first (its defaults, PCM at 16 kHz)."""
    return json.dumps(
        {
            "mode": mode,
            "chunk_size": [5, 10, 5],
            "chunk_interval": 10,
            "encoder_chunk_look_back": 4,
            "decoder_chunk_look_back": 0,
            "audio_fs": SAMPLE_RATE,
            "wav_name": wav_name,
            "wav_format": "pcm",
            "is_speaking": True,
            "hotwords": "",
            "itn": True,
        }
    )


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as 16-bit little-endian PCM."""
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def wav_pcm(data: bytes) -> bytes:
    """The PCM frames of a 16 kHz mono 16-bit WAV (what ``load.clips`` writes), checked."""
    with wave.open(io.BytesIO(data)) as w:
        shape = (w.getframerate(), w.getnchannels(), w.getsampwidth())
        if shape != (SAMPLE_RATE, 1, 2):
            raise ValueError(f"expected 16 kHz mono 16-bit WAV, got (rate, channels, bytes) {shape}")
        return w.readframes(w.getnframes())


def frames(pcm: bytes, frame_bytes: int = FRAME_BYTES) -> list[bytes]:
    return [pcm[i : i + frame_bytes] for i in range(0, len(pcm), frame_bytes)]


def classify(message: dict[str, Any]) -> Reply:
    """What a server reply is: the acknowledgement, an error, a final or a partial."""
    if message.get("error"):
        return "error"
    if message.get("is_end"):
        return "end"
    mode = message.get("mode")
    if mode in ("2pass-offline", "offline") or message.get("is_final"):
        return "final"
    if mode in ("online", "2pass-online") and message.get("text"):
        return "partial"
    return "other"


@dataclass
class SessionTrace:
    """When one session sent what and received what; the figures are read from it."""

    sent: list[float] = field(default_factory=list)
    """When each audio frame was handed to the socket."""
    sent_bytes: int = 0
    partials: list[float] = field(default_factory=list)
    finals: list[float] = field(default_factory=list)
    end_sent: float | None = None
    end_ack: float | None = None
    error: str | None = None
    """Why the session did not end with the acknowledgement (a server error, a close, a timeout)."""

    def send(self, frame: bytes, at: float) -> None:
        self.sent.append(at)
        self.sent_bytes += len(frame)

    def receive(self, text: str | bytes, at: float) -> bool:
        """Record one reply; True when the session is over (acknowledged or failed)."""
        message = json.loads(text)
        kind = classify(message)
        if kind == "partial":
            self.partials.append(at)
        elif kind == "final":
            self.finals.append(at)
        elif kind == "end":
            self.end_ack = at
        elif kind == "error":
            self.error = f"server: {message['error']}"
        return kind in ("end", "error")

    @property
    def audio_s(self) -> float:
        return self.sent_bytes / 2 / SAMPLE_RATE

    @property
    def ok(self) -> bool:
        return self.error is None and self.end_ack is not None

    def chunk_ends(self, frame_bytes: int = FRAME_BYTES) -> list[float]:
        """When the last sample of each 600 ms chunk (from the stream start) was sent, and when
        the last frame was (the end of the audio closes the last, shorter chunk)."""
        if not self.sent:
            return []
        per_frame = frame_bytes // 2
        total = self.sent_bytes // 2
        out = [self.sent[(k * CHUNK_SAMPLES - 1) // per_frame] for k in range(1, total // CHUNK_SAMPLES + 1)]
        if not out or out[-1] != self.sent[-1]:
            out.append(self.sent[-1])
        return out

    def partial_latencies_s(self, frame_bytes: int = FRAME_BYTES) -> list[float]:
        """Each partial's arrival minus the latest chunk boundary sent before it (module docstring)."""
        ends = self.chunk_ends(frame_bytes)
        out = []
        for t in self.partials:
            i = bisect.bisect_right(ends, t) - 1
            if i >= 0:
                out.append(t - ends[i])
        return out

    def first_partial_s(self) -> float | None:
        if not self.partials or not self.sent:
            return None
        return self.partials[0] - self.sent[0]

    def final_after_end_s(self) -> float | None:
        """End message → acknowledgement (or, without one, the last final after the end)."""
        if self.end_sent is None:
            return None
        last = self.end_ack if self.end_ack is not None else max(self.finals, default=None)
        return None if last is None or last < self.end_sent else last - self.end_sent
