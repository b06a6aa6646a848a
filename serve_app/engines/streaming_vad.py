"""Streaming FSMN-VAD: speech start/end events per session, as audio arrives.

FunASR's ``FsmnVADStreaming.inference`` in streaming mode keeps everything about a stream in
its ``cache`` dict and answers each chunk with ``[[beg, -1]]`` (speech started), ``[[-1, end]]``
(it ended), ``[[beg, end]]`` (both in one chunk) or nothing, in ms since the cache was created.
Here each session owns its cache, and the events come back as :class:`VadEvent` with times
absolute in the session's stream (FunASR resets its cache, and its clock, after ``is_final``).

We call the model's ``inference`` rather than ``AutoModel.generate``: generate rewrites the
AutoModel's kwargs on every call. The sessions are run one after another, not batched: FSMN-VAD
costs ~7 ms per 200 ms chunk on one core, far below the ASR step it gates.

Not thread-safe: one caller thread (a lock only guards against misuse).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from serve_app.contracts import SAMPLE_RATE
from serve_app.engines.funasr_loader import load_automodel


@dataclass(frozen=True)
class VadEvent:
    """Speech started or ended at ``time_s`` seconds into the session's stream."""

    kind: Literal["start", "end"]
    time_s: float


@dataclass(eq=False)
class VadSession:
    """One stream's VAD state: FunASR's streaming ``cache`` and where its clock started in the
    stream. Bounded: FunASR 1.4.16 drops its score, decibel and waveform history up to the last
    decided frame, and we drop the segments it has sent. Dropping the object frees it."""

    cache: dict[str, Any] = field(default_factory=dict)
    offset_samples: int = 0
    """Where FunASR's clock (reset after each ``is_final``) started, in stream samples."""
    samples_seen: int = 0
    in_speech: bool = False
    """A start event was sent and its end not yet."""


def _drop_sent_segments(cache: dict[str, Any]) -> None:
    """FunASR keeps every segment of a stream in ``stats.output_data_buf`` (~400 bytes each,
    forever). Drop those already sent with their end: it reads only the entries from
    ``output_data_buf_offset`` on and the last one (kept, even when sent)."""
    stats = cache.get("stats")
    segments = getattr(stats, "output_data_buf", None)
    if stats is None or not isinstance(segments, list):
        return
    done = min(int(stats.output_data_buf_offset), len(segments) - 1)
    if done > 0:
        del segments[:done]
        stats.output_data_buf_offset -= done


class StreamingFsmnVad:
    """FunASR's FSMN-VAD in streaming mode over many sessions.

    ``chunk_ms`` is FunASR's streaming ``chunk_size`` (samples are buffered to it).
    ``max_end_silence_ms`` is the silence that ends a segment; ``None`` keeps FunASR's dynamic
    schedule (2 s of silence at first, less as the segment grows longer)."""

    def __init__(
        self, model_dir: Path, chunk_ms: int = 200, max_end_silence_ms: int | None = 800, threads: int = 1
    ) -> None:
        if chunk_ms <= 0 or chunk_ms >= 15000:
            # FunASR treats a chunk_size of 15 s or more as whole-file (non-streaming) input.
            raise ValueError(f"chunk_ms must be in (0, 15000), got {chunk_ms}")
        self.chunk_ms = chunk_ms
        self.threads = threads
        self._am = load_automodel(model_dir, device="cpu", threads=threads)
        self.model = self._am.model
        kwargs = {k: v for k, v in self._am.kwargs.items() if k not in {"model", "input", "key"}}
        kwargs.update(chunk_size=chunk_ms, is_streaming_input=True)
        if max_end_silence_ms is not None:
            # FunASR's init_cache writes this into the model's shared options: it must be the
            # same for every session, hence an engine setting and not a per-session one.
            kwargs["max_end_silence_time"] = max_end_silence_ms
        self._kwargs = kwargs
        self._lock = threading.Lock()

    def new_session(self) -> VadSession:
        return VadSession()

    def step(self, items: Sequence[tuple[VadSession, np.ndarray, bool]]) -> list[list[VadEvent]]:
        """``feed`` for several sessions (one after another); one event list per item."""
        return [self.feed(s, samples, is_final) for s, samples, is_final in items]

    def feed(self, session: VadSession, samples: np.ndarray, is_final: bool = False) -> list[VadEvent]:
        """Events decided by these samples (any length, 16 kHz float32). ``is_final`` flushes
        the stream: an open segment is closed at its end, and the session starts afresh (its
        times keep counting from the stream start)."""
        audio = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).reshape(-1))
        start = session.samples_seen
        session.samples_seen += audio.size
        data = torch.from_numpy(audio)
        if not audio.size:
            if not is_final:
                return []
            # FunASR returns at once for empty input, before it flushes or resets a final
            # stream: hand it the samples it holds back instead (or one silent sample, too few
            # to make a frame of their own, when it holds none).
            held = session.cache.get("prev_samples")
            if isinstance(held, torch.Tensor) and held.numel():
                data, session.cache["prev_samples"] = held, torch.empty(0)
            else:
                data = torch.zeros(1)
        with self._lock, torch.inference_mode():
            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
            raw = self.model.inference(
                data_in=[data],
                key=["stream"],
                cache=session.cache,
                is_final=is_final,
                **self._kwargs,
            )
        _drop_sent_segments(session.cache)
        results = raw[0] if isinstance(raw, tuple) else raw
        value = results[0].get("value", []) if results else []
        offset_s = session.offset_samples / SAMPLE_RATE
        events: list[VadEvent] = []
        for beg, end in value:
            if beg >= 0:
                events.append(VadEvent("start", offset_s + beg / 1000))
                session.in_speech = True
            if end >= 0:
                events.append(VadEvent("end", offset_s + end / 1000))
                session.in_speech = False
        if is_final:
            # FunASR re-initialised the cache: its clock restarts at the next sample.
            session.offset_samples = start + audio.size
            session.in_speech = False
        return events
