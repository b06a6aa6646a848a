"""OpenAI Realtime client events as typed models: a union discriminated by ``type``
(``session.update``, ``transcription_session.update``, ``input_audio_buffer.append`` /
``commit`` / ``clear``). ``parse_client_event`` turns whatever arrived into one of them, or into
a ``ClientError`` whose ``param`` names the field that is wrong (``session``,
``session.audio.input.format.rate``, ``audio``, ...), which the connection answers with an
``error`` event; the session stays usable.

Unknown keys are ignored (OpenAI adds fields over time: ``include``, ``noise_reduction``, ...);
a field of the wrong type is an error, never a crash. Values are checked here too: formats and
rates this server takes, and, given the served model and the limits, the language (the same
check as the HTTP form's, ``serve_app.api.protocol.served_language``) and the prompt's length.
What depends on the session's state (a format fixed once audio was sent) is the connection's
(``serve_app.api.realtime.openai``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from serve_app.api.protocol import MAX_LANGUAGE_CHARS, check_prompt, served_language
from serve_app.config import LimitsArgs
from serve_app.contracts import ServedModel
from serve_app.realtime.audio import SUPPORTED_RATES

OPENAI_RATE = 24000
"""The rate OpenAI's clients send (``pcm16``, ``audio/pcm`` without a ``rate``)."""
TURN_DETECTORS = ("server_vad", "semantic_vad")


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
    """``None``: 24 kHz."""

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: int | None) -> int | None:
        if v is not None and v not in SUPPORTED_RATES:
            raise ValueError(f"rate {v} is not supported; use {OPENAI_RATE}")
        return v

    @model_validator(mode="after")
    def _pcm(self) -> AudioFormat:
        if self.type != "audio/pcm":
            raise ValueError(f"audio format {self.type!r} is not supported; use audio/pcm")
        return self


class Transcription(_Object):
    model: str | None = None
    """Accepted; the served model transcribes whatever is named."""
    language: str | None = Field(None, max_length=MAX_LANGUAGE_CHARS)
    """One the served model transcribes, as the HTTP form takes it (``"EN"`` is ``"en"``)."""
    prompt: str | None = None
    """Hotwords, at most ``limits.max_prompt_chars`` characters."""

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None, info: ValidationInfo) -> str | None:
        served: ServedModel | None = (info.context or {}).get("served")
        return served_language(v, served)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | None, info: ValidationInfo) -> str | None:
        limits: LimitsArgs | None = (info.context or {}).get("limits")
        check_prompt(v, limits)
        return v or None


class TurnDetection(BaseModel):
    """``server_vad`` / ``semantic_vad`` and their knobs (echoed back as sent)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str | None = Field(None, validate_default=True)

    @field_validator("type")
    @classmethod
    def _type(cls, v: str | None) -> str | None:
        if v not in TURN_DETECTORS:
            raise ValueError(f"turn_detection type {v!r} is not supported; use {' or '.join(TURN_DETECTORS)}")
        return v


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

    @field_validator("type")
    @classmethod
    def _transcription(cls, v: str) -> str:
        if v != "transcription":
            raise ValueError(f"this server serves transcription sessions; {v!r} is not 'transcription'")
        return v


class BetaSession(_Object):
    """Beta ``session`` of a ``transcription_session.update``."""

    input_audio_format: str | None = None
    """``pcm16`` (24 kHz), the only one taken; ``None``: unchanged."""
    input_audio_transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None
    """Absent: unchanged; ``null``: turns only on commit."""

    @field_validator("input_audio_format")
    @classmethod
    def _pcm16(cls, v: str | None) -> str | None:
        if v not in (None, "pcm16"):
            raise ValueError(f"{v!r} is not supported; use 'pcm16' (24 kHz)")
        return v


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
KINDS: tuple[str, ...] = tuple(
    get_args(event.model_fields["type"].annotation)[0] for event in get_args(get_args(ClientEvent)[0])
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


def parse_client_event(
    data: Any, served: ServedModel | None = None, limits: LimitsArgs | None = None
) -> ClientEvent:
    """The typed event in ``data`` (a decoded JSON value), or ``ClientError`` naming the field;
    the language and the prompt are checked against ``served`` and ``limits`` when given."""
    if not isinstance(data, dict):
        raise ClientError(
            f"an event is a JSON object, not {type(data).__name__}", code="invalid_event", param=None
        )
    kind = data.get("type")
    if kind not in KINDS:
        raise ClientError(f"unknown or unsupported event type {kind!r}", code="invalid_event", param="type")
    try:
        return _EVENTS.validate_python(data, context={"served": served, "limits": limits})
    except ValidationError as e:
        err = e.errors(include_url=False, include_context=False)[0]
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] == kind:  # the union's tag comes first
            loc = loc[1:]
        param = ".".join(loc) or None
        message = PLAIN.get(err["type"]) or str(err["msg"]).removeprefix("Value error, ")
        raise ClientError(f"{param}: {message}" if param else message, param=param) from None
