"""Realtime capacity: N FunASR-protocol sessions paced at real time, with and without
cross-session batching; then churn (memory of the serving processes).

    python -m bench.realtime                          # make bench-realtime (full-size model)
    python -m bench.realtime --model tiny --sizes 1 2 --churn 40   # a quick look

Two copies of ``deploy/local-funasr.yaml`` are served side by side with the random-weight
streaming Paraformer of paraformer-large size: ``batched`` (the shipped setting: chunks of all
sessions of the replica in one forward pass) and ``one-by-one`` (``max_step_sessions: 1``, what
a server that serialises sessions does). For each N, in interleaved rounds, N sessions start
within one chunk of each other and stream ``--audio-s`` of speech (espeak, with pauses) in
60 ms frames at real time, as FunASR's client does, in ``--mode`` (2pass: FunASR's default).
Per N and setting: first partial, partial latency p50/p95 (from a chunk's last sample sent to
the partial received; see ``load/realtime.py`` for how replies are attributed), final after
end p50/p95, failed sessions, CPU of the whole machine (200 % = both cores) and of this client.
The figures are medians over rounds. A setting keeps up at N while the median p95 partial
latency is under ``--target-ms`` and no session failed; the largest such N is its capacity.

Churn (``--churn`` cycles, 8 at a time, on the batched copy): each cycle streams 3.6 s and
waits for its final, one in ten disconnects mid-utterance instead. The resident memory of the
serving processes (the Streaming and Ingress replicas, the HTTP proxy) is read after the first
tenth of the cycles (warm-up) and at the end; the growth is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.streaming_step import model_dir
from load.realtime import END_MESSAGE, FRAME_S, Mode, SessionTrace, config_message, frames, pcm16
from tools.audio import speak, with_pauses
from tools.local_serve import ROOT, LocalServe, app_config

SENTENCES = [
    "Please call me back tomorrow morning.",
    "The weather is very cold this winter.",
    "Our meeting moved to three in the afternoon.",
    "She sells sea shells by the sea shore.",
]
SETTINGS = {"batched": 64, "one-by-one": 1}
"""Setting name → ``realtime.max_step_sessions``."""


def speech(seconds: float) -> bytes:
    parts = [speak(s) for s in SENTENCES]
    audio = with_pauses(parts, pause_s=1.0)
    while len(audio) < seconds * 16000:
        audio = np.concatenate([audio, audio])
    return pcm16(audio[: int(seconds * 16000)])


async def session(
    url: str, pcm: bytes, mode: Mode, start_delay_s: float, drop_after_s: float | None = None
) -> SessionTrace:
    """One client: config, frames at real time, the end message, then wait for the
    acknowledgement. ``drop_after_s``: disconnect after that much audio instead."""
    import websockets

    trace = SessionTrace()
    await asyncio.sleep(start_delay_s)
    try:
        async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
            await ws.send(config_message(mode, "bench"))

            async def receive() -> None:
                async for message in ws:
                    if trace.receive(message, time.perf_counter()):
                        return

            reader = asyncio.create_task(receive())
            t0 = time.perf_counter()
            for i, frame in enumerate(frames(pcm)):
                if drop_after_s is not None and i * FRAME_S >= drop_after_s:
                    reader.cancel()
                    return trace
                if reader.done():
                    break
                await asyncio.sleep(max(0.0, t0 + i * FRAME_S - time.perf_counter()))
                await ws.send(frame)
                trace.send(frame, time.perf_counter())
            trace.end_sent = time.perf_counter()
            await ws.send(END_MESSAGE)
            try:
                await asyncio.wait_for(reader, timeout=120)
            except TimeoutError:
                trace.error = "no acknowledgement within 120 s"
    except Exception as e:  # a refused or broken session is a failed one
        trace.error = trace.error or f"{type(e).__name__}: {e}"
    return trace


@dataclass
class Point:
    """One run of N sessions against one setting."""

    n: int
    traces: list[SessionTrace]
    wall_s: float
    cpu_pct: float
    client_cpu_pct: float

    def _pct(self, values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) * 1000 if values else float("nan")

    @property
    def failed(self) -> int:
        return sum(not t.ok for t in self.traces)

    def figures(self) -> dict[str, float]:
        lat = [x for t in self.traces for x in t.partial_latencies_s()]
        first = [x for t in self.traces if (x := t.first_partial_s()) is not None]
        final = [x for t in self.traces if (x := t.final_after_end_s()) is not None]
        return {
            "first_partial_ms": statistics.median(first) * 1000 if first else float("nan"),
            "partial_p50_ms": self._pct(lat, 50),
            "partial_p95_ms": self._pct(lat, 95),
            "final_p50_ms": self._pct(final, 50),
            "final_p95_ms": self._pct(final, 95),
            "failed": float(self.failed),
            "cpu_pct": self.cpu_pct,
            "client_cpu_pct": self.client_cpu_pct,
        }


def run_point(url: str, n: int, pcm: bytes, mode: Mode) -> Point:
    me = psutil.Process()
    psutil.cpu_percent(None)
    me.cpu_percent(None)
    t0 = time.perf_counter()
    starts = [random.uniform(0, 0.6) for _ in range(n)]

    async def all_sessions() -> list[SessionTrace]:
        return list(await asyncio.gather(*(session(url, pcm, mode, s) for s in starts)))

    traces = asyncio.run(all_sessions())
    return Point(n, traces, time.perf_counter() - t0, psutil.cpu_percent(None) * 2, me.cpu_percent(None))


def serving_rss_mb(app: str) -> float:
    """Resident memory of the processes that hold sessions: the app's Streaming and Ingress
    replicas and the HTTP proxy (Ray names them in the process title)."""
    total = 0
    for p in psutil.process_iter(["cmdline", "memory_info"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if (
            f"ServeReplica:{app}:Streaming" in cmd
            or f"ServeReplica:{app}:Ingress" in cmd
            or "ProxyActor" in cmd
        ):
            total += p.info["memory_info"].rss
    return total / 2**20


def churn(url: str, app: str, cycles: int, mode: Mode) -> dict[str, Any]:
    pcm = speech(3.6)
    done = failed = dropped = 0
    warm_rss: float | None = None
    warm_at = max(1, cycles // 10)
    lock = asyncio.Lock()

    async def worker(ids: list[int]) -> None:
        nonlocal done, failed, dropped, warm_rss
        for i in ids:
            drop = 1.5 if i % 10 == 9 else None
            trace = await session(url, pcm, mode, 0.0, drop_after_s=drop)
            async with lock:
                done += 1
                if drop is not None:
                    dropped += 1
                elif not trace.ok:
                    failed += 1
                if done == warm_at:
                    await asyncio.sleep(2)  # let the dropped sessions' state go
                    warm_rss = serving_rss_mb(app)
                if done % 100 == 0:
                    print(
                        f"  churn {done}/{cycles}: {failed} failed, rss {serving_rss_mb(app):.0f} MB",
                        flush=True,
                    )

    async def main() -> None:
        await asyncio.gather(*(worker(list(range(k, cycles, 8))) for k in range(8)))

    t0 = time.perf_counter()
    asyncio.run(main())
    time.sleep(5)  # idle: dropped sessions time out or are closed
    end_rss = serving_rss_mb(app)
    return {
        "cycles": cycles,
        "dropped_on_purpose": dropped,
        "failed": failed,
        "wall_s": time.perf_counter() - t0,
        "rss_after_warmup_mb": warm_rss,
        "rss_end_mb": end_rss,
        "rss_growth_mb": None if warm_rss is None else end_rss - warm_rss,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["large", "tiny"], default="large")
    p.add_argument("--sizes", type=int, nargs="*", default=[1, 2, 3, 4, 6, 8], help="none: churn only")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--audio-s", type=float, default=20.0)
    p.add_argument("--mode", choices=["2pass", "online"], default="2pass")
    p.add_argument("--target-ms", type=float, default=600.0)
    p.add_argument("--churn", type=int, default=1000, help="churn cycles (0: none)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "realtime")
    args = p.parse_args()

    from tools.tiny_models import write_tiny_models

    tiny = write_tiny_models(ROOT / "models" / "tiny")
    streaming = model_dir("large") if args.model == "large" else tiny["paraformer-streaming-tiny"]
    base_args = {
        "asr": {"engine": "funasr", "model": str(tiny["paraformer-tiny"]), "language": "zh"},
        "postprocess": {"punc_model": str(tiny["ct-punc-tiny"]), "itn": True, "itn_language": "zh"},
    }
    cluster = LocalServe.start(num_cpus=8, object_store_mb=500)
    results: dict[str, Any] = {"model": args.model, "mode": args.mode, "cpus": os.cpu_count(), "sizes": {}}
    try:
        urls = {}
        for name, max_step in SETTINGS.items():
            app_name = "rt" + ("b" if max_step > 1 else "1")
            app = app_config(
                "local-funasr.yaml",
                app_name,
                args={
                    **base_args,
                    "realtime": {"streaming_model": str(streaming), "max_step_sessions": max_step},
                },
            )
            urls[name] = "ws" + cluster.deploy(app, timeout_s=600)[4:] + "/"
        pcm = speech(args.audio_s)
        for url in urls.values():
            run_point(url, 1, speech(4.0), args.mode)  # warm up
        print(
            f"bench-realtime: {args.model} streaming Paraformer, {args.mode}, {args.audio_s:.0f} s per session, "
            f"{args.rounds} rounds, target p95 partial < {args.target_ms:.0f} ms",
            flush=True,
        )
        keeps_up = {name: True for name in SETTINGS}
        for n in args.sizes:
            live = [name for name in SETTINGS if keeps_up[name]]
            if not live:
                break
            points: dict[str, list[Point]] = {name: [] for name in live}
            for r in range(args.rounds):
                for name in live:
                    point = run_point(urls[name], n, pcm, args.mode)
                    points[name].append(point)
                    f = point.figures()
                    print(
                        f"  round {r + 1} N={n:<3} {name:<11} p95 {f['partial_p95_ms']:6.0f} ms, "
                        f"failed {point.failed}, cpu {f['cpu_pct']:.0f} %",
                        flush=True,
                    )
            for name in live:
                rows = [pt.figures() for pt in points[name]]
                median = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
                results["sizes"].setdefault(str(n), {})[name] = median
                keeps_up[name] = median["partial_p95_ms"] < args.target_ms and median["failed"] == 0
        capacity = {
            name: max(
                (
                    int(n)
                    for n, row in results["sizes"].items()
                    if name in row and _ok(row[name], args.target_ms)
                ),
                default=0,
            )
            for name in SETTINGS
        }
        results["capacity"] = capacity
        if args.sizes:
            report(results, args.target_ms)
        if args.churn:
            print(f"churn: {args.churn} cycles, 8 at a time, one in ten dropped mid-utterance", flush=True)
            results["churn"] = churn(urls["batched"], "rtb", args.churn, args.mode)
            c = results["churn"]
            print(
                f"churn: {c['failed']} failed of {c['cycles'] - c['dropped_on_purpose']} completed cycles, "
                f"{c['wall_s']:.0f} s; serving RSS {c['rss_after_warmup_mb']:.0f} MB after warm-up → "
                f"{c['rss_end_mb']:.0f} MB at the end: growth {c['rss_growth_mb']:+.1f} MB (target ≤ 20)",
                flush=True,
            )
    finally:
        cluster.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"bench-{args.model}.json").write_text(json.dumps(results, indent=2))


def _ok(row: dict[str, float], target_ms: float) -> bool:
    return row["partial_p95_ms"] < target_ms and row["failed"] == 0


def report(results: dict[str, Any], target_ms: float) -> None:
    cols = [
        "first_partial_ms",
        "partial_p50_ms",
        "partial_p95_ms",
        "final_p50_ms",
        "final_p95_ms",
        "failed",
        "cpu_pct",
    ]
    print()
    print(f"{'N':>3} {'setting':<11} " + " ".join(f"{c:>16}" for c in cols))
    for n, rows in results["sizes"].items():
        for name, row in rows.items():
            print(f"{n:>3} {name:<11} " + " ".join(f"{row[c]:16.0f}" for c in cols))
    cap = results["capacity"]
    ratio = cap["batched"] / cap["one-by-one"] if cap["one-by-one"] else float("inf")
    print(
        f"\nsessions kept under p95 {target_ms:.0f} ms: batched {cap['batched']}, one-by-one {cap['one-by-one']} "
        f"({ratio:.2f}×; targets ≥ 1.5× and ≥ 4)",
        flush=True,
    )


if __name__ == "__main__":
    main()
