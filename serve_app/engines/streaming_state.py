"""A streaming Paraformer session's state between chunks, and what one step gives back.

What FunASR keeps in ``ParaformerStreaming``'s ``cache`` dict, typed and bounded; the engine
(``serve_app.engines.streaming_asr``) reads and updates it for many sessions at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class ChunkTrace:
    """What one model chunk of one session computed (for tests and debugging)."""

    encoder_out: np.ndarray
    """(frames, d): the encoder output over the overlap frames + the chunk's frames."""
    alphas: np.ndarray
    """(frames,): the CIF weights after FunASR's chunk masking, before the carried-over weight."""
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class StreamingStep:
    """The result of one :meth:`StreamingParaformer.step` for one session."""

    text: str
    """Text of the tokens decoded in this call (FunASR's online partial for this chunk)."""
    tokens: tuple[str, ...]
    utterance_text: str
    """All text of the current utterance so far, this call's included."""
    is_final: bool
    """This call ended the utterance; the session starts afresh with its next samples."""
    traces: tuple[ChunkTrace, ...] = ()
    """One per model chunk run in this call, when ``step(..., trace=True)``."""


def empty_samples() -> np.ndarray:
    return np.zeros(0, dtype=np.float32)


@dataclass(eq=False)
class StreamingSession:
    """One stream's state between chunks: FunASR's ``cache`` dict, typed and bounded.

    Every field is bounded: ``pending`` holds less than one model chunk after each step, the
    look-back caches are cut to ``look_back * chunk`` frames, the decoder FSMN memory to its
    kernel. Only ``text`` grows, with the utterance (it is cleared after ``is_final``).
    Dropping the object frees it; :meth:`reset` clears it for a new utterance."""

    pending: np.ndarray = field(default_factory=empty_samples)
    """Samples not yet in a model chunk (< chunk samples after a step)."""
    frontend: dict[str, Any] = field(default_factory=dict)
    """WavFrontendOnline's own cache: leftover samples, fbank and LFR splice frames."""
    position: int = 0
    """Encoder frames so far: the streaming position encoding counts from the stream start."""
    overlap: torch.Tensor | None = None
    """(chunk[0] + chunk[2], feat_dim) encoder input frames carried over to the next chunk."""
    enc_k: list[torch.Tensor | None] = field(default_factory=list)
    """Per encoder layer: (heads, <= look_back * chunk[1], d_k) self-attention keys."""
    enc_v: list[torch.Tensor | None] = field(default_factory=list)
    cif_hidden: torch.Tensor | None = None
    """(d,) CIF carry-over: the partly integrated frame."""
    cif_alpha: torch.Tensor | None = None
    """() CIF carry-over: its weight so far."""
    dec_fsmn: list[torch.Tensor | None] = field(default_factory=list)
    """Per decoder FSMN layer: (d, kernel - 1) of the last inputs."""
    dec_k: list[torch.Tensor | None] = field(default_factory=list)
    """Per decoder layer: (heads, <= look_back * chunk[1], d_k) cross-attention keys."""
    dec_v: list[torch.Tensor | None] = field(default_factory=list)
    text: str = ""
    """Text of the current utterance so far."""
    samples_seen: int = 0
    """Samples fed since the session was created (across utterances)."""

    def reset(self) -> None:
        """Forget the utterance (FunASR's ``init_cache``): the next samples start a new one."""
        self.pending = empty_samples()
        self.frontend = {}
        self.position = 0
        self.overlap = None
        self.enc_k, self.enc_v = [], []
        self.cif_hidden = self.cif_alpha = None
        self.dec_fsmn, self.dec_k, self.dec_v = [], [], []
        self.text = ""


def join_text(a: str, b: str) -> str:
    """Concatenate texts of consecutive steps, with a space only between two Latin words."""
    a, b = a.rstrip(), b.strip()
    if a and b and a[-1].isascii() and a[-1].isalnum() and b[0].isascii() and b[0].isalnum():
        return f"{a} {b}"
    return a + b


@dataclass
class ChunkWork:
    """One model chunk of one session in a forward pass."""

    session: StreamingSession
    samples: np.ndarray
    is_final: bool
    x: torch.Tensor | None = None  # encoder input frames (overlap + chunk)
