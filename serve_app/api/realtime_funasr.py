"""FunASR's realtime WebSocket protocol, so FunASR's own clients work unchanged.

Served at ``/`` (FunASR's official Python client dials ``ws://host:port`` with no path, offering
the ``binary`` subprotocol) and at ``/v1/realtime/funasr``. A JSON configuration first
(``FunasrConfig``), then binary 16-bit PCM frames of any size at ``audio_fs``, then
``{"is_speaking": false}`` (classic clients, which close ~2 s later: the last final must come
within that) or ``{"is_speaking": false, "is_end": true}`` (clients since mid-2026, which fail
without the ``{"is_end": true, "is_final": true}`` acknowledgement that ends our answer).

Replies: ``{"mode", "wav_name", "text", "is_final", "timestamp", "stamp_sents"}`` with ``mode``
``online`` / ``2pass-online`` (new text, appended by the client), ``2pass-offline`` (a corrected
sentence at each endpoint), ``offline`` (the whole stream). Faults end the socket with a close
code and a reason: 1007 bad JSON or configuration, 1003 audio before the configuration or a
container outside offline mode, 1008 audio faster than real time (online/2pass) or an idle
socket, 1009 a stream over the limits (offline: ``realtime.max_offline_audio_s``), 1013 no room
for another socket or session, or for more buffered audio (``realtime.max_sockets``,
``max_buffered_mb``, ``max_sessions``), 1011 the session was lost. While the server works on
the answer to the end message, the client owes it nothing: the idle timeout waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from serve_app.api.context import ApiContext
from serve_app.api.protocol import FunasrConfig
from serve_app.api.realtime_sockets import after_socket, open_slot
from serve_app.errors import InvalidRequest, Overloaded, PayloadTooLarge, ServeError, TooFast
from serve_app.realtime.audio import Budget, Pcm16Stream
from serve_app.realtime.session import (
    Event,
    Failed,
    Final,
    Partial,
    RealtimeSession,
    SessionOptions,
)

logger = logging.getLogger("ray.serve")
router = APIRouter(tags=["realtime"])

CLOSE_CODES: dict[type[ServeError], int] = {
    InvalidRequest: 1007,
    TooFast: 1008,
    PayloadTooLarge: 1009,
    Overloaded: 1013,
}


def close_code(err: ServeError) -> int:
    return next((code for cls, code in CLOSE_CODES.items() if isinstance(err, cls)), 1011)


class ProtocolError(Exception):
    """A client that breaks the protocol: closed with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def stamps(final: Final) -> tuple[str, list[dict[str, Any]]]:
    """FunASR's ``timestamp`` (a JSON string of ``[[start_ms, end_ms], ...]``, one per token or
    word) and ``stamp_sents`` (one entry per sentence)."""
    ms = lambda s: round(s * 1000)  # noqa: E731
    words = final.transcript.words
    timestamp = json.dumps([[ms(w.start_s), ms(w.end_s)] for w in words])
    sents = []
    for seg in final.transcript.segments:
        if not seg.text.strip():
            continue
        text = seg.text.strip()
        sents.append(
            {
                "text_seg": " ".join(w.word for w in seg.words) or text,
                "punc": text[-1] if not text[-1].isalnum() else "",
                "start": ms(seg.start_s),
                "end": ms(seg.end_s),
                "ts_list": [[ms(w.start_s), ms(w.end_s)] for w in seg.words],
            }
        )
    return timestamp, sents


class FunasrConnection:
    def __init__(self, ws: WebSocket, ctx: ApiContext, budget: Budget | None = None) -> None:
        self.ws, self.ctx = ws, ctx
        self.budget = budget
        """Pays for the audio its sessions buffer (the socket's slot on ``ctx.sockets``)."""
        self.config: FunasrConfig | None = None
        self.session: RealtimeSession | None = None
        self.pcm: Pcm16Stream | None = None
        self.finishing: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        if self.ws.client_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))
            except (WebSocketDisconnect, RuntimeError):  # the client went away meanwhile
                pass

    async def on_event(self, event: Event) -> None:
        cfg = self.config
        assert cfg is not None
        base = {"wav_name": cfg.wav_name}
        if isinstance(event, Partial):
            mode = "2pass-online" if cfg.mode == "2pass" else "online"
            await self.send({**base, "mode": mode, "text": event.text, "is_final": False})
        elif isinstance(event, Final):
            text = event.transcript.text
            if not text and not event.last:
                return  # an endpoint with nothing recognised: FunASR's servers send nothing
            mode = {"2pass": "2pass-offline", "offline": "offline", "online": "online"}[cfg.mode]
            timestamp, sents = stamps(event)
            await self.send(
                {
                    **base,
                    "mode": mode,
                    "text": text,
                    "is_final": event.last,
                    "timestamp": timestamp,
                    "stamp_sents": sents,
                }
            )
        elif isinstance(event, Failed):
            await self.send(
                {
                    **base,
                    "mode": cfg.mode,
                    "text": "",
                    "is_final": False,
                    "is_end": True,
                    "error": event.error.message,
                }
            )
            await self.close(close_code(event.error), event.error.message)

    async def close(self, code: int, reason: str) -> None:
        if self.ws.client_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code=code, reason=reason[:120])
            except RuntimeError:
                pass

    async def start(self, data: dict[str, Any]) -> None:
        """A configuration: a new stream (after the previous one, if any, has finished)."""
        if self.finishing is not None:
            await self.finishing
            self.finishing = None
        if self.session is not None:
            await self.session.close()
        try:
            self.config = cfg = FunasrConfig.parse(data, self.ctx.limits)
        except ServeError as e:
            raise ProtocolError(1007, f"bad configuration: {e.message}") from None
        if not cfg.pcm and cfg.mode != "offline":
            raise ProtocolError(
                1003, f"wav_format {cfg.wav_format!r} needs mode offline; online and 2pass take PCM"
            )
        served = self.ctx.served
        options = SessionOptions(
            mode=cfg.mode,
            language=served.language,
            hotwords=cfg.hotword_list(),
            itn=cfg.itn,
            turn_detection=True,
        )
        self.pcm = Pcm16Stream(cfg.audio_fs)
        self.session = RealtimeSession(
            self.ctx.streaming,
            self.ctx.pipeline,
            self.ctx.realtime,
            self.ctx.limits,
            options,
            self.on_event,
            self.budget,
        )
        await self.session.start()
        if not cfg.is_speaking:
            await self.finish(end=bool(data.get("is_end")))

    async def finish(self, end: bool) -> None:
        session, cfg = self.session, self.config
        if session is None or cfg is None:
            raise ProtocolError(1002, "send the JSON configuration first")
        if self.pcm is not None and cfg.pcm:
            session.push(self.pcm.push(b"", last=True))

        async def run() -> None:
            await session.finish()
            if end and session.failed is None:
                await self.send(
                    {"mode": cfg.mode, "wav_name": cfg.wav_name, "text": "", "is_end": True, "is_final": True}
                )

        # Not awaited here: the socket keeps reading (a close, a next configuration) meanwhile.
        self.finishing = asyncio.create_task(run())

    async def on_audio(self, data: bytes) -> None:
        session, cfg = self.session, self.config
        if session is None or cfg is None or self.pcm is None:
            raise ProtocolError(1003, "audio before the JSON configuration; send the configuration first")
        if self.finishing is not None:
            raise ProtocolError(
                1002, "audio after is_speaking=false; send a new configuration to start another stream"
            )
        if cfg.pcm:
            session.push(self.pcm.push(data))
        else:
            session.push_raw(data)

    async def on_text(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            raise ProtocolError(
                1007,
                "text frames must be JSON (the configuration or is_speaking); audio goes in binary frames",
            ) from None
        if not isinstance(data, dict):
            raise ProtocolError(1007, "a text frame must be a JSON object")
        if self.config is None or "mode" in data:
            await self.start(data)
        elif data.get("is_speaking") is False or data.get("is_finished") is True:
            await self.finish(end=bool(data.get("is_end")))
        elif set(data) - {"is_speaking", "is_end", "is_finished"}:
            raise ProtocolError(1007, f"unexpected keys {sorted(data)} in a control message")

    async def run(self) -> None:
        idle = self.ctx.realtime.idle_timeout_s
        try:
            while True:
                try:
                    message = await asyncio.wait_for(self.ws.receive(), timeout=idle)
                except TimeoutError:
                    if self.finishing is not None and not self.finishing.done():
                        continue  # the client waits for our answer (a long offline stream's)
                    raise ProtocolError(1008, f"nothing received for {idle:.0f} s") from None
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    await self.on_audio(message["bytes"])
                elif message.get("text") is not None:
                    await self.on_text(message["text"])
        except ProtocolError as p:
            if self.config is not None:
                await self.send(
                    {
                        "mode": self.config.mode,
                        "wav_name": self.config.wav_name,
                        "text": "",
                        "is_end": True,
                        "is_final": False,
                        "error": p.reason,
                    }
                )
            await self.close(p.code, p.reason)
        except ServeError as e:
            await self.send({"text": "", "is_end": True, "is_final": False, "error": e.message})
            await self.close(close_code(e), e.message)
        except WebSocketDisconnect:
            pass
        finally:
            if self.finishing is not None and not self.finishing.done():
                # The client closed first: give the finals no more time than it would wait.
                self.finishing.cancel()
            if self.session is not None:
                await self.session.close()


async def serve_funasr(ws: WebSocket) -> None:
    ctx: ApiContext = ws.app.state.ctx
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="binary" if "binary" in offered else None)
    slot = await open_slot(ws, ctx)
    if slot is None:
        return
    with slot:
        await FunasrConnection(ws, ctx, slot).run()
    await after_socket(slot)


router.add_api_websocket_route("/", serve_funasr)
router.add_api_websocket_route("/v1/realtime/funasr", serve_funasr)
