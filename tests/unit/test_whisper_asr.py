"""Whisper engine: both ways of running a batch give a clip the same output whatever else is in
its batch; prompts and word timestamps work in mixed batches; parallel workers run at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve_app.contracts import AsrOptions, AsrResult
from serve_app.engines.whisper_asr import WhisperAsr
from serve_app.model_paths import resolve
from tools.audio import read_wav


@pytest.fixture(scope="module")
def clips(say: Callable[[str], np.ndarray], beckett_wav: Path) -> list[np.ndarray]:
    beckett, _ = read_wav(beckett_wav.read_bytes())
    return [beckett, np.asarray(say("Please call me back tomorrow morning.")), beckett[: 3 * 16000]]


@pytest.fixture(scope="module")
def batched() -> WhisperAsr:
    return WhisperAsr(resolve("embedded:whisper-tiny.en"), threads=2, mode="batched")


@pytest.fixture(scope="module")
def parallel() -> WhisperAsr:
    return WhisperAsr(resolve("embedded:whisper-tiny.en"), threads=2, mode="parallel")


def key(r: AsrResult) -> tuple[str, list[tuple[str, float, float]]]:
    return r.text, [(w.word, round(w.start_s, 2), round(w.end_s, 2)) for w in r.words]


MIXED = [AsrOptions(word_timestamps=True), AsrOptions(word_timestamps=True), AsrOptions(hotwords="Beckett")]


@pytest.mark.parametrize("mode", ["batched", "parallel"])
def test_a_clip_does_not_depend_on_its_batch(
    mode: str, batched: WhisperAsr, parallel: WhisperAsr, clips: list[np.ndarray]
) -> None:
    engine = batched if mode == "batched" else parallel
    together = [key(r) for r in engine.transcribe_batch(clips, MIXED)]
    alone = [key(engine.transcribe_batch([c], [o])[0]) for c, o in zip(clips, MIXED, strict=True)]
    reversed_ = [key(r) for r in engine.transcribe_batch(clips[::-1], MIXED[::-1])][::-1]
    assert together == alone == reversed_
    assert "fail better" in together[0][0].lower(), together[0]
    assert together[0][1] and together[1][1] and not together[2][1], "words only where asked"
    starts = [s for _, s, _ in together[0][1]]
    assert starts == sorted(starts) and starts[-1] < 10.5


def test_control_faster_whispers_own_batched_alignment_leaks_between_clips(
    batched: WhisperAsr, clips: list[np.ndarray]
) -> None:
    """Shows the test above can fail: faster-whisper's BatchedInferencePipeline aligns a batch's
    words in one pass that carries the previous clip's last word time into the next clip, so a
    clip's word times change with what precedes it. The engine aligns clip by clip instead."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    m, pipe = batched._model, batched._pipeline
    tok = Tokenizer(m.hf_tokenizer, False, task="transcribe", language="en")
    opts = TranscriptionOptions(
        beam_size=1, best_of=5, patience=1.0, length_penalty=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
        log_prob_threshold=-1.0, no_speech_threshold=0.6, compression_ratio_threshold=2.4, temperatures=[0.0],
        initial_prompt=None, prefix=None, suppress_blank=True, suppress_tokens=get_suppressed_tokens(tok, [-1]),
        prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、", max_new_tokens=None,
        hotwords=None, word_timestamps=True, hallucination_silence_threshold=None, condition_on_previous_text=False,
        clip_timestamps=[], prompt_reset_on_temperature=0.5, multilingual=False, without_timestamps=False,
        max_initial_timestamp=0.0,
    )  # fmt: skip

    def words_of_last(batch: list[np.ndarray]) -> list[tuple[str, float]]:
        feats = np.stack([pad_or_trim(m.feature_extractor(a)[..., :-1]) for a in batch])
        meta = [{"offset": 0.0, "duration": len(a) / 16000, "segments": []} for a in batch]
        pipe.last_speech_timestamp = 0.0
        out = pipe.forward(feats, tok, meta, opts)
        return [(w["word"], w["start"]) for s in out[-1] for w in s["words"]]

    # The short clip after silence-led speech vs after a clip whose last word ends late.
    short = np.concatenate([np.zeros(32000, np.float32), clips[1]])
    assert words_of_last([short]) != words_of_last([clips[0], short])


class _Timed:
    """CTranslate2's Whisper model with, per calling thread, the wall-clock interval from its
    first model call (``encode`` / ``generate``: C++ with the GIL released) to the end of its
    last: where a worker's clip is decoded."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.spans: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _timed(self, method: str, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return getattr(self._model, method)(*args, **kwargs)
        finally:
            me = threading.get_ident()
            with self._lock:
                first, _ = self.spans.get(me, (t, t))
                self.spans[me] = (first, time.perf_counter())

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("encode", *args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("generate", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def test_parallel_workers_run_clips_at_once(parallel: WhisperAsr, clips: list[np.ndarray]) -> None:
    opts = [AsrOptions()]
    expected = parallel.transcribe_batch([clips[0]], opts)[0].text
    timed = _Timed(parallel._model.model)
    parallel._model.model = timed
    try:
        results: list[list[AsrResult]] = []
        start = threading.Barrier(2)

        def call() -> None:
            start.wait()
            results.append(parallel.transcribe_batch([clips[0]], opts))

        threads = [threading.Thread(target=call) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        parallel._model.model = timed._model
    assert [r[0].text for r in results] == [expected] * 2
    # Each worker encodes and decodes its clip; the two spans overlap when the calls really run
    # at once (one worker, or a semaphore of one, would run them back to back, so they would
    # not overlap at all). How much they overlap depends on the box's load.
    (a0, a1), (b0, b1) = sorted(timed.spans.values())
    overlap = min(a1, b1) - max(a0, b0)
    print(f"model spans {a1 - a0:.2f} s and {b1 - b0:.2f} s, overlapping {overlap:.2f} s")
    assert overlap > 0, timed.spans
