"""Write FunASR models of the real architectures with random weights.

No Paraformer or CT-punctuation weights can be downloaded here, so tests and benchmarks
build them from FunASR's own registry: the same classes, the same frontend, the same
inference code as the released models — only the weights are random. ``large`` has the
paraformer-large dimensions (220 M parameters), so its compute cost is the real model's.

``paraformer-streaming-*`` is FunASR's online model (``ParaformerStreaming``: the chunked
SANM encoder, the online frontend), configured as the released
``iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-online``.

    python -m tools.tiny_models --out models/tiny            # paraformer-tiny, ct-punc-tiny,
                                                             # paraformer-streaming-tiny
    python -m tools.tiny_models --out models/tiny --large    # + paraformer-large-random,
                                                             # paraformer-streaming-large-random
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

SPECIALS = ["<blank>", "<s>", "</s>"]
# A small vocabulary of common Hanzi and English words: enough for random models to emit
# readable-looking tokens; the large model pads it to the real vocabulary size (8404).
_HANZI = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处府理"
_WORDS = ["hello", "world", "speech", "server", "audio", "model", "batch", "test"]

ENCODER_BASE: dict[str, Any] = {
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
    "input_layer": "pe",
    "pos_enc_class": "SinusoidalPositionEncoder",
    "normalize_before": True,
    "kernel_size": 11,
    "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}

FRONTEND_CONF: dict[str, Any] = {
    "fs": 16000,
    "window": "hamming",
    "n_mels": 80,
    "frame_length": 25,
    "frame_shift": 10,
    "lfr_m": 7,
    "lfr_n": 6,
    # dither adds random noise to the features: outputs would not be reproducible.
    "dither": 0.0,
}

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"d": 64, "heads": 2, "ffn": 128, "enc": 2, "dec": 1, "vocab": 0},
    "large": {"d": 512, "heads": 4, "ffn": 2048, "enc": 50, "dec": 16, "vocab": 8404},
}


def _tokens(vocab: int) -> list[str]:
    body = list(dict.fromkeys(list(_HANZI) + _WORDS))
    if vocab:
        body += [f"tok{i}" for i in range(vocab - len(SPECIALS) - 1 - len(body))]
    return SPECIALS + body + ["<unk>"]


def paraformer_config(size: str) -> dict[str, Any]:
    s = SIZES[size]
    return {
        "model": "Paraformer",
        "model_conf": {
            "ctc_weight": 0.0,
            "lsm_weight": 0.1,
            "length_normalized_loss": True,
            "predictor_weight": 1.0,
            "predictor_bias": 1,
            "sampling_ratio": 0.75,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            **ENCODER_BASE,
            "output_size": s["d"],
            "attention_heads": s["heads"],
            "linear_units": s["ffn"],
            "num_blocks": s["enc"],
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": s["heads"],
            "linear_units": s["ffn"],
            "num_blocks": s["dec"],
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1,
            "att_layer_num": s["dec"],
            "kernel_size": 11,
            "sanm_shfit": 0,
        },
        "predictor": "CifPredictorV2",
        "predictor_conf": {
            "idim": s["d"],
            "threshold": 1.0,
            "l_order": 1,
            "r_order": 1,
            "tail_threshold": 0.45,
        },
        "frontend": "WavFrontend",
        "frontend_conf": dict(FRONTEND_CONF),
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "input_size": 80 * FRONTEND_CONF["lfr_m"],
    }


def paraformer_streaming_config(size: str) -> dict[str, Any]:
    """FunASR's online Paraformer (``ParaformerStreaming``), with the fields of the released
    ``...-vocab8404-online`` model's config.yaml (FunASR's ``paraformer_streaming/template.yaml``):
    the chunk-aware SANM encoder fed one chunk at a time with its look-back caches, a causal
    decoder FSMN (``sanm_shfit: 5``), and the online frontend that carries samples and
    LFR frames over from one chunk to the next."""
    config = paraformer_config(size)
    config["model"] = "ParaformerStreaming"
    config["encoder"] = "SANMEncoderChunkOpt"
    config["encoder_conf"].update(
        {
            # The streaming position encoding counts frames from the start of the stream.
            "input_layer": "pe_online",
            # Training-time chunking (streaming inference takes chunk_size per call instead).
            "chunk_size": [12, 15],
            "stride": [8, 10],
            "pad_left": [0, 0],
            "encoder_att_look_back_factor": [4, 4],
            "decoder_att_look_back_factor": [1, 1],
        }
    )
    # The decoder's FSMN memory looks only back (left padding 5 + 5 of kernel 11).
    config["decoder_conf"]["sanm_shfit"] = 5
    config["frontend"] = "WavFrontendOnline"
    return config


def punc_config() -> dict[str, Any]:
    d = 64
    return {
        "model": "CTTransformer",
        "model_conf": {
            "ignore_id": 0,
            "embed_unit": d,
            "att_unit": d,
            "dropout_rate": 0.1,
            "punc_list": ["<unk>", "_", "，", "。", "？", "、"],
            "punc_weight": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            "sentence_end_id": 3,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            **ENCODER_BASE,
            "input_size": d,
            "output_size": d,
            "attention_heads": 2,
            "linear_units": 128,
            "num_blocks": 2,
            "padding_idx": 0,
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>"},
    }


def write_model(out: Path, config: dict[str, Any], tokens: list[str], seed: int = 0) -> Path:
    """Instantiate ``config`` from FunASR's registry with random weights and save it."""
    import funasr.models  # noqa: F401  (fills the registry)
    import torch
    from funasr.register import tables

    out.mkdir(parents=True, exist_ok=True)
    if (out / "model.pt").exists() and (out / "config.yaml").exists():
        return out
    torch.manual_seed(seed)
    model_class = tables.model_classes.get(config["model"])
    kwargs = {**config, **config.get("model_conf", {}), "vocab_size": len(tokens)}
    model = model_class(**kwargs)
    (out / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    (out / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    torch.save(model.state_dict(), out / "model.pt.tmp")
    (out / "model.pt.tmp").rename(out / "model.pt")
    return out


def write_paraformer_streaming(out: Path, size: str) -> Path:
    """A random-weight ``ParaformerStreaming`` of ``size`` ("tiny" or "large") in ``out``."""
    return write_model(out, paraformer_streaming_config(size), _tokens(SIZES[size]["vocab"]))


def write_tiny_models(root: Path, large: bool = False) -> dict[str, Path]:
    paths = {
        "paraformer-tiny": write_model(root / "paraformer-tiny", paraformer_config("tiny"), _tokens(0)),
        "ct-punc-tiny": write_model(root / "ct-punc-tiny", punc_config(), _tokens(0)),
        "paraformer-streaming-tiny": write_paraformer_streaming(root / "paraformer-streaming-tiny", "tiny"),
    }
    if large:
        paths["paraformer-large-random"] = write_model(
            root / "paraformer-large-random", paraformer_config("large"), _tokens(SIZES["large"]["vocab"])
        )
        paths["paraformer-streaming-large-random"] = write_paraformer_streaming(
            root / "paraformer-streaming-large-random", "large"
        )
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("models/tiny"))
    parser.add_argument(
        "--large",
        action="store_true",
        help="also write the paraformer-large-sized models (offline and streaming, 880 MB each)",
    )
    args = parser.parse_args()
    for name, path in write_tiny_models(args.out, large=args.large).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
