"""FunASR ASR models (Paraformer, SeACo-Paraformer, SenseVoice, ...) with our own batching.

We call the model's ``inference`` with our batch instead of ``AutoModel.generate``: generate is
not thread-safe, and returns a single ``{'text': ''}`` for a batch in which no input yields a
token, so its results cannot be matched back to requests.

Batched == one at a time. Paraformer's ``CifPredictorV2`` runs a convolution over the encoder
output that looks one frame ahead; in a padded batch the frame after a short input's end is a
padded frame whose encoder output is not zero, so the short input's last token can appear or
vanish depending on what it was batched with. We zero the padded encoder frames before the
predictor sees them (the decoder masks them anyway), which makes batched output equal to
one-at-a-time output. See ``tests/unit/test_funasr_asr.py``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serve_app.contracts import AsrOptions, AsrResult, Word
from serve_app.engines.batching import length_buckets
from serve_app.engines.funasr_loader import load_automodel
from serve_app.errors import InternalError

HOTWORD_MODELS = {"SeacoParaformer", "ContextualParaformer"}
_TAG = re.compile(r"<\|[^|]*\|>")  # SenseVoice's <|zh|><|NEUTRAL|>... tags


def zero_padded_frames(encode: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a model's ``encode`` so encoder frames past each input's length are zero."""
    from funasr.models.transformer.utils.nets_utils import make_pad_mask

    def encode_masked(speech: torch.Tensor, speech_lengths: torch.Tensor, **kwargs: Any) -> Any:
        out, lens = encode(speech, speech_lengths, **kwargs)[:2]
        if isinstance(out, torch.Tensor) and out.dim() == 3 and out.size(0) > 1:
            mask = ~make_pad_mask(lens, maxlen=out.size(1))
            out = out * mask[:, :, None].to(out.dtype)
        return out, lens

    return encode_masked


def _is_latin(token: str) -> bool:
    return token.isascii() and any(c.isalnum() for c in token)


def join_tokens(tokens: list[str]) -> str:
    """FunASR's text rule: a space only between two Latin words, none around CJK characters."""
    out = ""
    for i, t in enumerate(tokens):
        out += (" " if i and _is_latin(t) and _is_latin(tokens[i - 1]) else "") + t
    return out


def _text_and_words(text: str, stamps: list[list[float]] | None, words: bool) -> tuple[str, list[Word]]:
    """With timestamps FunASR returns one space-separated token per stamp; without, joined
    text. Return the joined text either way, and the tokens as words when they line up."""
    if not words or not stamps:
        return text, []
    tokens = text.split()
    if len(tokens) != len(stamps):
        return join_tokens(tokens), []
    return join_tokens(tokens), [
        Word(start_s=b / 1000, end_s=e / 1000, word=t) for t, (b, e) in zip(tokens, stamps, strict=True)
    ]


class FunasrAsr:
    """An ``AsrEngine`` over a FunASR model directory."""

    supports_words = True

    def __init__(
        self,
        model_dir: Path,
        device: str = "cpu",
        threads: int = 2,
        fix_padding: bool = True,
        min_fill: float = 0.9,
        workers: int = 1,
    ) -> None:
        self.min_fill = min_fill
        self.parallelism = workers
        """How many ``transcribe_batch`` calls may run at once (each a forward pass)."""
        self.threads = max(1, threads // workers)
        self._am = load_automodel(model_dir, device=device, threads=self.threads)
        self.model = self._am.model
        self.name = type(self.model).__name__
        self.supports_hotwords = self.name in HOTWORD_MODELS
        if fix_padding:
            self.model.encode = zero_padded_frames(self.model.encode)
        self._kwargs = {k: v for k, v in self._am.kwargs.items() if k not in {"model", "input", "key"}}
        # The model's inference keeps no state between calls (checked in
        # tests/unit/test_funasr_asr.py); bound the passes in flight to the workers.
        self._slots = threading.BoundedSemaphore(workers)

    def _infer(self, audios: list[np.ndarray], words: bool, hotwords: str | None) -> list[AsrResult]:
        keys = [f"seg{i}" for i in range(len(audios))]
        extra: dict[str, Any] = {"pred_timestamp": words, "output_timestamp": words}
        if hotwords and self.supports_hotwords:
            extra["hotword"] = hotwords
        with self._slots, torch.no_grad():
            # Any AutoModel.generate in this process (the VAD's, punctuation's) resets torch's
            # process-wide thread count to its own ncpu; take ours back. (Per process: every
            # worker of this engine uses the same count.)
            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
            raw = self.model.inference(data_in=audios, key=keys, **self._kwargs, **extra)
        results = raw[0] if isinstance(raw, tuple) else raw
        if not results:
            # FunASR returns [] when no input in the batch produced a single token.
            return [AsrResult(text="") for _ in audios]
        by_key = {r["key"]: r for r in results}
        if len(results) != len(audios) or set(by_key) != set(keys):
            raise InternalError(f"{self.name} returned {len(results)} results for a batch of {len(audios)}")
        out = []
        for k in keys:
            text, ws = _text_and_words(
                _TAG.sub("", str(by_key[k].get("text", ""))).strip(), by_key[k].get("timestamp"), words
            )
            out.append(AsrResult(text=text, words=ws))
        return out

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], options: Sequence[AsrOptions]
    ) -> list[AsrResult]:
        results: dict[int, AsrResult] = {}

        # Options that change how the model runs split the batch; everything else shares it.
        def group_key(i: int) -> tuple[str, bool]:
            return (options[i].hotwords or "") if self.supports_hotwords else "", options[i].word_timestamps

        order = sorted(range(len(audios)), key=group_key)
        for (hotwords, words), members in groupby(order, key=group_key):
            group = list(members)
            for bucket in length_buckets([len(audios[i]) for i in group], self.min_fill):
                idx = [group[j] for j in bucket]
                for i, r in zip(
                    idx, self._infer([audios[i] for i in idx], words, hotwords or None), strict=True
                ):
                    results[i] = r
        # The groups and buckets partition the batch: every index has its result.
        return [results[i] for i in range(len(audios))]
