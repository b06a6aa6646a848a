"""What a live session emits, whatever the protocol: the adapters under ``serve_app.api.realtime``
turn these into their own wire events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from serve_app.contracts import Transcript
from serve_app.errors import ServeError


@dataclass(frozen=True)
class Partial:
    text: str
    """New text only: the client appends it to the utterance's partial text."""
    utterance: int


@dataclass(frozen=True)
class SpeechStarted:
    time_s: float
    utterance: int


@dataclass(frozen=True)
class SpeechStopped:
    time_s: float
    utterance: int


@dataclass(frozen=True)
class Final:
    transcript: Transcript
    start_s: float
    end_s: float
    utterance: int
    last: bool = False
    """The final answer to ``finish()``: nothing follows it."""


@dataclass(frozen=True)
class Failed:
    error: ServeError


Event = Partial | SpeechStarted | SpeechStopped | Final | Failed
Emit = Callable[[Event], Awaitable[None]]
