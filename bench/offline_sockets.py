"""Ingress memory under offline-mode FunASR sockets: N sockets each send M minutes of 16 kHz
PCM as fast as they can (FunASR's client paces offline frames ~1 ms apart; this sends with no
pause at all), then disconnect without waiting for a transcript.

    python -m bench.offline_sockets                          # 20 sockets × 30 min (the issue's case)
    python -m bench.offline_sockets --minutes 3              # a quick look
    python -m bench.offline_sockets --code /tmp/old          # serve_app from another checkout

``deploy/local.yaml`` is served as shipped (``--code``: that checkout's YAML and ``serve_app``;
Ray starts in that directory, so its replicas import it). Reported: the resident memory of the
serving processes (the app's Ingress replica and the HTTP proxy, found by their Ray process
titles) before the sockets open, at its peak while they send (sampled every 0.2 s), and
``--settle-s`` after the Ingress went idle (it reads queued frames on after a fast client is
done); how each socket ended (``sent``: all of its audio went
out and the client closed; otherwise the server's close code and reason, ``1006`` when the
connection broke without one) and how much audio it had sent by then.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from tools.local_serve import ROOT, LocalServe, app_config

APP = "offline"


@dataclass
class Ending:
    """How one socket ended."""

    how: str
    """``sent`` (all audio out, closed by the client), or the server's close code."""
    reason: str
    sent_s: float
    """Audio seconds sent before the end."""


ROLES = ("ingress", "proxy")


def serving_processes(app: str) -> dict[str, list[psutil.Process]]:
    """The app's Ingress replica and the HTTP proxy (Ray names them in the process title)."""
    found: dict[str, list[psutil.Process]] = {role: [] for role in ROLES}
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if f"ServeReplica:{app}:Ingress" in cmd:
            found["ingress"].append(p)
        elif "ProxyActor" in cmd:
            found["proxy"].append(p)
    return found


def rss_mb(procs: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """Resident MiB per role, and ``total``."""
    out: dict[str, float] = {}
    for role, group in procs.items():
        rss = 0
        for p in group:
            with contextlib.suppress(psutil.NoSuchProcess):
                rss += p.memory_info().rss
        out[role] = rss / 2**20
    out["total"] = sum(out.values())
    return out


class Sampler:
    """The peak of each ``rss_mb`` figure while it runs, sampled in a thread."""

    def __init__(self, procs: dict[str, list[psutil.Process]], every_s: float = 0.2) -> None:
        self.procs, self.every_s = procs, every_s
        self.peak = rss_mb(procs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            now = rss_mb(self.procs)
            self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_idle(procs: list[psutil.Process], timeout_s: float = 600) -> float:
    """Wait until the Ingress has read everything queued for it (a fast sender is ahead of the
    server: its frames wait in the proxy and the replica): two quiet seconds in a row (< 5 %
    CPU). Returns the seconds waited."""
    t0 = time.perf_counter()
    quiet = 0
    for p in procs:
        p.cpu_percent(None)
    while quiet < 2 and time.perf_counter() - t0 < timeout_s:
        time.sleep(1.0)
        busy = sum(p.cpu_percent(None) for p in procs)
        quiet = quiet + 1 if busy < 5 else 0
    return time.perf_counter() - t0


def config_message() -> str:
    """FunASR's first message in offline mode, as its official client sends it."""
    return json.dumps(
        {
            "mode": "offline",
            "chunk_size": [5, 10, 5],
            "chunk_interval": 10,
            "encoder_chunk_look_back": 4,
            "decoder_chunk_look_back": 0,
            "audio_fs": 16000,
            "wav_name": "bench",
            "wav_format": "pcm",
            "is_speaking": True,
            "hotwords": "",
            "itn": True,
        }
    )


async def one_socket(
    url: str, minutes: float, frame_ms: int, sent_all: asyncio.Event, read: asyncio.Event
) -> Ending:
    """Send it all (then set ``sent_all``), hold the socket (sending nothing) until the server
    closes it or has read everything (``read``), and disconnect: how the server ended it."""
    import numpy as np
    import websockets
    from websockets.typing import Subprotocol

    rng = np.random.default_rng(0)
    # Low noise rather than zeros: nothing downstream may treat the stream as empty.
    frame = rng.normal(0, 300, 16 * frame_ms).astype("<i2").tobytes()
    frames = round(minutes * 60_000 / frame_ms)
    sent = 0
    try:
        async with websockets.connect(
            url, subprotocols=[Subprotocol("binary")], ping_interval=None, open_timeout=60, close_timeout=5
        ) as ws:
            await ws.send(config_message())
            try:
                for _ in range(frames):
                    await ws.send(frame)
                    sent += 1
            finally:
                sent_all.set()
            closed = asyncio.ensure_future(ws.wait_closed())
            await asyncio.wait(
                [closed, asyncio.ensure_future(read.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            if closed.done():  # the server ended it (1006: without a close frame)
                return Ending(str(ws.close_code or 1006), ws.close_reason or "", sent * frame_ms / 1000)
        return Ending("sent", "", sent * frame_ms / 1000)
    except websockets.ConnectionClosed as e:
        code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (1006, "no close frame")
        return Ending(str(code), reason, sent * frame_ms / 1000)
    except OSError as e:  # refused or reset before a close
        return Ending("error", f"{type(e).__name__}: {e}", sent * frame_ms / 1000)
    finally:
        sent_all.set()


async def all_sockets(
    url: str, n: int, minutes: float, frame_ms: int, ingress: list[psutil.Process] | None = None
) -> tuple[list[Ending], float, float]:
    """The endings of ``n`` sockets, the seconds the clients took to send, and the seconds the
    Ingress read on after that (``ingress``: its processes, watched until idle)."""
    read = asyncio.Event()
    sent = [asyncio.Event() for _ in range(n)]
    t0 = time.perf_counter()
    senders = asyncio.gather(*(one_socket(url, minutes, frame_ms, e, read) for e in sent))
    await asyncio.gather(*(e.wait() for e in sent))
    wall = time.perf_counter() - t0
    drained = await asyncio.to_thread(wait_idle, ingress) if ingress else 0.0
    read.set()
    return list(await senders), wall, drained


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sockets", type=int, default=20)
    p.add_argument("--minutes", type=float, default=30.0, help="audio per socket")
    p.add_argument("--frame-ms", type=int, default=60, help="audio per binary frame (FunASR's client: 60)")
    p.add_argument(
        "--settle-s", type=float, default=5.0, help="wait once the Ingress is idle, before 'after'"
    )
    p.add_argument(
        "--code", default=None, help="serve serve_app from this checkout (before/after): Ray starts there"
    )
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "offline_sockets")
    args = p.parse_args()

    code_root = Path(args.code).resolve() if args.code else ROOT
    # Ray puts the driver's current directory first on every worker's sys.path: started from
    # another checkout, the replicas import its serve_app (this process keeps its own).
    with contextlib.chdir(code_root):
        cluster = LocalServe.start(num_cpus=8, object_store_mb=300)
    try:
        base = cluster.deploy(app_config("local.yaml", APP, root=code_root), timeout_s=600)
        url = "ws" + base[4:] + "/"
        procs = serving_processes(APP)
        assert all(procs.values()), f"no Ingress or proxy process found: {procs}"
        asyncio.run(all_sockets(url, 1, 0.05, args.frame_ms))  # warm up the route
        time.sleep(2)
        before = rss_mb(procs)
        print(
            f"bench-offline-sockets: {args.sockets} offline sockets × {args.minutes:g} min of 16 kHz PCM in "
            f"{args.frame_ms} ms frames, serve_app from {code_root}",
            flush=True,
        )
        with Sampler(procs) as sampler:
            endings, wall, drained = asyncio.run(
                all_sockets(url, args.sockets, args.minutes, args.frame_ms, procs["ingress"])
            )
            time.sleep(args.settle_s)
        after = rss_mb(procs)
    finally:
        cluster.stop()
    counts = collections.Counter(e.how for e in endings)
    reasons = collections.Counter(f"{e.how} {e.reason}".strip() for e in endings if e.how != "sent")
    result: dict[str, Any] = {
        "code": str(code_root),
        "sockets": args.sockets,
        "minutes": args.minutes,
        "frame_ms": args.frame_ms,
        "wall_s": wall,
        "drain_s": drained,
        "rss_before_mb": before,
        "rss_peak_mb": sampler.peak,
        "rss_after_mb": after,
        "endings": dict(counts),
        "reasons": dict(reasons),
        "sockets_detail": [asdict(e) for e in endings],
    }
    print(f"  sending took {wall:.0f} s; the Ingress read on for {drained:.0f} s more")
    print(f"  {'RSS MiB':<8} {'before':>8} {'peak':>14} {'after':>14}")
    for role in (*ROLES, "total"):
        b, pk, a = before[role], sampler.peak[role], after[role]
        print(f"  {role:<8} {b:8.0f} {pk:8.0f} ({pk - b:+5.0f}) {a:8.0f} ({a - b:+5.0f})")
    print(f"  endings: {dict(counts)}")
    for reason, n in reasons.most_common():
        print(f"    {n} × {reason}")
    sent_s = sorted(e.sent_s for e in endings)
    print(f"  audio sent per socket: min {sent_s[0]:.0f} s, max {sent_s[-1]:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "old" if args.code else "new"
    (args.out / f"{name}-{args.sockets}x{args.minutes:g}min.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
