"""Whisper via faster-whisper (CTranslate2): the embedded offline default.

It exists because no FunASR ASR weights can be shipped with the project; the FunASR engine
is the production path. A batch runs the way its device rewards (``WhisperArgs.mode``):

* ``parallel`` (CPU): CTranslate2 runs ``workers`` clips at once (default: one thread each). Every clip
  is padded to Whisper's 30 s window, so a batched ``generate`` buys nothing on a CPU, while a
  two-thread forward pass stalls whenever one of its threads is descheduled; independent
  single-thread workers do not. The ASR deployment calls ``transcribe_batch`` from up to
  ``parallelism`` threads at once.
* ``batched`` (GPU): one encoder pass and one ``generate`` over the whole batch, built from
  faster-whisper's own ``BatchedInferencePipeline`` pieces (features, prompt, options).

Either way a clip's output does not depend on the rest of its batch: word timestamps are
aligned clip by clip (faster-whisper's batched alignment carries the previous clip's last
word time into the next clip's word boundaries).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

import numpy as np

from serve_app.contracts import AsrOptions, AsrResult, Word

WhisperMode = Literal["parallel", "batched"]

# faster-whisper's own defaults for a single window (WhisperModel.transcribe).
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


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
        mode: WhisperMode = "parallel",
        workers: int | None = None,
    ) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        # faster-whisper logs a line per clip at INFO: noise in a server's replica log.
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        self.name = f"whisper:{model_dir.name}"
        self.language = language
        self.beam_size = beam_size
        self.mode = mode
        if mode == "parallel":
            workers = workers or threads
            per_worker = max(1, threads // workers)
        else:
            workers, per_worker = 1, threads
        self.parallelism = workers
        """How many ``transcribe_batch`` calls may run at once."""
        self._model = WhisperModel(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=per_worker,
            num_workers=workers,
        )
        self._pipeline = BatchedInferencePipeline(self._model)
        self._sem = threading.BoundedSemaphore(workers)

    def transcribe_batch(
        self, audios: Sequence[np.ndarray], options: Sequence[AsrOptions]
    ) -> list[AsrResult]:
        with self._sem:  # never more calls in flight than CTranslate2 has workers
            if self.mode == "parallel":
                return [self._one(a, o) for a, o in zip(audios, options, strict=True)]
            return self._batched(audios, options)

    # --- parallel: faster-whisper's transcribe, one clip per call ----------------------------

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

    # --- batched: one generate per group of clips that share their options -------------------

    def _batched(self, audios: Sequence[np.ndarray], options: Sequence[AsrOptions]) -> list[AsrResult]:
        results: dict[int, AsrResult] = {}

        # The prompt (hotwords, timestamps or not) and language are one per generate call.
        def key(i: int) -> tuple[str, bool, str]:
            o = options[i]
            return o.hotwords or "", o.word_timestamps, o.language or self.language or "en"

        for (hotwords, words, language), members in groupby(sorted(range(len(audios)), key=key), key=key):
            idx = list(members)
            for i, r in zip(
                idx, self._generate([audios[i] for i in idx], hotwords, words, language), strict=True
            ):
                results[i] = r
        return [results[i] for i in range(len(audios))]

    def _generate(
        self, audios: list[np.ndarray], hotwords: str, words: bool, language: str
    ) -> list[AsrResult]:
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        m = self._model
        tokenizer = Tokenizer(
            m.hf_tokenizer,
            m.model.is_multilingual,
            task="transcribe",
            language=language if m.model.is_multilingual else "en",
        )
        opts = TranscriptionOptions(
            beam_size=self.beam_size,
            best_of=5,
            patience=1.0,
            length_penalty=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            log_prob_threshold=LOG_PROB_THRESHOLD,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            compression_ratio_threshold=2.4,
            temperatures=[0.0],
            initial_prompt=hotwords or None,
            prefix=None,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            prepend_punctuations=PREPEND_PUNCTUATIONS,
            append_punctuations=APPEND_PUNCTUATIONS,
            max_new_tokens=None,
            hotwords=None,
            word_timestamps=False,  # aligned per clip below
            hallucination_silence_threshold=None,
            condition_on_previous_text=False,
            clip_timestamps=[],
            prompt_reset_on_temperature=0.5,
            multilingual=False,
            without_timestamps=not words,
            max_initial_timestamp=0.0,
        )
        features = np.stack([pad_or_trim(m.feature_extractor(a)[..., :-1]) for a in audios])
        encoder_output, outputs = self._pipeline.generate_segment_batched(features, tokenizer, opts)
        out = []
        for i, (audio, o) in enumerate(zip(audios, outputs, strict=True)):
            if o["no_speech_prob"] > NO_SPEECH_THRESHOLD and o["avg_logprob"] < LOG_PROB_THRESHOLD:
                out.append(AsrResult(text=""))
                continue
            duration = len(audio) / 16000
            size = int(np.ceil(duration) * m.frames_per_second)
            subsegments, _, _ = m._split_segments_by_timestamps(
                tokenizer=tokenizer,
                tokens=o["tokens"],
                time_offset=0.0,
                segment_size=size,
                segment_duration=duration,
                seek=0,
            )
            segs: list[dict[str, Any]] = [
                {**s, "text": tokenizer.decode(s["tokens"]), "seek": 0} for s in subsegments
            ]
            ws: list[Word] = []
            if words and segs:
                m.add_word_timestamps(
                    [segs],
                    tokenizer,
                    _take(encoder_output, i),
                    [size],
                    PREPEND_PUNCTUATIONS,
                    APPEND_PUNCTUATIONS,
                    0.0,
                )
                ws = [
                    Word(float(w["start"]), float(w["end"]), w["word"].strip())
                    for s in segs
                    for w in s.get("words", [])
                ]
            text = " ".join(t for t in (s["text"].strip() for s in segs) if t)
            out.append(AsrResult(text=text, words=ws))
        return out


def _take(encoder_output: Any, i: int) -> Any:
    """Row ``i`` of a CTranslate2 encoder output, as a batch of one on the same device."""
    import ctranslate2

    on_cpu = encoder_output.device == "cpu"
    host = encoder_output if on_cpu else encoder_output.to_device(ctranslate2.Device.cpu)
    row = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(host)[i : i + 1]))
    return row if on_cpu else row.to_device(ctranslate2.Device.cuda, encoder_output.device_index)
