"""OpenAI Realtime client events as typed models: a union discriminated by ``type``
(``session.update``, ``transcription_session.update``, ``input_audio_buffer.append`` /
``commit`` / ``clear``). ``parse_client_event`` turns whatever arrived into one of them, or into
a ``ClientError`` whose ``param`` names the field that is wrong (``session``,
``session.audio.input.format.rate``, ``audio``, ...), which the connection answers with an
``error`` event; the session stays usable.

Unknown keys are ignored (OpenAI adds fields over time: ``include``, ``noise_reduction``, ...);
a field of the wrong type is an error, never a crash. What needs the served model (languages,
prompt length, rates) is checked by the connection, which knows it
(``serve_app.api.realtime.openai``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, TypeAdapter, ValidationError


class ClientError(Exception):
    """A client event that cannot be applied: answered with an ``error`` event."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


class _Object(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AudioFormat(_Object):
    """GA ``audio.input.format``: ``{"type": "audio/pcm", "rate": 24000}``."""

    type: str | None = None
    rate: int | None = None


class Transcription(_Object):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class TurnDetection(BaseModel):
    """``server_vad`` / ``semantic_vad`` and their knobs (echoed back as sent)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str | None = None


class AudioInput(_Object):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None
    """Absent (not in ``model_fields_set``): unchanged; ``null``: turns only on commit."""


class Audio(_Object):
    input: AudioInput | None = None


class Session(_Object):
    """GA ``session`` of a ``session.update``."""

    type: str = "transcription"
    audio: Audio | None = None


class BetaSession(_Object):
    """Beta ``session`` of a ``transcription_session.update``."""

    input_audio_format: str | None = None
    input_audio_transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None
    """Absent: unchanged; ``null``: turns only on commit."""


class _Event(_Object):
    event_id: str | None = None


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: Session | None = None


class TranscriptionSessionUpdate(_Event):
    type: Literal["transcription_session.update"]
    session: BetaSession | None = None


def _base64(value: Any) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise ValueError("must be a string of base64-encoded PCM16")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64-encoded PCM16") from None


class AudioAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: Annotated[bytes, BeforeValidator(_base64)] = b""
    """The PCM16 bytes (decoded from the event's base64 string)."""


class AudioCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(_Event):
    type: Literal["input_audio_buffer.clear"]


ClientEvent = Annotated[
    SessionUpdate | TranscriptionSessionUpdate | AudioAppend | AudioCommit | AudioClear,
    Discriminator("type"),
]
_EVENTS: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
KINDS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)
"""The ``type`` of every event above."""

PLAIN = {
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "string_type": "must be a string",
}
"""Pydantic's messages for a wrong type, in the wire's words (it names its own classes)."""


def parse_client_event(data: Any) -> ClientEvent:
    """The typed event in ``data`` (a decoded JSON value), or ``ClientError`` naming the field."""
    if not isinstance(data, dict):
        raise ClientError(
            f"an event is a JSON object, not {type(data).__name__}", code="invalid_event", param=None
        )
    kind = data.get("type")
    if kind not in KINDS:
        raise ClientError(f"unknown or unsupported event type {kind!r}", code="invalid_event", param="type")
    try:
        return _EVENTS.validate_python(data)
    except ValidationError as e:
        err = e.errors(include_url=False, include_context=False)[0]
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == kind:  # the union's tag comes first
            loc = loc[1:]
        param = ".".join(loc) or None
        message = PLAIN.get(err["type"]) or str(err["msg"]).removeprefix("Value error, ")
        raise ClientError(f"{param}: {message}" if param else message, param=param) from None
