"""Whisper via faster-whisper (CTranslate2): the embedded offline default.

It exists because no FunASR ASR weights can be shipped with the project; the FunASR engine
is the production path. CTranslate2 has no batched decode for independent clips in
faster-whisper's API, so a batch is transcribed clip by clip under one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from serve_app.contracts import AsrOptions, AsrResult, Word


class WhisperAsr:
    supports_hotwords = True  # the prompt becomes Whisper's initial prompt
    supports_words = True

    def __init__(
        self,
        model_dir: Path,
        device: str = "cpu",
        threads: int = 2,
        compute_type: str = "int8",
        beam_size: int = 1,
        language: str | None = "en",
    ) -> None:
        from faster_whisper import WhisperModel

        self.name = f"whisper:{model_dir.name}"
        self.language = language
        self.beam_size = beam_size
        self._model = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads, num_workers=1
        )
        self._lock = threading.Lock()

    def _one(self, audio: np.ndarray, o: AsrOptions) -> AsrResult:
        segments, _ = self._model.transcribe(
            audio,
            language=o.language or self.language,
            beam_size=self.beam_size,
            temperature=0.0,
            initial_prompt=o.hotwords or None,
            word_timestamps=o.word_timestamps,
            without_timestamps=not o.word_timestamps,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        texts, words = [], []
        for s in segments:
            texts.append(s.text.strip())
            words += [Word(start_s=w.start, end_s=w.end, word=w.word.strip()) for w in (s.words or [])]
        return AsrResult(text=" ".join(t for t in texts if t), words=words)

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], options: Sequence[AsrOptions]
    ) -> list[AsrResult]:
        with self._lock:
            return [self._one(a, o) for a, o in zip(audios, options, strict=True)]
