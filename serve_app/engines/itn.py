"""Inverse text normalisation with wetext's FSTs (``二零二五年`` → ``2025年``,
"twenty three dollars" → ``$23``). FunASR itself has no general ITN."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Literal

# The English grammar tokenises punctuation and leaves "word ." behind.
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:%])")


class WetextItn:
    def __init__(self, language: Literal["zh", "en"]) -> None:
        from wetext import Normalizer

        self.language = language
        self._normalizer = Normalizer(lang=language, operator="itn")
        self._lock = threading.Lock()

    def _one(self, text: str) -> str:
        if not text.strip():
            return text
        with self._lock:
            out = str(self._normalizer.normalize(text))
        return _SPACE_BEFORE_PUNCT.sub(r"\1", out) if self.language == "en" else out

    def process(self, texts: Sequence[str]) -> list[str]:
        return [self._one(t) for t in texts]
