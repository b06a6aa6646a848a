"""Engines: plain Python, no Ray. What each stage computes, testable in-process.
A new ASR model family is one new module here plus a branch in ``build_asr`` and
``supported_languages``."""

from __future__ import annotations

from pathlib import Path

from serve_app.config import FunasrArgs, WhisperArgs
from serve_app.contracts import AsrEngine

# What FunASR documents per model family (model cards of paraformer-zh / SenseVoiceSmall):
# Paraformer-zh is trained on Mandarin with English words mixed in; SenseVoice names its own.
FUNASR_LANGUAGES = ["zh", "en"]
SENSEVOICE_LANGUAGES = ["auto", "zh", "en", "yue", "ja", "ko", "nospeech"]
WHISPER_MULTILINGUAL_VOCAB = 51865
"""English-only Whisper checkpoints (``*.en``) have one token fewer than multilingual ones."""


def supported_languages(args: FunasrArgs | WhisperArgs, model_dir: Path) -> list[str]:
    """Language codes a request may name for this model: the configured list, else what the
    engine documents for the model (read from its files, without loading it)."""
    if args.languages is not None:
        return list(args.languages)
    if isinstance(args, WhisperArgs):
        vocab = model_dir / "vocabulary.txt"
        size = sum(1 for _ in vocab.open(encoding="utf-8")) if vocab.exists() else WHISPER_MULTILINGUAL_VOCAB
        if size < WHISPER_MULTILINGUAL_VOCAB:
            return ["en"]
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        return list(_LANGUAGE_CODES)
    config = (
        (model_dir / "config.yaml").read_text(encoding="utf-8")
        if (model_dir / "config.yaml").exists()
        else ""
    )
    return list(SENSEVOICE_LANGUAGES if "SenseVoice" in config else FUNASR_LANGUAGES)


def build_asr(args: FunasrArgs | WhisperArgs, model_dir: Path, device: str) -> AsrEngine:
    if isinstance(args, FunasrArgs):
        from serve_app.engines.funasr_asr import FunasrAsr

        return FunasrAsr(model_dir, device=device, threads=args.threads, workers=args.workers)
    from serve_app.engines.whisper_asr import WhisperAsr

    return WhisperAsr(
        model_dir,
        device=device,
        threads=args.threads,
        compute_type=args.compute_type if device == "cpu" or args.compute_type != "int8" else "float16",
        beam_size=args.beam_size,
        language=args.language,
        mode=args.mode if args.mode != "auto" else ("batched" if device == "cuda" else "parallel"),
        workers=args.workers,
    )
