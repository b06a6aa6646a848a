"""Streaming Paraformer engine on a random-weight model of the real architecture.

The engine's claim is that stepping many sessions in one batched forward pass gives each
session exactly what it gets alone, and that alone it gives what FunASR's own streaming
``inference`` (with its ``cache`` dict) gives. A random model may emit few tokens, so besides
the tokens the tests compare what every chunk computed: encoder output and CIF weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from serve_app.engines import padded_batch, streaming_asr, streaming_state
from serve_app.engines.streaming_asr import ChunkTrace, StreamingParaformer, StreamingSession
from tools.audio import speak

CHUNK = 9600
TOL = 1e-5


@pytest.fixture(scope="module")
def engine(tiny_models: dict[str, Path]) -> StreamingParaformer:
    # One thread: the tiny model gains nothing from two, and two spin against other work.
    return StreamingParaformer(tiny_models["paraformer-streaming-tiny"], threads=1)


@dataclass(frozen=True)
class Stream:
    """One session's audio, the piece size its client sends, and the step it joins at."""

    audio: np.ndarray
    piece: int
    start: int = 0

    def pieces(self) -> list[tuple[np.ndarray, bool]]:
        n = len(self.audio)
        return [(self.audio[i : i + self.piece], i + self.piece >= n) for i in range(0, n, self.piece)]


def noise(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * 16000)) * level).astype(np.float32)


@pytest.fixture(scope="module")
def streams() -> list[Stream]:
    """Different lengths, piece sizes and start times, so that one batch holds first, middle
    and final chunks, look-backs of every fill and a final tail shorter than 60 ms."""
    s1 = np.asarray(speak("Please call me back tomorrow morning."))
    s2 = np.asarray(speak("The weather is very cold this winter."))
    s3 = np.asarray(speak("hello world"))
    tail = np.concatenate([noise(2.4, 3), noise(0.02, 4)])  # 4 chunks + 320 samples
    return [
        Stream(s1, CHUNK),
        Stream(s2, CHUNK, start=1),
        Stream(s3, 4800),
        Stream(noise(3.05, 1), 12000, start=3),
        Stream(noise(1.1, 2, level=0.3), CHUNK, start=2),
        Stream(tail, CHUNK, start=1),
    ]


Run = list[list[ChunkTrace]]
Corrupt = Callable[[list[StreamingSession]], None]


def traced(
    engine: StreamingParaformer, session: StreamingSession, piece: np.ndarray, final: bool
) -> list[ChunkTrace]:
    """What each model chunk computed for this one piece of one session."""
    return list(engine.step([(session, piece, final)], trace=True)[0].traces)


def alone(engine: StreamingParaformer, stream: Stream) -> list[ChunkTrace]:
    session = engine.new_session()
    return [t for piece, final in stream.pieces() for t in traced(engine, session, piece, final)]


def together(engine: StreamingParaformer, streams: list[Stream], corrupt: Corrupt | None = None) -> Run:
    """Every stream that has a piece at this step goes into one ``step`` call."""
    sessions = [engine.new_session() for _ in streams]
    todo = [s.pieces() for s in streams]
    out: Run = [[] for _ in streams]
    t = 0
    while any(todo):
        idx = [i for i, s in enumerate(streams) if t >= s.start and todo[i]]
        if idx:
            if corrupt is not None:
                corrupt(sessions)
            items = [(sessions[i], *todo[i].pop(0)) for i in idx]
            for i, r in zip(idx, engine.step(items, trace=True), strict=True):
                out[i] += r.traces
        t += 1
    return out


def mismatch(a: Run, b: Run) -> tuple[float, int]:
    """Largest difference of encoder output / CIF weights, and how many chunks' tokens differ."""
    worst, tokens = 0.0, 0
    for ca, cb in zip(a, b, strict=True):
        assert len(ca) == len(cb)
        for x, y in zip(ca, cb, strict=True):
            if x.encoder_out.shape != y.encoder_out.shape:
                return float("inf"), tokens + 1
            worst = max(worst, float(np.abs(x.encoder_out - y.encoder_out).max()))
            worst = max(worst, float(np.abs(x.alphas - y.alphas).max()))
            tokens += x.tokens != y.tokens
    return worst, tokens


def test_batched_equals_one_at_a_time(engine: StreamingParaformer, streams: list[Stream]) -> None:
    single = [alone(engine, s) for s in streams]
    batched = together(engine, streams)
    assert sum(len(t.tokens) for run in single for t in run) > 20, "the random model should emit tokens"
    worst, tokens = mismatch(single, batched)
    assert tokens == 0 and worst < TOL, f"max diff {worst:.2e}, {tokens} chunks with other tokens"


def _swap_encoder_caches(sessions: list[StreamingSession]) -> None:
    a, b = sessions[0], sessions[1]
    if a.enc_k and b.enc_k:
        a.enc_k, b.enc_k, a.enc_v, b.enc_v = b.enc_k, a.enc_k, b.enc_v, a.enc_v


def _share_decoder_cache(sessions: list[StreamingSession]) -> None:
    a, b = sessions[0], sessions[1]
    if a.dec_k and b.dec_k:
        b.dec_k, b.dec_v, b.dec_fsmn = a.dec_k, a.dec_v, a.dec_fsmn


@pytest.mark.parametrize("corrupt", [_swap_encoder_caches, _share_decoder_cache])
def test_control_mixed_up_caches_are_caught(
    engine: StreamingParaformer, streams: list[Stream], corrupt: Corrupt
) -> None:
    """The comparison above can fail: a batcher that swaps or shares two sessions' caches."""
    single = [alone(engine, s) for s in streams]
    worst, tokens = mismatch(single, together(engine, streams, corrupt=corrupt))
    assert worst > 1e-3 or tokens > 0, f"corrupted caches went unnoticed (max diff {worst:.2e})"


def test_control_unmasked_padding_is_caught(
    engine: StreamingParaformer, streams: list[Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """...and so can a batcher that pads sessions to one shape without masking the padding."""
    single = [alone(engine, s) for s in streams]
    monkeypatch.setattr(streaming_asr, "lengths_mask", lambda lens, width, device: None)
    stack = padded_batch.stack_right
    monkeypatch.setattr(streaming_asr, "stack_right", lambda caches: (stack(caches)[0], None))
    worst, tokens = mismatch(single, together(engine, streams))
    assert worst > 1e-3, f"unmasked padding went unnoticed (max diff {worst:.2e})"


def test_one_session_equals_funasr_streaming_inference(
    engine: StreamingParaformer, streams: list[Stream]
) -> None:
    """Alone, the engine computes what FunASR's ``inference`` with a ``cache`` computes."""
    model = engine.model
    kwargs = {k: v for k, v in engine._am.kwargs.items() if k not in {"model", "input", "key"}}
    original = model.encoder.forward_chunk
    recorded: list[torch.Tensor] = []

    def record(*args: object, **kw: object) -> object:
        out = original(*args, **kw)
        recorded.append(out[0][0].clone())
        return out

    for stream in [streams[0], streams[2], streams[5]]:  # 600 ms, 300 ms pieces; a 20 ms tail
        recorded.clear()
        model.encoder.forward_chunk = record
        cache: dict[str, object] = {}
        theirs = []
        try:
            for piece, final in stream.pieces():
                with torch.inference_mode():
                    res, _ = model.inference(
                        data_in=[torch.from_numpy(piece.copy())],
                        key=["s"],
                        cache=cache,
                        is_final=final,
                        chunk_size=[0, 10, 5],
                        encoder_chunk_look_back=4,
                        decoder_chunk_look_back=1,
                        **kwargs,
                    )
                theirs.append(res[0]["text"])
        finally:
            model.encoder.forward_chunk = original
        session = engine.new_session()
        ours = [engine.step([(session, p, f)], trace=True)[0] for p, f in stream.pieces()]
        assert [r.text for r in ours] == theirs
        traces = [t for r in ours for t in r.traces]
        assert [t.encoder_out.shape for t in traces] == [tuple(r.shape) for r in recorded]
        worst = max(
            float(np.abs(t.encoder_out - r.numpy()).max()) for t, r in zip(traces, recorded, strict=True)
        )
        assert worst < TOL, f"encoder output differs from FunASR's by {worst:.2e}"
    assert any(theirs), "the random model should emit text"


def test_state_isolation_any_interleaving(engine: StreamingParaformer, streams: list[Stream]) -> None:
    """Per-session results do not depend on who else is in a step, or in which order."""
    chosen = [Stream(s.audio, s.piece) for s in streams[:4]]
    reference = together(engine, chosen)
    rng = np.random.default_rng(7)
    sessions = [engine.new_session() for _ in chosen]
    todo = [s.pieces() for s in chosen]
    out: Run = [[] for _ in chosen]
    while any(todo):
        ready = [i for i in range(len(chosen)) if todo[i]]
        rng.shuffle(ready)
        # Random groups in random order: some sessions alone, some together, some skip a step.
        for group in np.array_split(np.array(ready), rng.integers(1, len(ready) + 1)):
            members = [int(i) for i in group if rng.random() < 0.8]
            if members:
                items = [(sessions[i], *todo[i].pop(0)) for i in members]
                for i, r in zip(members, engine.step(items, trace=True), strict=True):
                    out[i] += r.traces
    worst, tokens = mismatch(reference, out)
    assert tokens == 0 and worst < TOL, f"max diff {worst:.2e}, {tokens} chunks with other tokens"


def test_any_piece_length_is_buffered_to_model_chunks(engine: StreamingParaformer) -> None:
    audio = np.asarray(speak("The weather is very cold this winter."))
    by_chunk = Stream(audio, CHUNK).pieces()
    by_100ms = Stream(audio, 1600).pieces()
    session = engine.new_session()
    small: list[ChunkTrace] = []
    for piece, final in by_100ms:
        r = engine.step([(session, piece, final)], trace=True)[0]
        small += r.traces
        assert session.pending.size < CHUNK
        assert r.traces or not r.text, "no text before a whole chunk is there"
    session = engine.new_session()
    big = [t for p, f in by_chunk for t in traced(engine, session, p, f)]
    worst, tokens = mismatch([big], [small])
    assert tokens == 0 and worst < TOL


def test_state_is_bounded_and_final_resets(engine: StreamingParaformer) -> None:
    session = engine.new_session()
    audio = noise(20, 9)
    texts = []
    for i in range(0, len(audio), 7000):  # odd piece size: ragged buffering
        r = engine.feed(session, audio[i : i + 7000])
        texts.append(r.text)
        assert session.pending.size < CHUNK
    d = engine.model.encoder.output_size()
    assert session.overlap is not None and session.overlap.shape[0] == 5
    assert all(k is not None and k.shape[1] <= 4 * 10 for k in session.enc_k + session.enc_v)
    assert all(k is not None and k.shape[1] <= 1 * 10 for k in session.dec_k + session.dec_v)
    assert all(f is not None and tuple(f.shape) == (d, 10) for f in session.dec_fsmn)
    final = engine.feed(session, np.zeros(0, dtype=np.float32), is_final=True)
    expected = ""
    for text in [*texts, final.text]:
        expected = streaming_state.join_text(expected, text)
    assert final.is_final and final.utterance_text == expected and expected
    assert session.text == "" and session.overlap is None and not session.enc_k and session.position == 0


def test_misuse_is_refused(engine: StreamingParaformer, tiny_models: dict[str, Path]) -> None:
    s = engine.new_session()
    with pytest.raises(ValueError, match="only once"):
        engine.step([(s, noise(0.1, 1), False), (s, noise(0.1, 2), False)])
    with pytest.raises(ValueError, match="chunk_size"):
        StreamingParaformer(tiny_models["paraformer-streaming-tiny"], chunk_size=(0, 10, 0))
    with pytest.raises(ValueError, match="look-back"):
        StreamingParaformer(tiny_models["paraformer-streaming-tiny"], encoder_chunk_look_back=-1)
    with pytest.raises(ValueError, match="not a ParaformerStreaming"):
        StreamingParaformer(tiny_models["paraformer-tiny"])


def test_ending_an_empty_utterance_decodes_nothing(engine: StreamingParaformer) -> None:
    session = engine.new_session()
    r = engine.step([(session, np.zeros(500, dtype=np.float32), True)], trace=True)[0]
    assert r.is_final and r.text == "" and r.traces == ()
