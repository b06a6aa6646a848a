"""Capacity benchmark of the FunASR path: the model's limit, the simple serving pattern, and the
served graph, on the same model, machine and audio.

    python -m bench.run --model tiny          # quick check (make bench)
    python -m bench.run --model large         # paraformer-large-sized random weights (make bench-full)

What the figures mean (frozen; the README quotes them):

* **limit**: the best in-process arrangement found for the same model and audio: FSMN-VAD and
  the ASR engine called directly, no serving, over batch sizes, thread shapes (one pass of two
  threads, or two passes of one thread at once) and VAD run before or beside ASR. Reported in
  **arrival order** (batches formed as segments arrive: what a server can reach online) and as
  the **length-sorted oracle** (every segment of the workload known and sorted first: what no
  online server can do). An exploration pass picks the best arrangement of each kind.
* **baseline**: ``AutoModel.generate`` per request (VAD inside), one request at a time: what the
  simple FunASR servers do.
* **served**: the Ray Serve graph (``deploy/local-funasr.yaml`` with this model) over HTTP at the
  given concurrency levels.

Each figure is the median of ``--rounds`` interleaved rounds (limit, oracle, baseline, served
c=1, c=2, ..., then again), printed with its spread. The last line is
``bench: served/limit=… served/baseline=… rtfx=…`` (medians; limit = arrival-order limit).
A ratio whose rounds (round ``i``'s over round ``i``'s) spread by more than 25 %
(``max / min - 1``) is marked "noisy" there and in the table.

Beside the throughput table, for each served run (``bench.accounting``): CPU seconds per audio
second of every process group of the cluster (each stage's replicas, the HTTP proxy, the Serve
controller, Ray's daemons, the client), the ASR batch loops' time (busy, idle with nothing
queued, idle waiting for a batch to fill), and the median time a request spends in and between
the stages.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import accounting
from bench.accounting import Accounting
from bench.common import Figure, Run, interleave, served_run
from load.clips import Clip, build_clip_mix
from serve_app.contracts import AsrOptions, DecodedAudio, SpeechSegment
from serve_app.engines.decode import FfmpegDecoder
from serve_app.gpu import GpuProbe

ROOT = Path(__file__).resolve().parents[1]


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


# --- in-process: limit and baseline ------------------------------------------------------


@dataclass(frozen=True)
class Arrangement:
    """One way to run VAD + ASR in process."""

    batch: int
    workers: int
    """ASR passes at once (each on ``threads // workers`` threads)."""
    pipelined: bool
    """VAD in its own thread, feeding ASR as it goes (else all VAD first)."""
    sorted: bool = False
    """The oracle: all segments known and sorted by length before any batch."""

    def label(self) -> str:
        shape = f"{self.workers}×{2 // self.workers if self.workers <= 2 else 1} threads"
        order = "length-sorted (oracle)" if self.sorted else "arrival order"
        vad = "VAD beside ASR" if self.pipelined else "VAD first"
        return f"limit: batches of {self.batch}, {order}, {shape}, {vad}"


class InProcess:
    def __init__(self, model: Path, audios: list[DecodedAudio], device: str, threads: int) -> None:
        from serve_app.engines.funasr_asr import FunasrAsr
        from serve_app.engines.vad import FsmnVad
        from serve_app.model_paths import resolve

        self.audios = audios
        self.total = sum(a.duration_s for a in audios)
        self.vad = FsmnVad(resolve("embedded:fsmn-vad"), max_segment_s=30, threads=1)
        self.engines = {w: FunasrAsr(model, device=device, threads=threads, workers=w) for w in (1, 2)}
        warm = [np.zeros(16000, np.float32)] * 2
        for e in self.engines.values():
            e.transcribe_batch(warm, [AsrOptions()] * 2)
        self.model, self.device, self.threads = model, device, threads
        self._automodel: Any = None

    def _segments(self, pipelined: bool) -> Iterator[SpeechSegment]:
        if not pipelined:
            yield from [s for a in self.audios for s in self.vad.segment(a)]
            return
        q: queue.Queue[SpeechSegment | None] = queue.Queue()

        def produce() -> None:
            for a in self.audios:
                for s in self.vad.segment(a):
                    q.put(s)
            q.put(None)

        threading.Thread(target=produce, daemon=True).start()
        while (s := q.get()) is not None:
            yield s

    def limit(self, a: Arrangement) -> Run:
        engine = self.engines[a.workers]
        t0 = time.perf_counter()
        segs = self._segments(a.pipelined and not a.sorted)
        if a.sorted:
            segs = iter(sorted(segs, key=lambda s: len(s.samples)))

        def batches() -> Iterator[list[np.ndarray]]:
            batch: list[np.ndarray] = []
            for s in segs:
                batch.append(s.samples)
                if len(batch) == a.batch:
                    yield batch
                    batch = []
            if batch:
                yield batch

        with ThreadPoolExecutor(a.workers) as pool:
            list(pool.map(lambda b: engine.transcribe_batch(b, [AsrOptions()] * len(b)), batches()))
        return Run(self.total, time.perf_counter() - t0)

    def baseline(self) -> Run:
        """``AutoModel.generate`` with the VAD inside, one request at a time."""
        from funasr import AutoModel

        from serve_app.model_paths import resolve

        if self._automodel is None:
            self._automodel = AutoModel(
                model=str(self.model),
                vad_model=str(resolve("embedded:fsmn-vad")),
                vad_kwargs={"max_single_segment_time": 30000},
                device=self.device,
                ncpu=self.threads,
                disable_update=True,
                disable_pbar=True,
                log_level="ERROR",
            )
            self._automodel.generate(input=np.zeros(16000, np.float32), batch_size_s=0)
        lat, t0 = [], time.perf_counter()
        for audio in self.audios:
            t = time.perf_counter()
            self._automodel.generate(input=audio.samples, batch_size_s=0)  # one segment per pass
            lat.append(time.perf_counter() - t)
        return Run(self.total, time.perf_counter() - t0, lat)

    def lone(self, audio: DecodedAudio, a: Arrangement) -> float:
        t = time.perf_counter()
        segs = self.vad.segment(audio)
        self.engines[a.workers].transcribe_batch([s.samples for s in segs], [AsrOptions()] * len(segs))
        return time.perf_counter() - t


def explore(
    proc: InProcess, batches: list[int], passes: int = 2
) -> tuple[Arrangement, Arrangement, dict[str, float]]:
    """Every arrangement ``passes`` times, interleaved; the best in arrival order and the best
    length-sorted oracle by their mean (one run of each misleads: runs vary by 10-20 %)."""
    arrangements = [
        a
        for b in batches
        for w in (1, 2)
        for a in (Arrangement(b, w, False), Arrangement(b, w, True), Arrangement(b, w, False, sorted=True))
    ]
    runs: dict[Arrangement, list[float]] = {a: [] for a in arrangements}
    for p in range(passes):
        for a in arrangements:
            runs[a].append(proc.limit(a).rtfx)
            print(f"  explore {p + 1}/{passes} {a.label():<80} {runs[a][-1]:6.1f}", flush=True)
    tried = {a: statistics.mean(v) for a, v in runs.items()}
    arrival = max((a for a in tried if not a.sorted), key=tried.__getitem__)
    oracle = max((a for a in tried if a.sorted), key=tried.__getitem__)
    return arrival, oracle, {a.label(): v for a, v in tried.items()}


# --- served ------------------------------------------------------------------------------


def deploy_served(model: Path, args: argparse.Namespace, gpu: GpuProbe) -> tuple[Any, dict[int, str]]:
    """One app per ASR worker count asked for (``--asr-workers 1 2``): the shapes are measured
    in the same rounds. Returns the cluster and each shape's URL."""
    from tools.local_serve import LocalServe, app_config

    cluster = LocalServe.start(
        num_cpus=max(8, os.cpu_count() or 2), num_gpus=1 if gpu.name else None, object_store_mb=1000
    )
    base = next(d for d in app_config("local-funasr.yaml", "x")["deployments"] if d["name"] == "ASR")
    user_config: dict[str, Any] = dict(base.get("user_config", {}))
    if args.max_batch:
        user_config["max_batch_count"] = args.max_batch
    if args.batch_wait_s is not None:
        user_config["batch_wait_timeout_s"] = args.batch_wait_s
    if args.min_fill is not None:
        user_config["min_fill"] = args.min_fill
    asr_deployment: dict[str, Any] = {"num_replicas": args.asr_replicas, "user_config": user_config}
    if gpu.name:
        asr_deployment["ray_actor_options"] = {"num_cpus": 1, "num_gpus": args.gpu_per_replica}
    urls = {}
    for workers in args.asr_workers:
        asr = {"model": str(model), "device": "auto", "threads": args.threads, "workers": workers}
        app = app_config(
            "local-funasr.yaml",
            f"bench-w{workers}",
            args={"asr": asr, "postprocess": {"punc_model": None, "itn": False}},
            deployments={"ASR": asr_deployment},
        )
        urls[workers] = cluster.deploy(app, timeout_s=900)
    return cluster, urls


def served_stats(app: str) -> dict[str, Any]:
    from ray import serve

    return dict(serve.get_deployment_handle("ASR", app_name=app).stats.remote().result())


def stage_spans(app: str, since: float) -> list[tuple[str, str, float, float]]:
    """The stages' spans (``serve_app.deployments.timing``) that ended after ``since``: one
    replica of each stage answers (the benchmark runs one of each unless ``--asr-replicas``)."""
    from ray import serve

    return [
        tuple(s)
        for name in ("Decode", "VAD", "ASR", "Postprocess")
        for s in serve.get_deployment_handle(name, app_name=app).timings.remote(since).result()
    ]


def measure_served(app: str, url: str, payloads: list[tuple[bytes, float]], c: int) -> Run:
    from ray import serve

    serve.get_deployment_handle("ASR", app_name=app).reset_stats.remote().result()
    stats0 = served_stats(app)
    before = accounting.sample(accounting.discover(app))
    run = served_run(url, payloads, c)
    end = accounting.after(before, app)
    stats = served_stats(app)
    spans = stage_spans(app, before.t)
    stamps = accounting.request_stamps(run.requests, spans)
    waits = accounting.segment_queue_waits(spans, set(stamps))
    run.extra = {
        "mean_batch": stats["mean_batch_size"],
        "asr_busy": stats["busy_s"] / stats["parallelism"] / run.wall_s,
        "accounting": Accounting(
            audio_s=run.audio_s,
            wall_s=run.wall_s,
            cpu=accounting.usage(before, end),
            loops=accounting.loop_shares(stats0, stats),
            gaps=accounting.gap_medians(stamps),
            queue_wait_p50_s=statistics.median(waits) if waits else None,
        ),
    }
    return run


def accounting_tables(figures: dict[str, Figure]) -> tuple[str, dict[str, Any]]:
    """The accounting tables of the served figures, and their medians for the JSON summary."""
    columns = {
        f.name.removeprefix("served graph over HTTP, "): [r.extra["accounting"] for r in f.runs]
        for f in figures.values()
        if f.runs and "accounting" in f.runs[0].extra
    }
    medians = {
        c: {
            "cpu_s_per_audio_s": accounting.median_of([a.cpu_per_audio_s() for a in runs]),
            "asr_loops": accounting.median_of([a.loops for a in runs]),
            "stage_gaps_s": accounting.median_of([a.gaps for a in runs]),
        }
        for c, runs in columns.items()
    }
    return accounting.tables(columns), medians


def ratio_cell(f: Figure, ref: Figure) -> tuple[str, list[float]]:
    """``f``'s median over ``ref``'s, "noisy" when its rounds disagree (``bench.accounting``)."""
    rounds = accounting.round_ratios([r.rtfx for r in f.runs], [r.rtfx for r in ref.runs])
    mark = " noisy" if accounting.noisy(rounds) else ""
    return f"{f.median() / ref.median():.2f}{mark}", rounds


def json_extra(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: v.as_json() if isinstance(v, Accounting) else v for k, v in extra.items()}


# --- report ------------------------------------------------------------------------------


def report(figures: dict[str, Figure], limit_name: str, oracle_name: str, base_name: str) -> dict[str, Any]:
    limit, base = figures[limit_name].median(), figures[base_name].median()
    ratios: dict[str, dict[str, list[float]]] = {}
    print()
    print(
        "| run | audio-s/s, median (min–max) | p50 s | p95 s | mean batch | ASR busy | /limit | /baseline |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for f in figures.values():
        lat = f.runs[0].latencies_s
        p50 = f"{f.median(lambda r: r.pct(50)):.2f}" if lat else ""
        p95 = f"{f.median(lambda r: r.pct(95)):.2f}" if lat else ""
        batch = f"{f.median(lambda r: r.extra['mean_batch']):.1f}" if "mean_batch" in f.runs[0].extra else ""
        busy = f"{f.median(lambda r: r.extra['asr_busy']):.0%}" if "asr_busy" in f.runs[0].extra else ""
        over_limit, limit_rounds = ratio_cell(f, figures[limit_name])
        over_base, base_rounds = ratio_cell(f, figures[base_name])
        ratios[f.name] = {"over_limit": limit_rounds, "over_baseline": base_rounds}
        print(f"| {f.name} | {f.cell()} | {p50} | {p95} | {batch} | {busy} | {over_limit} | {over_base} |")
    served = [f for n, f in figures.items() if n.startswith("served")]
    best = max(served, key=lambda f: f.median())
    table, medians = accounting_tables(figures)
    print()
    print(table)
    return {
        "limit": limit,
        "oracle": figures[oracle_name].median(),
        "baseline": base,
        "best_served": best.name,
        "served": best.median(),
        "served_over_limit": best.median() / limit,
        "served_over_baseline": best.median() / base,
        "round_ratios": ratios,
        "noisy": {
            "served_over_limit": accounting.noisy(ratios[best.name]["over_limit"]),
            "served_over_baseline": accounting.noisy(ratios[best.name]["over_baseline"]),
            "rule": f"per-round ratios spread max/min - 1 > {accounting.NOISY_SPREAD}",
        },
        "accounting": medians,
        "figures": {
            n: [{"rtfx": r.rtfx, "p50": r.pct(50), "p95": r.pct(95), **json_extra(r.extra)} for r in f.runs]
            for n, f in figures.items()
        },
    }


def plots(figures: dict[str, Figure], summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes: dict[str, list[tuple[int, Figure]]] = {}
    for n, f in figures.items():
        if n.startswith("served"):
            shape, c = n.removeprefix("served graph over HTTP, ").rsplit(", c=", 1)
            shapes.setdefault(shape, []).append((int(c), f))
    fig, ax = plt.subplots(figsize=(6, 4))
    for shape, served in shapes.items():
        ax.errorbar(
            [c for c, _ in served],
            [f.median() for _, f in served],
            yerr=np.array([[f.median() - f.spread()[0], f.spread()[1] - f.median()] for _, f in served]).T,
            fmt="o-",
            capsize=3,
            label=f"served, {shape} (median, min–max)",
        )
    served = [x for s in shapes.values() for x in s]
    conc = sorted({c for c, _ in served})
    ax.axhline(summary["oracle"], color="g", ls="-.", label=f"oracle, length-sorted {summary['oracle']:.1f}")
    ax.axhline(summary["limit"], color="g", ls="--", label=f"limit, arrival order {summary['limit']:.1f}")
    ax.axhline(
        summary["baseline"], color="r", ls=":", label=f"baseline, one at a time {summary['baseline']:.1f}"
    )
    ax.set(xscale="log", xlabel="concurrent requests", ylabel="audio seconds / second", title="Throughput")
    ax.set_ylim(0, max(summary["oracle"], *(f.spread()[1] for _, f in served)) * 1.25)
    ax.set_xticks(conc, [str(c) for c in conc])
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    fig, ax = plt.subplots(figsize=(6, 4))
    for shape, rows in shapes.items():
        ax.plot([c for c, _ in rows], [f.median(lambda r: r.pct(95)) for _, f in rows], "o-", label=shape)
    ax.legend(fontsize=8)
    ax.set(
        xscale="log",
        xlabel="concurrent requests",
        ylabel="p95 latency (s)",
        title="p95 latency, median of rounds",
    )
    ax.set_xticks(conc, [str(c) for c in conc])
    fig.tight_layout()
    fig.savefig(out / "p95_latency.png", dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "large"], default="tiny")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    p.add_argument("--workload-s", type=float, default=None, help="audio seconds per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--levels", type=int, nargs="*", default=[1, 2, 4], help="served concurrency levels")
    p.add_argument("--batches", type=int, nargs="*", default=[8, 16, 32], help="limit: batch sizes explored")
    p.add_argument("--skip-direct", action="store_true", help="served graph only (quick iterations)")
    p.add_argument("--asr-replicas", type=int, default=1)
    p.add_argument(
        "--asr-workers",
        type=int,
        nargs="*",
        default=[2],
        help="served: asr.workers shapes, one app each (1 2: both)",
    )
    p.add_argument("--gpu-per-replica", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--max-batch", type=int, default=None, help="served: max_batch_count (default: the YAML's)"
    )
    p.add_argument("--batch-wait-s", type=float, default=None)
    p.add_argument("--min-fill", type=float, default=None)
    args = p.parse_args()
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    workload_s = args.workload_s or (420.0 if args.model == "large" else 900.0)
    gpu = GpuProbe.visible()
    device = "cuda" if gpu.name else "cpu"
    machine = gpu.name or f"CPU, {os.cpu_count()} cores"
    model = model_dir(args.model)
    clips = build_clip_mix(ROOT / ".cache" / "clips")
    chosen = workload(clips, workload_s)
    payloads = [(c.path.read_bytes(), c.duration_s) for c in chosen]
    decoder = FfmpegDecoder(max_audio_s=4 * 3600)
    audios = [decoder.decode(d) for d, _ in payloads]
    ten = next(c.path.read_bytes() for c in clips if abs(c.duration_s - 10) < 1)
    print(
        f"bench: model={args.model} ({model.name}) machine={machine}; {len(chosen)} requests, "
        f"{sum(c.duration_s for c in chosen):.0f} audio-s per run (clips {sorted({c.duration_s for c in chosen})} s); "
        f"{args.rounds} interleaved rounds",
        flush=True,
    )
    arrangements: dict[str, Callable[[], Run]] = {}
    proc: InProcess | None = None
    explored: dict[str, float] = {}
    if not args.skip_direct:
        proc = InProcess(model, audios, device, args.threads)
        arrival, oracle, explored = explore(proc, args.batches)
        limit_name, oracle_name = arrival.label(), oracle.label()
        arrangements[limit_name] = functools.partial(proc.limit, arrival)
        arrangements[oracle_name] = functools.partial(proc.limit, oracle)
        arrangements["baseline: AutoModel.generate per request, one at a time"] = proc.baseline
    cluster, urls = deploy_served(model, args, gpu)
    try:
        for w, url in urls.items():
            served_run(url, payloads[:2], 2)  # warm the HTTP path
            for c in args.levels:
                name = f"served graph over HTTP, {w}×{args.threads // w} threads, c={c}"
                arrangements[name] = functools.partial(measure_served, f"bench-w{w}", url, payloads, c)
        figures = interleave(arrangements, args.rounds)
        # A lone 10 s request: served vs the same VAD + ASR called directly (the same thread
        # shape), interleaved.
        lone_served: dict[int, list[float]] = {w: [] for w in urls}
        lone_direct: dict[int, list[float]] = {w: [] for w in urls}
        for _ in range(5):
            for w, url in urls.items():
                t = time.perf_counter()
                served_run(url, [(ten, 10.0)], 1)
                lone_served[w].append(time.perf_counter() - t)
                if proc is not None:
                    lone_direct[w].append(proc.lone(decoder.decode(ten), Arrangement(1, w, False)))
    finally:
        cluster.stop()

    out = args.out / f"{args.model}-{'gpu' if gpu.name else 'cpu'}"
    out.mkdir(parents=True, exist_ok=True)
    if args.skip_direct:
        for f in figures.values():
            print(f"{f.name}: {f.cell()} audio-s/s, p95 {f.median(lambda r: r.pct(95)):.2f} s")
        for w, lat in lone_served.items():
            print(f"lone 10 s p50, {w} worker(s): served {statistics.median(lat):.3f} s")
        table, medians = accounting_tables(figures)
        print(f"\n{table}")
        (out / "bench.json").write_text(
            json.dumps(
                {
                    "machine": machine,
                    "model": args.model,
                    "accounting": medians,
                    "figures": {
                        n: [{"rtfx": r.rtfx, **json_extra(r.extra)} for r in f.runs]
                        for n, f in figures.items()
                    },
                },
                indent=2,
                default=str,
            )
        )
        print(f"wrote {out}/bench.json")
        return
    summary = report(
        figures, limit_name, oracle_name, "baseline: AutoModel.generate per request, one at a time"
    )
    summary.update(
        machine=machine,
        model=args.model,
        explored=explored,
        lone_10s={
            w: {"served_s": statistics.median(lone_served[w]), "direct_s": statistics.median(lone_direct[w])}
            for w in urls
        },
    )
    for w, lone in summary["lone_10s"].items():
        print(
            f"lone 10 s request, {w}×{args.threads // w} threads, p50 of 5 interleaved: served {lone['served_s']:.3f} s, "
            f"direct {lone['direct_s']:.3f} s (ratio {lone['served_s'] / lone['direct_s']:.2f})"
        )
    (out / "bench.json").write_text(json.dumps(summary, indent=2, default=str))
    plots(figures, summary, out)
    print(f"wrote {out}/bench.json, throughput.png, p95_latency.png")
    noise = summary["noisy"]
    print(
        f"bench: served/limit={summary['served_over_limit']:.2f}{' noisy' if noise['served_over_limit'] else ''} "
        f"served/baseline={summary['served_over_baseline']:.2f}{' noisy' if noise['served_over_baseline'] else ''} "
        f"rtfx={summary['served']:.1f} (medians of {args.rounds} rounds; limit {summary['limit']:.1f}, "
        f"oracle {summary['oracle']:.1f}, baseline {summary['baseline']:.1f})"
    )


if __name__ == "__main__":
    main()
