"""The default engine gains from concurrency: Whisper tiny.en as ``make run`` serves it.

    python -m bench.whisper [--rounds 3] [--requests 16]        # make bench-whisper

Served over HTTP on a local Ray, ``deploy/local.yaml`` with ``beckett.wav`` (10 s of public
domain speech) as every request. Arrangements, interleaved per round:

* reference, one after another: the engine as it was before (one CTranslate2 worker of two
  threads, clip by clip; ``asr: {mode: parallel, workers: 1, threads: 2}``), the requests
  strictly one after another: what the ratio is measured against, so that a slower
  sequential figure cannot make it;
* reference, all at once; shipped (``asr.mode: auto``: parallel single-thread workers on a
  CPU), one after another and all at once;
* on a GPU, also ``asr.mode: batched`` (one ``generate`` per batch of up to 16 clips).

Ends with ``bench-whisper: concurrent/sequential=… (shipped, all at once / reference, one after
another) rtfx=…``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

from bench.common import Figure, Run, interleave, served_run
from serve_app.gpu import GpuProbe
from tools.local_serve import ROOT, LocalServe, app_config


def beckett() -> bytes:
    spec = importlib.util.find_spec("moonshine_onnx")
    assert spec and spec.submodule_search_locations, "useful-moonshine-onnx is not installed (make install)"
    return (Path(next(iter(spec.submodule_search_locations))) / "assets" / "beckett.wav").read_bytes()


SERIAL = {"max_batch_count": 1, "batch_wait_timeout_s": 0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument(
        "--code", default=None, help="serve serve_app from this checkout (before/after): Ray starts there"
    )
    p.add_argument(
        "--user-config", default=None, help="shipped app's ASR user_config as JSON (e.g. an older YAML's)"
    )
    args = p.parse_args()
    gpu = GpuProbe.visible()
    data = beckett()
    payloads = [(data, 10.0)] * args.requests
    # Ray puts the driver's current directory first on every worker's sys.path: started from
    # another checkout, the replicas import its serve_app (this process keeps its own).
    with contextlib.chdir(args.code or "."):
        cluster = LocalServe.start(num_cpus=8, num_gpus=1 if gpu.name else None, object_store_mb=500)
    deploy = cluster.deploy
    try:
        root = Path(args.code) if args.code else ROOT
        ref = deploy(
            app_config(
                "local.yaml",
                "ref",
                root=root,
                args={"asr": {"mode": "parallel", "workers": 1, "threads": 2, "device": "cpu"}},
                deployments={"ASR": {"user_config": SERIAL}},
            )
        )
        shipped = deploy(
            app_config(
                "local.yaml",
                "shipped",
                root=root,
                args={"asr": {"device": "cpu"}},
                deployments={"ASR": {"user_config": json.loads(args.user_config)}}
                if args.user_config
                else None,
            )
        )
        urls = {"reference": ref, "shipped": shipped}
        if gpu.name:
            urls["batched (GPU)"] = deploy(
                app_config(
                    "local.yaml",
                    "batched",
                    args={"asr": {"mode": "batched", "device": "cuda"}},
                    deployments={
                        "ASR": {
                            "user_config": {"max_batch_count": 16, "batch_wait_timeout_s": 0.01},
                            "ray_actor_options": {"num_cpus": 1, "num_gpus": 1},
                        }
                    },
                )
            )
        for url in urls.values():  # warm the HTTP path and the models
            served_run(url, payloads[:2], 2)
        arrangements: dict[str, Callable[[], Run]] = {}
        for name, url in urls.items():
            arrangements[f"{name}, one after another"] = functools.partial(served_run, url, payloads, 1)
            arrangements[f"{name}, {args.requests} at once"] = functools.partial(
                served_run, url, payloads, args.requests
            )
        print(
            f"bench-whisper: {args.requests} × beckett.wav (10 s), {args.rounds} interleaved rounds, "
            f"machine: {gpu.name or 'CPU'}",
            flush=True,
        )
        figures = interleave(arrangements, args.rounds)
    finally:
        cluster.stop()
    report(figures, args)


def report(figures: dict[str, Figure], args: argparse.Namespace) -> None:
    base = figures["reference, one after another"]
    print()
    print("| arrangement | audio-s/s, median (min–max) | p50 s | p95 s | / reference one after another |")
    print("|---|---|---|---|---|")
    for f in figures.values():
        print(
            f"| {f.name} | {f.cell()} | {f.median(lambda r: r.pct(50)):.2f} | {f.median(lambda r: r.pct(95)):.2f} "
            f"| {f.median() / base.median():.2f} |"
        )
    best = figures[f"shipped, {args.requests} at once"]
    print(
        f"bench-whisper: concurrent/sequential={best.median() / base.median():.2f} "
        f"(spread {min(r.rtfx for r in best.runs) / max(r.rtfx for r in base.runs):.2f}–"
        f"{max(r.rtfx for r in best.runs) / min(r.rtfx for r in base.runs):.2f}) rtfx={best.median():.1f}"
    )


if __name__ == "__main__":
    main()
