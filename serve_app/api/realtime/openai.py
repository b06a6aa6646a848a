"""OpenAI's Realtime API, transcription sessions: ``/v1/realtime?intent=transcription``.

Client events: ``session.update`` (GA: ``session.type: "transcription"``, ``audio.input.format``
``{"type": "audio/pcm", "rate": 24000}``, ``audio.input.transcription``, ``audio.input.turn_detection``)
or the beta ``transcription_session.update`` (``input_audio_format: "pcm16"`` at 24 kHz,
``input_audio_transcription``, ``turn_detection``), ``input_audio_buffer.append`` (base64 PCM16),
``input_audio_buffer.commit``, ``input_audio_buffer.clear``. The server answers in the form the
client uses: a client that sends the ``OpenAI-Beta: realtime=v1`` header, or a beta event, gets
``transcription_session.*`` events, others ``session.*``.

Server events: ``session.created`` / ``session.updated``, ``input_audio_buffer.speech_started`` /
``speech_stopped`` (server VAD turn detection, the default; ``turn_detection: null`` leaves turns
to ``commit``), ``input_audio_buffer.committed`` / ``cleared``,
``conversation.item.input_audio_transcription.delta`` / ``.completed`` / ``.failed``, ``error``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket

from serve_app.api.context import ApiContext
from serve_app.api.realtime.common import Connection, ProtocolError, close_code, serve_socket
from serve_app.api.realtime.events import (
    OPENAI_RATE,
    AudioAppend,
    AudioClear,
    AudioCommit,
    BetaSession,
    ClientError,
    ClientEvent,
    Session,
    SessionUpdate,
    TranscriptionSessionUpdate,
    TurnDetection,
    parse_client_event,
)
from serve_app.errors import ServeError
from serve_app.realtime.audio import Pcm16Stream
from serve_app.realtime.events import Event, Failed, Final, Partial, SpeechStarted, SpeechStopped
from serve_app.realtime.session import RealtimeSession, SessionOptions

router = APIRouter(tags=["realtime"])

DEFAULT_TURN_DETECTION = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class OpenaiConnection(Connection):
    subprotocol = "realtime"

    def __init__(self, ws: WebSocket, ctx: ApiContext, beta: bool) -> None:
        super().__init__(ws, ctx)
        self.beta = beta
        self.id = _id("sess")
        self.rate = OPENAI_RATE
        self.language: str | None = None
        self.prompt: str | None = None
        self.model = ctx.served.names[0]
        self.turn_detection: dict[str, Any] | None = dict(DEFAULT_TURN_DETECTION)
        self.session: RealtimeSession | None = None
        self.pcm: Pcm16Stream | None = None
        self.items: dict[int, str] = {}
        self.last_item: str | None = None
        self._commits: set[asyncio.Task[None]] = set()

    # -- sending ------------------------------------------------------------------------------

    async def send(self, type_: str, **fields: Any) -> None:
        await self.send_json({"type": type_, "event_id": _id("event"), **fields})

    async def error(
        self, message: str, code: str = "invalid_value", param: str | None = None, event_id: str | None = None
    ) -> None:
        await self.send(
            "error",
            error={
                "type": "invalid_request_error",
                "code": code,
                "message": message,
                "param": param,
                "event_id": event_id,
            },
        )

    def session_body(self) -> dict[str, Any]:
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt or ""}
        if self.beta:
            return {
                "id": self.id,
                "object": "realtime.transcription_session",
                "input_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": self.turn_detection,
                "modalities": ["text"],
            }
        return {
            "type": "transcription",
            "id": self.id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.rate},
                    "transcription": transcription,
                    "turn_detection": self.turn_detection,
                    "noise_reduction": None,
                }
            },
            "include": None,
        }

    def prefix(self) -> str:
        return "transcription_session" if self.beta else "session"

    # -- events from the session ----------------------------------------------------------------

    def item(self, utterance: int) -> str:
        if utterance not in self.items:
            self.items[utterance] = _id("item")
        return self.items[utterance]

    async def on_event(self, event: Event) -> None:
        if isinstance(event, SpeechStarted):
            await self.send(
                "input_audio_buffer.speech_started",
                audio_start_ms=round(event.time_s * 1000),
                item_id=self.item(event.utterance),
            )
        elif isinstance(event, SpeechStopped):
            item = self.item(event.utterance)
            await self.send(
                "input_audio_buffer.speech_stopped", audio_end_ms=round(event.time_s * 1000), item_id=item
            )
            await self.committed(item)
        elif isinstance(event, Partial):
            await self.send(
                "conversation.item.input_audio_transcription.delta",
                item_id=self.item(event.utterance),
                content_index=0,
                delta=event.text,
            )
        elif isinstance(event, Final):
            if event.last and not event.transcript.text and event.utterance not in self.items:
                return  # the end of the stream with nothing said: no item
            await self.completed(self.item(event.utterance), event)
        elif isinstance(event, Failed):
            await self.send(
                "conversation.item.input_audio_transcription.failed",
                item_id=self.last_item or _id("item"),
                content_index=0,
                error={
                    "type": "server_error",
                    "code": event.error.type,
                    "message": event.error.message,
                    "param": None,
                },
            )
            await self.close(close_code(event.error), event.error.message)

    async def committed(self, item: str) -> None:
        await self.send("input_audio_buffer.committed", item_id=item, previous_item_id=self.last_item)
        self.last_item = item

    async def completed(self, item: str, final: Final) -> None:
        await self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=item,
            content_index=0,
            transcript=final.transcript.text,
            usage={"type": "duration", "seconds": round(final.end_s - final.start_s, 3)},
        )

    # -- client events --------------------------------------------------------------------------

    def configure(self, session: Session | BetaSession) -> None:
        """Apply a session update (either form, its values checked by ``parse_client_event``);
        the format and turn detection change only before the first audio."""
        if isinstance(session, BetaSession):
            rate = OPENAI_RATE
            transcription = session.input_audio_transcription
            turn_set, turn = "turn_detection" in session.model_fields_set, session.turn_detection
        else:
            audio_in = session.audio.input if session.audio else None
            fmt = audio_in.format if audio_in else None
            rate = self.rate if fmt is None else (fmt.rate or OPENAI_RATE)
            transcription = audio_in.transcription if audio_in else None
            turn_set = audio_in is not None and "turn_detection" in audio_in.model_fields_set
            turn = audio_in.turn_detection if audio_in else None
        if self.session is not None and (
            rate != self.rate or (turn_set and (turn is None) != (self.turn_detection is None))
        ):
            raise ClientError(
                "the audio format and turn detection are fixed once audio was sent",
                code="invalid_session_update",
            )
        self.rate = rate
        if transcription is not None:
            self.language, self.prompt = transcription.language, transcription.prompt
        if turn_set:
            self.turn_detection = _turn(turn)

    async def ensure_session(self) -> RealtimeSession:
        if self.session is None:
            options = SessionOptions(
                mode="2pass",
                language=self.language,
                hotwords=self.prompt,
                turn_detection=self.turn_detection is not None,
            )
            self.pcm = Pcm16Stream(self.rate)
            self.session = self.new_session(options, self.on_event)
            await self.session.start()
        return self.session

    async def commit(self, event_id: str | None) -> None:
        session = await self.ensure_session()
        if session.uncommitted_s < 0.1:
            await self.error(
                "buffer too small: at least 100 ms of audio must be appended before a commit",
                code="input_audio_buffer_commit_empty",
                event_id=event_id,
            )
            return
        item = self.item(session.utterance)
        await self.committed(item)

        async def run() -> None:
            try:
                final = await session.commit()
            except ServeError as e:
                await self.send(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=item,
                    content_index=0,
                    error={"type": "server_error", "code": e.type, "message": e.message, "param": None},
                )
                return
            await self.completed(item, final)

        task = asyncio.create_task(run())
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)

    async def on_client_event(self, data: Any) -> None:
        """One decoded JSON value from the client: a malformed one is answered with an
        ``error`` event naming the field, and the session goes on."""
        event_id = data.get("event_id") if isinstance(data, dict) else None
        try:
            event = parse_client_event(data, self.ctx.served, self.ctx.limits)
            await self.apply(event)
        except ClientError as e:
            await self.error(e.message, e.code, e.param, event_id if isinstance(event_id, str) else None)

    async def apply(self, event: ClientEvent) -> None:
        if isinstance(event, SessionUpdate | TranscriptionSessionUpdate):
            beta = isinstance(event, TranscriptionSessionUpdate)
            self.beta = self.beta or beta
            self.configure(event.session or (BetaSession() if beta else Session()))
            await self.send(f"{self.prefix()}.updated", session=self.session_body())
        elif isinstance(event, AudioAppend):
            session = await self.ensure_session()
            assert self.pcm is not None
            session.push(self.pcm.push(event.audio))
        elif isinstance(event, AudioCommit):
            await self.commit(event.event_id)
        elif isinstance(event, AudioClear):
            if self.session is not None:
                self.session.clear()
            await self.send("input_audio_buffer.cleared")

    # -- the socket -----------------------------------------------------------------------------

    async def opened(self) -> None:
        await self.send(f"{self.prefix()}.created", session=self.session_body())

    async def refused(self, error: ServeError) -> None:
        await self.error(error.message, code=error.type)

    async def on_bytes(self, data: bytes) -> None:
        await self.error(
            "send JSON events as text frames; audio goes base64 in input_audio_buffer.append",
            code="invalid_event",
        )

    async def on_text(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            await self.error("the event is not valid JSON", code="invalid_json")
            return
        await self.on_client_event(data)

    async def report(self, fault: ProtocolError | ServeError) -> None:
        # A ProtocolError is the idle timeout: the close (1008 and its reason) says it.
        if isinstance(fault, ServeError):
            await self.error(fault.message, code=fault.type)

    async def ended(self) -> None:
        for t in list(self._commits):
            t.cancel()
        if self.session is not None:
            await self.session.close()


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    beta = ws.headers.get("openai-beta", "").startswith("realtime")
    await serve_socket(ws, OpenaiConnection(ws, ws.app.state.ctx, beta))


def _turn(turn: TurnDetection | None) -> dict[str, Any] | None:
    """The turn detection a session reports: what the client set, as it set it."""
    return None if turn is None else turn.model_dump(exclude_unset=True)
