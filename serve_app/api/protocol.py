"""Typed request models of the HTTP API.

``TranscriptionOptions`` is the OpenAI transcription form without the file: the
``/v1/audio/transcriptions`` route reads it from multipart, batch jobs take the same fields.
What the served model can do is checked here, from the validation context
(``ServedModel`` + ``LimitsArgs``), so a request is refused with a 400 that names what is
allowed instead of being silently ignored."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from starlette.datastructures import FormData

from serve_app.config import LimitsArgs
from serve_app.contracts import AsrOptions, PostOptions, Priority, ServedModel, TranscribeOptions
from serve_app.errors import InvalidRequest, ModelNotFound
from serve_app.formats import ResponseFormat

MAX_MODEL_CHARS = 256
MAX_LANGUAGE_CHARS = 16


class TranscriptionOptions(BaseModel):
    """The OpenAI transcription fields (``file`` aside) plus ``punctuation`` and ``itn``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str | None = Field(None, max_length=MAX_MODEL_CHARS)
    """A served model name; default: the first served name."""
    language: str | None = Field(None, max_length=MAX_LANGUAGE_CHARS)
    """ISO-639-1 code the served model supports; default: the model's configured language."""
    prompt: str | None = None
    """Hotwords (SeACo-Paraformer) or Whisper's initial prompt; at most
    ``limits.max_prompt_chars`` characters."""
    response_format: ResponseFormat = "json"
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    """Accepted for compatibility; decoding is greedy (temperature 0) whatever is sent."""
    stream: bool = False
    punctuation: bool | None = None
    itn: bool | None = None

    @field_validator("model")
    @classmethod
    def _served(cls, v: str | None, info: ValidationInfo) -> str | None:
        served = _served(info)
        if v and served and v not in served.names:
            # Not a ValueError: it passes through pydantic as our own 404.
            raise ModelNotFound(f"model {v!r} is not served here; available: {', '.join(served.names)}")
        return v or None

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None, info: ValidationInfo) -> str | None:
        return served_language(v, _served(info))

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | None, info: ValidationInfo) -> str | None:
        check_prompt(v, _limits(info))
        return v or None

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, v: bool) -> bool:
        if v:
            raise ValueError("streamed transcription is not offered here; use the realtime WebSocket")
        return v

    @property
    def words(self) -> bool:
        return "word" in self.timestamp_granularities

    def pipeline_options(self, priority: Priority = Priority.INTERACTIVE) -> TranscribeOptions:
        return TranscribeOptions(
            asr=AsrOptions(language=self.language, hotwords=self.prompt, word_timestamps=self.words),
            post=PostOptions(punctuation=self.punctuation, itn=self.itn),
            priority=priority,
        )

    @classmethod
    def parse(cls, fields: dict[str, Any], served: ServedModel, limits: LimitsArgs) -> TranscriptionOptions:
        """Validate against what is served; every problem is one 400 that names the fields."""
        try:
            opts = cls.model_validate(fields, context={"served": served, "limits": limits})
        except ValidationError as e:
            raise InvalidRequest(describe(e)) from None
        if opts.words and opts.response_format != "verbose_json":
            raise InvalidRequest("timestamp_granularities[]=word needs response_format=verbose_json")
        return opts

    @classmethod
    def from_form(cls, form: FormData, served: ServedModel, limits: LimitsArgs) -> TranscriptionOptions:
        """The fields of a multipart form (strings; repeated ``timestamp_granularities[]``)."""
        fields: dict[str, Any] = {}
        for name in cls.model_fields:
            if name == "timestamp_granularities":
                values = form.getlist("timestamp_granularities[]") + form.getlist(name)
                if values:
                    fields[name] = [_text(v, name) for v in values]
            elif (value := form.get(name)) not in (None, ""):
                fields[name] = _text(value, name)
        return cls.parse(fields, served, limits)


def served_language(value: str | None, served: ServedModel | None) -> str | None:
    """A request's ``language`` as the model names it (``"EN "`` is ``"en"``), ``None`` for
    none; a ``ValueError`` that lists the allowed ones when the served model does not transcribe
    it. Every surface that takes a language (the HTTP form, jobs, realtime) checks it here."""
    if not value:
        return None
    code = value.strip().lower()
    if served and code not in served.languages:
        allowed = ", ".join(served.languages)
        raise ValueError(f"{value!r} is not a language this model transcribes; allowed: {allowed}")
    return code


def check_prompt(value: str | None, limits: LimitsArgs | None) -> None:
    """A ``ValueError`` when a prompt (hotwords) is longer than ``limits.max_prompt_chars``."""
    if value and limits and len(value) > limits.max_prompt_chars:
        raise ValueError(f"at most {limits.max_prompt_chars} characters; got {len(value)}")


def _served(info: ValidationInfo) -> ServedModel | None:
    served: ServedModel | None = (info.context or {}).get("served")
    return served


def _limits(info: ValidationInfo) -> LimitsArgs | None:
    limits: LimitsArgs | None = (info.context or {}).get("limits")
    return limits


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a text field, not a file")
    return value


def describe(e: ValidationError) -> str:
    """``field: what is wrong`` for each error, without pydantic's URLs."""
    parts = []
    for err in e.errors(include_url=False, include_context=False):
        loc = ".".join(str(p) for p in err["loc"]) or "request"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


class FunasrConfig(BaseModel):
    """The first text message of FunASR's WebSocket protocol (``runtime/docs/websocket_protocol.md``
    and ``runtime/python/websocket/funasr_wss_client.py``). Unknown keys are ignored, as FunASR's
    own servers do."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    mode: Literal["online", "offline", "2pass"] = "2pass"
    chunk_size: list[int] = Field(default_factory=lambda: [5, 10, 5], min_length=3, max_length=3)
    """Accepted; the server streams at its own configured chunk (sessions batch at one size)."""
    chunk_interval: int = Field(10, ge=1, le=100)
    encoder_chunk_look_back: int = Field(4, ge=-1, le=100)
    decoder_chunk_look_back: int = Field(0, ge=-1, le=100)
    audio_fs: int = 16000
    wav_name: str = Field("demo", max_length=256)
    wav_format: str = Field("pcm", max_length=16)
    is_speaking: bool = True
    hotwords: str = ""
    itn: bool = True

    @field_validator("audio_fs")
    @classmethod
    def _rate(cls, v: int) -> int:
        from serve_app.realtime.audio import SUPPORTED_RATES

        if v not in SUPPORTED_RATES:
            raise ValueError(f"{v} Hz is not supported; send one of {', '.join(map(str, SUPPORTED_RATES))}")
        return v

    @field_validator("hotwords")
    @classmethod
    def _hotwords(cls, v: str, info: ValidationInfo) -> str:
        check_prompt(v, _limits(info))
        return v

    @property
    def pcm(self) -> bool:
        return self.wav_format.lower() in {"pcm", "raw", "s16le"}

    def hotword_list(self) -> str | None:
        """FunASR clients send ``{"word": weight, ...}`` as JSON, or words separated by commas;
        the models take words separated by spaces."""
        import json

        text = self.hotwords.strip()
        if not text:
            return None
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        words = list(parsed) if isinstance(parsed, dict) else text.replace(",", " ").split()
        return " ".join(str(w).strip() for w in words if str(w).strip()) or None

    @classmethod
    def parse(cls, data: dict[str, Any], limits: LimitsArgs) -> FunasrConfig:
        try:
            return cls.model_validate(data, context={"limits": limits})
        except ValidationError as e:
            raise InvalidRequest(describe(e)) from None
