"""FunASR engine on a random-weight Paraformer of the real architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from serve_app.contracts import AsrEngine, AsrOptions
from serve_app.engines.funasr_asr import FunasrAsr


def mixed_lengths(seed: int, n: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal(int(16000 * s)) * rng.uniform(0.01, 0.5)).astype(np.float32)
        for s in rng.uniform(0.5, 8, size=n)
    ]


# min_fill=0: the whole batch in one padded forward pass, the harshest case for padding.
@pytest.fixture(scope="module")
def engine(tiny_models: dict[str, Path]) -> FunasrAsr:
    return FunasrAsr(tiny_models["paraformer-tiny"], threads=2, min_fill=0.0)


@pytest.fixture(scope="module")
def unfixed(tiny_models: dict[str, Path]) -> FunasrAsr:
    return FunasrAsr(tiny_models["paraformer-tiny"], threads=2, fix_padding=False, min_fill=0.0)


def texts(engine: FunasrAsr, audios: list[np.ndarray]) -> list[str]:
    return [r.text for r in engine.transcribe_batch(audios, [AsrOptions()] * len(audios))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batched_equals_one_at_a_time(engine: FunasrAsr, unfixed: FunasrAsr, seed: int) -> None:
    audios = mixed_lengths(seed)
    single = [texts(engine, [a])[0] for a in audios]
    assert all(single), "the random model should emit tokens for noise"
    assert texts(engine, audios) == single
    # Control: the same inputs through FunASR's unmodified path do disagree, so this test
    # exercises the CifPredictorV2 padding bug rather than passing by luck.
    assert texts(unfixed, audios) != [texts(unfixed, [a])[0] for a in audios]


def test_engine_protocol(engine: FunasrAsr) -> None:
    assert isinstance(engine, AsrEngine)
    assert engine.name == "Paraformer" and not engine.supports_hotwords


def test_batch_without_any_token_gives_one_empty_result_per_input(tiny_models: dict[str, Path]) -> None:
    mute = FunasrAsr(tiny_models["paraformer-tiny"], threads=2, min_fill=0.0)
    # A predictor that never fires: the real model then emits no token for any input.
    with torch.no_grad():
        mute.model.predictor.cif_output.bias.fill_(-50.0)
    silent = [np.zeros(n, dtype=np.float32) for n in (8000, 16000, 24000)]
    with torch.no_grad():
        raw = mute.model.inference(data_in=silent, key=["a", "b", "c"], **mute._kwargs)
    assert raw == [], "FunASR should answer a token-less batch with one bare [] (the case handled)"
    assert [r.text for r in mute.transcribe_batch(silent, [AsrOptions()] * 3)] == ["", "", ""]


def test_word_timestamps_follow_the_text(engine: FunasrAsr) -> None:
    audio = mixed_lengths(7, n=1)[0]
    (plain,) = engine.transcribe_batch([audio], [AsrOptions()])
    (timed,) = engine.transcribe_batch([audio], [AsrOptions(word_timestamps=True)])
    assert timed.text == plain.text
    assert [w.word for w in timed.words] == list(plain.text.replace(" ", ""))
    ends = [w.end_s for w in timed.words]
    assert ends == sorted(ends) and ends[-1] <= len(audio) / 16000 + 0.1


def test_mixed_options_in_one_batch_keep_order(engine: FunasrAsr) -> None:
    audios = mixed_lengths(9, n=4)
    opts = [AsrOptions(word_timestamps=i % 2 == 1) for i in range(4)]
    results = engine.transcribe_batch(audios, opts)
    assert [r.text for r in results] == texts(engine, audios)
    assert [bool(r.words) for r in results] == [False, True, False, True]


def test_bucketing_does_not_change_results(engine: FunasrAsr, tiny_models: dict[str, Path]) -> None:
    audios = mixed_lengths(11)
    bucketed = FunasrAsr(tiny_models["paraformer-tiny"], threads=2, min_fill=0.9)
    assert texts(bucketed, audios) == texts(engine, audios) == [texts(engine, [a])[0] for a in audios]


def test_two_workers_run_passes_at_once_with_the_same_results(tiny_models: dict[str, Path]) -> None:
    """``workers=2``: two forward passes in flight (one torch thread each) answer exactly as
    the same batches one after the other: the model's inference keeps no per-call state."""
    import threading

    two = FunasrAsr(tiny_models["paraformer-tiny"], threads=2, workers=2)
    assert two.parallelism == 2 and two.threads == 1
    batches = [mixed_lengths(seed, 6) for seed in (7, 8, 9, 10)]
    expected = [texts(two, b) for b in batches]
    got: list[tuple[int, list[str]]] = []

    def run(i: int) -> None:
        for _ in range(3):
            got.append((i, texts(two, batches[i])))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 12 and all(texts_ == expected[i] for i, texts_ in got)
