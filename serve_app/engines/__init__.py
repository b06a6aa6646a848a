"""Engines: plain Python, no Ray. What each stage computes, testable in-process.
A new ASR model family is one new module here plus a line in ``build_asr``."""

from __future__ import annotations

from pathlib import Path

from serve_app.config import AsrArgs
from serve_app.contracts import AsrEngine


def build_asr(args: AsrArgs, model_dir: Path, device: str) -> AsrEngine:
    if args.engine == "funasr":
        from serve_app.engines.funasr_asr import FunasrAsr

        return FunasrAsr(model_dir, device=device, threads=args.threads)
    from serve_app.engines.whisper_asr import WhisperAsr

    return WhisperAsr(
        model_dir,
        device=device,
        threads=args.threads,
        compute_type=args.compute_type if device == "cpu" or args.compute_type != "int8" else "float16",
        beam_size=args.beam_size,
        language=args.language,
    )
