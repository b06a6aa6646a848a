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
from typing import Any

from fastapi import APIRouter, WebSocket

from serve_app.api.context import ApiContext
from serve_app.api.protocol import FunasrConfig
from serve_app.api.realtime.common import Connection, ProtocolError, close_code, serve_socket
from serve_app.errors import ServeError
from serve_app.realtime.audio import Pcm16Stream
from serve_app.realtime.events import Event, Failed, Final, Partial
from serve_app.realtime.session import RealtimeSession, SessionOptions

router = APIRouter(tags=["realtime"])


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


class FunasrConnection(Connection):
    subprotocol = "binary"

    def __init__(self, ws: WebSocket, ctx: ApiContext) -> None:
        super().__init__(ws, ctx)
        self.config: FunasrConfig | None = None
        self.session: RealtimeSession | None = None
        self.pcm: Pcm16Stream | None = None
        self.finishing: asyncio.Task[None] | None = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_json(message, ensure_ascii=False)

    async def opened(self) -> None:
        pass  # the client speaks first (its configuration)

    async def refused(self, error: ServeError) -> None:
        pass  # before its configuration a reply would name no stream: the close reason says it

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
        self.session = self.new_session(options, self.on_event)
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

    async def on_bytes(self, data: bytes) -> None:
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

    def busy(self) -> bool:
        return self.finishing is not None and not self.finishing.done()  # a long offline stream's answer

    async def report(self, fault: ProtocolError | ServeError) -> None:
        if isinstance(fault, ServeError):
            await self.send({"text": "", "is_end": True, "is_final": False, "error": fault.message})
        elif self.config is not None:
            await self.send(
                {
                    "mode": self.config.mode,
                    "wav_name": self.config.wav_name,
                    "text": "",
                    "is_end": True,
                    "is_final": False,
                    "error": fault.reason,
                }
            )

    async def ended(self) -> None:
        if self.finishing is not None and not self.finishing.done():
            # The client closed first: give the finals no more time than it would wait.
            self.finishing.cancel()
        if self.session is not None:
            await self.session.close()


async def serve_funasr(ws: WebSocket) -> None:
    await serve_socket(ws, FunasrConnection(ws, ws.app.state.ctx))


router.add_api_websocket_route("/", serve_funasr)
router.add_api_websocket_route("/v1/realtime/funasr", serve_funasr)
