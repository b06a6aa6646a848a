"""Capacity benchmark: the model's own limit, the one-at-a-time baseline, and the served graph.

    python -m bench.run --model tiny          # quick check (make bench)
    python -m bench.run --model large         # paraformer-large-sized random weights (make bench-full)

One process measures, on the same model, hardware and audio:

1. **limit** — FSMN-VAD + the ASR engine's batched forward pass in this process, no serving,
   batches of 1..N segments in arrival order; the best batch size counts.
2. **baseline** — requests strictly one after another, each segment alone (batch size 1): what
   single-process FunASR web UIs and the simple Ray Serve FunASR example do.
3. **served** — the Ray Serve graph over HTTP at concurrency 1, 2, 4, ... until throughput stops
   growing, with the same clip mix (2 s to 5 min of espeak-ng speech with pauses).

Throughput is audio seconds per wall second (RTFx). The last line is
``bench: served/limit=… served/baseline=… rtfx=…`` for scripts that track it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from load.clips import Clip, build_clip_mix
from serve_app.contracts import AsrOptions, DecodedAudio, SpeechSegment
from serve_app.engines.decode import FfmpegDecoder
from serve_app.gpu import GpuProbe

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    name: str
    concurrency: int
    audio_s: float
    wall_s: float
    latencies_s: list[float] = field(default_factory=list)
    mean_batch: float = 0.0
    mean_batch_audio_s: float = 0.0
    replicas: int = 1
    cpu_pct: float = 0.0
    gpu_pct: float | None = None
    gpu_mem_mb: float | None = None
    asr_busy: float | None = None

    @property
    def rtfx(self) -> float:
        return self.audio_s / self.wall_s

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")


def workload(clips: list[Clip], audio_s: float, seed: int = 0) -> list[Clip]:
    """A fixed request sequence drawn by the mix weights, always with the longest clip once."""
    rng = np.random.default_rng(seed)
    longest = max(clips, key=lambda c: c.duration_s)
    out = [longest] if longest.duration_s <= audio_s else []
    weights = np.array([c.weight for c in clips])
    while sum(c.duration_s for c in out) < audio_s:
        out.append(clips[int(rng.choice(len(clips), p=weights / weights.sum()))])
    rng.shuffle(out)  # type: ignore[arg-type]
    return out


def model_dir(size: str) -> Path:
    from tools.tiny_models import write_tiny_models

    paths = write_tiny_models(ROOT / "models" / "tiny", large=size == "large")
    return paths["paraformer-large-random" if size == "large" else "paraformer-tiny"]


# --- 1 + 2: in-process -----------------------------------------------------------------


def direct(
    model: Path,
    audios: list[DecodedAudio],
    ten: DecodedAudio,
    device: str,
    threads: int,
    batch_sizes: list[int],
) -> dict[str, Any]:
    from serve_app.engines.funasr_asr import FunasrAsr
    from serve_app.engines.vad import FsmnVad
    from serve_app.model_paths import resolve

    vad = FsmnVad(resolve("embedded:fsmn-vad"), max_segment_s=30, threads=1)
    asr = FunasrAsr(model, device=device, threads=threads)
    warm = [np.zeros(16000, np.float32)] * 2
    asr.transcribe_batch(warm, [AsrOptions()] * 2)
    total = sum(a.duration_s for a in audios)

    def run(batch: int, by_length: bool) -> float:
        t0 = time.perf_counter()
        segs: list[SpeechSegment] = [s for a in audios for s in vad.segment(a)]
        if by_length:  # what an offline batch job can do: all segments known, sorted by length
            segs.sort(key=lambda s: len(s.samples))
        for i in range(0, len(segs), batch):
            chunk = [s.samples for s in segs[i : i + batch]]
            asr.transcribe_batch(chunk, [AsrOptions()] * len(chunk))
        return time.perf_counter() - t0

    def one_at_a_time() -> tuple[float, list[float]]:
        lat, t0 = [], time.perf_counter()
        for a in audios:
            t = time.perf_counter()
            for s in vad.segment(a):
                asr.transcribe_batch([s.samples], [AsrOptions()])
            lat.append(time.perf_counter() - t)
        return time.perf_counter() - t0, lat

    def automodel_one_at_a_time() -> tuple[float, list[float]]:
        from funasr import AutoModel

        am = AutoModel(
            model=str(model),
            vad_model=str(resolve("embedded:fsmn-vad")),
            vad_kwargs={"max_single_segment_time": 30000},
            device=device,
            ncpu=threads,
            disable_update=True,
            disable_pbar=True,
            log_level="ERROR",
        )
        am.generate(input=np.zeros(16000, np.float32), batch_size_s=0)
        lat, t0 = [], time.perf_counter()
        for a in audios:
            t = time.perf_counter()
            am.generate(input=a.samples, batch_size_s=0)  # batch_size_s=0: one segment per forward pass
            lat.append(time.perf_counter() - t)
        return time.perf_counter() - t0, lat

    limit = {
        f"{b}{' sorted' if srt else ''}": total / run(b, srt)
        for b in batch_sizes
        for srt in (False, True)
        if b > 1 or not srt
    }
    base_wall, base_lat = one_at_a_time()
    am_wall, am_lat = automodel_one_at_a_time()
    lone = []
    for _ in range(5):
        t = time.perf_counter()
        segs10 = vad.segment(ten)
        asr.transcribe_batch([s.samples for s in segs10], [AsrOptions()] * len(segs10))
        lone.append(time.perf_counter() - t)
    return {
        "limit_by_batch": limit,
        "limit": max(limit.values()),
        "best_batch": max(limit, key=lambda b: limit[b]),
        "baseline": Row("baseline", 1, total, am_wall, am_lat),
        "engine_one_at_a_time": Row("engine, batch 1", 1, total, base_wall, base_lat),
        "lone_10s_direct_s": statistics.median(lone),
    }


# --- 3: served --------------------------------------------------------------------------


async def _send(url: str, payloads: list[tuple[bytes, float]], concurrency: int) -> tuple[float, list[float]]:
    import httpx

    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []

    async def one(client: httpx.AsyncClient, data: bytes) -> None:
        async with sem:
            t = time.perf_counter()
            r = await client.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", data)})
            r.raise_for_status()
            lat.append(time.perf_counter() - t)

    async with httpx.AsyncClient(timeout=3600) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, d) for d, _ in payloads))
        return time.perf_counter() - t0, lat


def served(
    model: Path, payloads: list[tuple[bytes, float]], ten_s: bytes, args: argparse.Namespace, gpu: GpuProbe
) -> dict[str, Any]:
    import psutil
    from ray import serve

    from tools.local_serve import LocalServe, app_config

    num_gpus = 1 if gpu.name else None
    cluster = LocalServe.start(num_cpus=max(8, os.cpu_count() or 2), num_gpus=num_gpus, object_store_mb=1000)
    try:
        app = app_config(
            "local-funasr.yaml",
            "bench",
            args={
                "asr": {"model": str(model), "device": "auto", "threads": args.threads},
                "postprocess": {"punc_model": None, "itn": False},
            },
            deployments={
                "ASR": {
                    "num_replicas": args.asr_replicas,
                    "user_config": {
                        "max_batch_count": args.max_batch,
                        "max_batch_audio_s": args.max_batch_audio_s,
                        "batch_wait_timeout_s": args.batch_wait_s,
                        **({"min_fill": args.min_fill} if args.min_fill is not None else {}),
                    },
                    "ray_actor_options": {
                        "num_cpus": args.threads,
                        **({"num_gpus": args.gpu_per_replica} if gpu.name else {}),
                    },
                },
            },
        )
        url = cluster.deploy(app, timeout_s=900)
        asr = serve.get_deployment_handle("ASR", app_name="bench")
        total = sum(d for _, d in payloads)
        asyncio.run(_send(url, payloads[:2], 2))  # warm the HTTP path
        rows: list[Row] = []
        levels = list(args.levels or [])
        c = levels.pop(0) if levels else 1
        while c <= args.max_concurrency:
            for _ in range(args.asr_replicas):
                asr.reset_stats.remote().result()
            psutil.cpu_percent(None)
            wall, lat = asyncio.run(_send(url, payloads, c))
            cpu = psutil.cpu_percent(None)
            reading = next(iter(gpu.read()), None)
            util, mem = (reading.utilization_pct, reading.memory_used_mb) if reading else (None, None)
            stats = asr.stats.remote().result()
            row = Row(
                "served",
                c,
                total,
                wall,
                lat,
                stats["mean_batch_size"],
                stats["mean_batch_audio_s"],
                args.asr_replicas,
                cpu,
                util,
                mem,
            )
            row.asr_busy = stats["busy_s"] / wall
            rows.append(row)
            print(
                f"  served c={c:<3} rtfx={row.rtfx:7.1f} p95={row.pct(95):6.2f}s batch={row.mean_batch:4.1f} asr-busy={row.asr_busy:.0%}",
                flush=True,
            )
            best_before = max((r.rtfx for r in rows[:-1]), default=0.0)
            if args.levels is not None:
                if not levels:
                    break
                c = levels.pop(0)
                continue
            if c >= 4 and row.rtfx < best_before * 1.05:
                break
            c *= 2
        lone = []
        for _ in range(5):
            t = time.perf_counter()
            asyncio.run(_send(url, [(ten_s, 10.0)], 1))
            lone.append(time.perf_counter() - t)
        return {"rows": rows, "lone_10s_served_s": statistics.median(lone)}
    finally:
        cluster.stop()


# --- report -----------------------------------------------------------------------------


def table(rows: list[Row], limit: float, baseline: float) -> str:
    head = "| run | conc | audio-s/s (RTFx) | RTF | p50 s | p95 s | p99 s | mean batch | batch audio-s | replicas | CPU % | GPU % | GPU MiB | /limit | /baseline |"
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        g = lambda v: "–" if v is None else f"{v:.0f}"  # noqa: E731
        lines.append(
            f"| {r.name} | {r.concurrency} | {r.rtfx:.1f} | {1 / r.rtfx:.4f} | {r.pct(50):.2f} | {r.pct(95):.2f} | {r.pct(99):.2f} "
            f"| {r.mean_batch:.1f} | {r.mean_batch_audio_s:.1f} | {r.replicas} | {r.cpu_pct:.0f} | {g(r.gpu_pct)} | {g(r.gpu_mem_mb)} "
            f"| {r.rtfx / limit:.2f} | {r.rtfx / baseline:.2f} |"
        )
    return "\n".join(lines)


def plots(rows: list[Row], limit: float, baseline: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    conc = [r.concurrency for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(conc, [r.rtfx for r in rows], "o-", label="served graph")
    ax.axhline(limit, color="g", ls="--", label=f"limit (in-process batched) {limit:.1f}")
    ax.axhline(baseline, color="r", ls=":", label=f"one-at-a-time baseline {baseline:.1f}")
    ax.set(xscale="log", xlabel="concurrent requests", ylabel="audio seconds / second", title="Throughput")
    ax.set_ylim(0, max([limit, baseline, *(r.rtfx for r in rows)]) * 1.2)
    ax.set_xticks(conc, [str(c) for c in conc])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(conc, [r.pct(95) for r in rows], "o-")
    ax.set(xscale="log", xlabel="concurrent requests", ylabel="p95 latency (s)", title="p95 latency")
    ax.set_ylim(0, max(r.pct(95) for r in rows) * 1.2)
    ax.set_xticks(conc, [str(c) for c in conc])
    ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    fig.savefig(out / "p95_latency.png", dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "large"], default="tiny")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    p.add_argument("--workload-s", type=float, default=None, help="audio seconds per concurrency level")
    p.add_argument("--max-concurrency", type=int, default=32)
    p.add_argument(
        "--levels",
        type=int,
        nargs="*",
        help="concurrency levels (default 1, 2, 4, ... until throughput stops growing)",
    )
    p.add_argument("--skip-direct", action="store_true", help="served graph only (for quick iterations)")
    p.add_argument("--asr-replicas", type=int, default=1)
    p.add_argument("--gpu-per-replica", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-batch-audio-s", type=float, default=480)
    p.add_argument("--batch-wait-s", type=float, default=0.01)
    p.add_argument(
        "--min-fill",
        type=float,
        default=None,
        help="ASR sub-batch padding efficiency (default: the deployment's)",
    )
    args = p.parse_args()
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    workload_s = args.workload_s or (420.0 if args.model == "large" else 900.0)

    gpu = GpuProbe.visible()
    device = "cuda" if gpu.name else "cpu"
    machine = gpu.name or f"CPU, {os.cpu_count()} cores"
    print(
        f"bench: model={args.model} machine={machine} workload={workload_s:.0f} audio-s per level", flush=True
    )
    model = model_dir(args.model)
    clips = build_clip_mix(ROOT / ".cache" / "clips")
    chosen = workload(clips, workload_s)
    payloads = [(c.path.read_bytes(), c.duration_s) for c in chosen]
    decoder = FfmpegDecoder(max_audio_s=4 * 3600)
    audios = [decoder.decode(d) for d, _ in payloads]
    ten_s = next(c.path.read_bytes() for c in clips if abs(c.duration_s - 10) < 1)

    if args.skip_direct:
        served(model, payloads, ten_s, args, gpu)
        return
    batches = [1, 4, 8, 16] + ([32, 64] if gpu.name else [])
    d = direct(model, audios, decoder.decode(ten_s), device, args.threads, batches)
    limit, baseline_row = d["limit"], d["baseline"]
    print(
        f"  limit   rtfx={limit:7.1f} (best batch {d['best_batch']}; by batch { ({k: round(v, 1) for k, v in d['limit_by_batch'].items()}) })"
    )
    print(
        f"  baseline rtfx={baseline_row.rtfx:6.1f} (AutoModel.generate per request); engine batch 1: {d['engine_one_at_a_time'].rtfx:.1f}",
        flush=True,
    )
    import gc

    gc.collect()
    s = served(model, payloads, ten_s, args, gpu)
    rows: list[Row] = [baseline_row, d["engine_one_at_a_time"], *s["rows"]]
    best = max(s["rows"], key=lambda r: r.rtfx)

    out = args.out / f"{args.model}-{'gpu' if gpu.name else 'cpu'}"
    out.mkdir(parents=True, exist_ok=True)
    print()
    print(
        f"machine: {machine}; model: {args.model} ({model.name}); clip mix {sorted({c.duration_s for c in chosen})} s; "
        f"{len(chosen)} requests, {sum(c.duration_s for c in chosen):.0f} audio-s per level"
    )
    print(
        f"limit (in-process VAD + batched ASR, best of batch sizes in arrival and length order: {d['best_batch']}): {limit:.1f} audio-s/s"
    )
    print("  by batch: " + ", ".join(f"{k}: {v:.1f}" for k, v in d["limit_by_batch"].items()))
    print(table(rows, limit, baseline_row.rtfx))
    print(
        f"lone 10 s request p50: served {s['lone_10s_served_s']:.3f} s, direct {d['lone_10s_direct_s']:.3f} s "
        f"(ratio {s['lone_10s_served_s'] / d['lone_10s_direct_s']:.2f})"
    )
    report = {
        "machine": machine,
        "model": args.model,
        "limit": limit,
        "limit_by_batch": d["limit_by_batch"],
        "baseline": baseline_row.rtfx,
        "rows": [
            {**asdict(r), "rtfx": r.rtfx, "p50": r.pct(50), "p95": r.pct(95), "p99": r.pct(99)} for r in rows
        ],
        "lone_10s_served_s": s["lone_10s_served_s"],
        "lone_10s_direct_s": d["lone_10s_direct_s"],
        "served_over_limit": best.rtfx / limit,
        "served_over_baseline": best.rtfx / baseline_row.rtfx,
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    plots(s["rows"], limit, baseline_row.rtfx, out)
    print(f"wrote {out}/bench.json, throughput.png, p95_latency.png")
    print(
        f"bench: served/limit={best.rtfx / limit:.2f} served/baseline={best.rtfx / baseline_row.rtfx:.2f} rtfx={best.rtfx:.1f}"
    )


if __name__ == "__main__":
    main()
