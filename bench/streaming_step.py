"""Streaming ASR step: N sessions' 600 ms chunks in one batched pass vs one at a time.

    python -m bench.streaming_step                      # paraformer-large-sized random weights
    python -m bench.streaming_step --model tiny --sizes 1 4

Every session is first streamed to its steady state (full encoder look-back), then each round
times one ``step`` with the next chunk of all N sessions (batched) against N ``step`` calls of
one session each (what a server that serialises sessions under a lock does), on two sets of
sessions at the same stream position. A step includes the per-session frontend. The medians
over the rounds are printed; a session keeps up in realtime while a step of all N takes less
than the 600 ms of audio it consumes. ``tokens/chunk`` shows that the decoder ran (it is
skipped for a chunk without a token; the random large model fires ~4 per 600 ms chunk).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from serve_app.engines.streaming_asr import StreamingParaformer, StreamingSession
from tools.audio import speak

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "Please call me back tomorrow morning.",
    "The weather is very cold this winter.",
    "Our meeting moved to three in the afternoon.",
    "She sells sea shells by the sea shore.",
]


def model_dir(size: str) -> Path:
    """The random-weight streaming model, written on first use (the large one only: 880 MB)."""
    from tools.tiny_models import write_paraformer_streaming

    name = "paraformer-streaming-tiny" if size == "tiny" else "paraformer-streaming-large-random"
    return write_paraformer_streaming(ROOT / "models" / "tiny" / name, size)


def audio_for(i: int, samples: int) -> np.ndarray:
    """Speech looped to ``samples``, a different sentence order and noise level per session."""
    rng = np.random.default_rng(i)
    order = [np.asarray(speak(SENTENCES[(i + k) % len(SENTENCES)])) for k in range(len(SENTENCES))]
    speech = np.concatenate(order * (1 + samples // sum(len(o) for o in order)))
    noise = rng.standard_normal(speech.size).astype(np.float32) * 0.003 * (1 + i % 3)
    return (speech + noise)[:samples].astype(np.float32)


def run(engine: StreamingParaformer, n: int, warm_chunks: int, rounds: int) -> tuple[float, float, float]:
    """Median seconds of a batched step and of N single steps, and tokens per session-chunk."""
    chunk = engine.chunk_samples
    audios = [audio_for(i, (warm_chunks + rounds) * chunk) for i in range(n)]
    batched: list[StreamingSession] = [engine.new_session() for _ in range(n)]
    single: list[StreamingSession] = [engine.new_session() for _ in range(n)]
    for c in range(warm_chunks):  # to steady state (the results are equal either way)
        piece = [a[c * chunk : (c + 1) * chunk] for a in audios]
        engine.step([(s, p, False) for s, p in zip(batched + single, piece + piece, strict=True)])
    t_batched, t_single, tokens = [], [], 0
    for r in range(rounds):
        c = warm_chunks + r
        piece = [a[c * chunk : (c + 1) * chunk] for a in audios]
        t0 = time.perf_counter()
        results = engine.step([(s, p, False) for s, p in zip(batched, piece, strict=True)])
        t1 = time.perf_counter()
        tokens += sum(len(x.tokens) for x in results)
        for s, p in zip(single, piece, strict=True):
            engine.step([(s, p, False)])
        t2 = time.perf_counter()
        t_batched.append(t1 - t0)
        t_single.append(t2 - t1)
    return statistics.median(t_batched), statistics.median(t_single), tokens / (n * rounds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["tiny", "large"], default="large")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    engine = StreamingParaformer(model_dir(args.model), device=args.device, threads=args.threads)
    warm = engine.encoder_chunk_look_back + 1
    run(engine, 2, warm_chunks=2, rounds=1)  # first calls are slow: warm the kernels up
    chunk_ms = engine.chunk_samples * 1000 // 16000
    print(
        f"streaming step, {args.model} model, {args.device}, {args.threads} threads, "
        f"{chunk_ms} ms chunks, median of {args.rounds} rounds, load avg {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'N':>3} {'batched ms':>11} {'1-by-1 ms':>10} {'speed-up':>9} {'ms/session':>11} "
        f"{'realtime':>9} {'tokens/chunk':>13}"
    )
    for n in args.sizes:
        b, s, tok = run(engine, n, warm_chunks=warm, rounds=args.rounds)
        print(
            f"{n:>3} {b * 1000:>11.0f} {s * 1000:>10.0f} {s / b:>8.2f}x {b * 1000 / n:>11.0f} "
            f"{'yes' if b * 1000 < chunk_ms else 'no':>9} {tok:>13.1f}"
        )
    print(f"load avg at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
