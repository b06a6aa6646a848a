"""FunASR CT-Transformer punctuation restoration."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from serve_app.engines.funasr_loader import load_automodel


class CtPunctuation:
    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        self._model = load_automodel(model_dir, device="cpu", threads=threads)
        self._lock = threading.Lock()

    def process(self, texts: Sequence[str]) -> list[str]:
        out = []
        for text in texts:
            if not text.strip():
                out.append(text)
                continue
            with self._lock, torch.no_grad():
                res = self._model.generate(input=text, disable_pbar=True)
            # Class 0 of CT-Transformer's punc_list is "<unk>"; FunASR inserts whatever class
            # wins, so a poorly trained model can write "<unk>" into the text.
            out.append(str(res[0].get("text", text)).replace("<unk>", "") if res else text)
        return out
