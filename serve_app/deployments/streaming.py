"""Streaming stage: the state of live realtime sessions, and their model work batched.

Each session's state (streaming-VAD cache, streaming-ASR cache) lives on exactly one replica
for the session's life: every call names its session (``handle.options(session_id=...)``) and
``serve_app.deployments.session_router.SessionRouter`` pins it to the replica that opened it.
A call that reaches a replica without its session's state raises ``SessionLost``, never starts
afresh. ``attach`` is held open by the ingress for the session's life: Serve counts it as an
ongoing request, so a replica chosen for a scale-down drains (finishes its sessions) instead of
dropping them, within ``graceful_shutdown_timeout_s``.

Chunks from many sessions run as one step: ``feed`` only buffers until a session has a
streaming-VAD chunk (200 ms) of new audio; then its work joins the next step, which waits up to
``batch_wait_s`` for other sessions' and runs the VAD of each and one batched forward pass of
the streaming ASR model over all of them (``engines.streaming_asr``).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.serve.config import RequestRouterConfig

from serve_app.config import RealtimeArgs
from serve_app.contracts import SAMPLE_RATE
from serve_app.deployments.common import logger, pick_device, replica_info
from serve_app.engines.streaming_asr import StreamingParaformer, StreamingSession
from serve_app.engines.streaming_vad import StreamingFsmnVad, VadEvent, VadSession
from serve_app.errors import Overloaded, SessionLost
from serve_app.load import LoadMeter

VAD_CHUNK_S = 0.2


@dataclass(frozen=True)
class StreamResult:
    """What one ``feed`` produced for its session."""

    replica: str
    """The replica holding the session (the pinning tests read it)."""
    partial: str
    """Online text decoded by this call ("" when the streaming model decoded nothing)."""
    events: list[VadEvent]
    """Speech starts and ends decided by this call, in stream seconds."""
    processed_s: float
    """Stream time up to which audio has been through the VAD."""
    step_sessions: int = 0
    """Sessions whose chunks shared the forward pass that processed this call (0: buffered only)."""


@dataclass(eq=False)
class _Live:
    vad: VadSession
    asr: StreamingSession | None
    inbox: list[np.ndarray] = field(default_factory=list)
    inbox_samples: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def take_inbox(self) -> np.ndarray:
        audio = np.concatenate(self.inbox) if self.inbox else np.zeros(0, np.float32)
        self.inbox, self.inbox_samples = [], 0
        return audio


@dataclass
class _Work:
    live: _Live
    samples: np.ndarray
    is_final: bool
    future: asyncio.Future[tuple[str, list[VadEvent], int]]


@serve.deployment(
    name="Streaming",
    ray_actor_options={"num_cpus": 0.5},
    # Per live session: its attach call plus the feed in flight.
    max_ongoing_requests=200,
    # A replica chosen for a scale-down finishes its live sessions first (up to an hour).
    graceful_shutdown_timeout_s=3600,
    request_router_config=RequestRouterConfig(
        request_router_class="serve_app.deployments.session_router.SessionRouter"  # type: ignore[arg-type]
    ),
)
class StreamingDeployment:
    def __init__(self, args: RealtimeArgs, vad_dir: str, asr_dir: str | None) -> None:
        self.args = args
        self.vad = StreamingFsmnVad(
            Path(vad_dir), chunk_ms=int(VAD_CHUNK_S * 1000), max_end_silence_ms=args.end_silence_ms
        )
        self.asr = (
            StreamingParaformer(
                Path(asr_dir),
                device=pick_device("auto"),
                threads=args.threads,
                chunk_size=args.chunk_size,
                encoder_chunk_look_back=args.encoder_chunk_look_back,
                decoder_chunk_look_back=args.decoder_chunk_look_back,
            )
            if asr_dir
            else None
        )
        self._replica = str(replica_info()["replica"])
        self._sessions: dict[str, _Live] = {}
        self._work: list[_Work] = []
        self._has_work = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streaming")
        self._steps = 0
        self._stepped_sessions = 0
        self._busy_s = 0.0
        self._load = LoadMeter(1, lambda: self._busy_s)
        # Warm up: a second of silence through both models.
        warm = [(self.vad.new_session(), np.zeros(SAMPLE_RATE, np.float32), True)]
        self.vad.step(warm)
        if self.asr is not None:
            self.asr.step([(self.asr.new_session(), np.zeros(SAMPLE_RATE, np.float32), True)])
        logger.info("Streaming ready (%s)", "streaming ASR " + self.asr.name if self.asr else "VAD only")

    # -- sessions -----------------------------------------------------------------------------

    def _start_loops(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._step_loop())
            self._reaper = asyncio.create_task(self._reap_idle())

    async def open(self, session_id: str) -> dict[str, Any]:
        """Create the session's state here. Refused (``Overloaded``) beyond ``max_sessions``."""
        self._start_loops()
        if session_id in self._sessions:
            raise SessionLost(f"session {session_id} is already open")
        if len(self._sessions) >= self.args.max_sessions:
            raise Overloaded(
                f"this server holds its maximum of {self.args.max_sessions} live sessions per replica"
            )
        self._sessions[session_id] = _Live(
            vad=self.vad.new_session(), asr=self.asr.new_session() if self.asr else None
        )
        return {"replica": self._replica, "online_asr": self.asr is not None}

    async def attach(self, session_id: str) -> None:
        """Held open by the ingress for the session's life (see the module docstring)."""
        live = self._get(session_id)
        await live.closed.wait()

    async def close(self, session_id: str) -> None:
        """Free the session's state (idempotent)."""
        live = self._sessions.pop(session_id, None)
        if live is not None:
            live.closed.set()

    def _get(self, session_id: str) -> _Live:
        live = self._sessions.get(session_id)
        if live is None:
            raise SessionLost(f"session {session_id} has no state on this replica (expired or restarted)")
        return live

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.args.idle_timeout_s / 2))
            now = time.monotonic()
            for sid, live in list(self._sessions.items()):
                if now - live.last_seen > self.args.idle_timeout_s:
                    logger.info("closing session %s: idle for %.0f s", sid, now - live.last_seen)
                    await self.close(sid)

    # -- audio --------------------------------------------------------------------------------

    async def feed(self, session_id: str, samples: np.ndarray, is_final: bool = False) -> StreamResult:
        """Audio of one session (16 kHz float32, any length; ``is_final`` ends its utterance).
        Calls of one session must not overlap (the ingress sends them one at a time)."""
        live = self._get(session_id)
        live.last_seen = time.monotonic()
        async with live.lock:
            if samples.size:
                live.inbox.append(np.asarray(samples, dtype=np.float32))
                live.inbox_samples += samples.size
            partial, events, shared = "", list[VadEvent](), 0
            if is_final or live.inbox_samples >= VAD_CHUNK_S * SAMPLE_RATE:
                loop = asyncio.get_running_loop()
                future: asyncio.Future[tuple[str, list[VadEvent], int]] = loop.create_future()
                self._work.append(_Work(live, live.take_inbox(), is_final, future))
                self._has_work.set()
                partial, events, shared = await future
            return StreamResult(
                replica=self._replica,
                partial=partial,
                events=events,
                processed_s=live.vad.samples_seen / SAMPLE_RATE,
                step_sessions=shared,
            )

    async def _step_loop(self) -> None:
        while True:
            await self._has_work.wait()
            if self.args.batch_wait_s > 0 and len(self._work) < len(self._sessions):
                await asyncio.sleep(self.args.batch_wait_s)  # let other sessions' chunks join
            n = self.args.max_step_sessions
            work, self._work = self._work[:n], self._work[n:]
            if not self._work:
                self._has_work.clear()
            if not work:
                continue
            t0 = time.perf_counter()
            try:
                results = await asyncio.get_running_loop().run_in_executor(self._pool, self._step, work)
            except Exception as e:  # every session of the step gets the error
                for w in work:
                    if not w.future.done():
                        w.future.set_exception(e)
                continue
            finally:
                self._busy_s += time.perf_counter() - t0
            self._steps += 1
            self._stepped_sessions += len(work)
            self._load.audio(sum(w.samples.size for w in work) / SAMPLE_RATE)
            for w, r in zip(work, results, strict=True):
                if not w.future.done():
                    w.future.set_result(r)

    def _step(self, work: list[_Work]) -> list[tuple[str, list[VadEvent], int]]:
        events = self.vad.step([(w.live.vad, w.samples, w.is_final) for w in work])
        if self.asr is None:
            return [("", e, len(work)) for e in events]
        steps = self.asr.step([(w.live.asr, w.samples, w.is_final) for w in work if w.live.asr is not None])
        for w, e in zip(work, events, strict=True):
            if w.live.asr is not None and any(ev.kind == "end" for ev in e):
                w.live.asr.reset()  # an endpoint: the next utterance starts afresh (as FunASR's 2pass)
        return [(s.text, e, len(work)) for s, e in zip(steps, events, strict=True)]

    # -- operators ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            **replica_info(),
            "sessions": len(self._sessions),
            "online_asr": self.asr is not None,
            "steps": self._steps,
            "stepped_sessions": self._stepped_sessions,
            "mean_step_sessions": self._stepped_sessions / self._steps if self._steps else 0.0,
            "busy_s": self._busy_s,
            "load": self._load.figures(),
        }

    def record_autoscaling_stats(self) -> dict[str, float]:
        return {"live_sessions": float(len(self._sessions))}

    def ready(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        return replica_info()
