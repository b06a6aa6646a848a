"""Capacity run: a step load with Locust, then ``report.md`` and plots from its CSVs.

    python -m load.capacity --host http://127.0.0.1:8000 --max-users 16 --step-users 2 \
        --step-time 30 --out results/load

Builds the clip mix first (so synthesis is not timed), checks the server is ready, runs
``locust --headless -f load/locustfile.py,load/shapes.py --csv <out>/locust --csv-full-history``
in a child process (Locust monkey-patches its process with gevent; this one stays plain), then
calls ``load.report``. ``python -m load.report <out>`` re-renders the report from the CSVs.

``--user-classes`` picks the clients (``load/locustfile.py``): file uploads alone by default, so
the throughput and knee figures mean what they always have; add ``RealtimeUser`` and
``BatchJobUser`` to share each step's users between the kinds (equal weights) and get their
tables in the report too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from load import report
from load.clips import CACHE_DIR_ENV, DEFAULT_CACHE_DIR, build_clip_mix, mean_clip_s
from load.hosts import DEFAULT_HOST, RemoteHostRefused, check_host
from load.plan import StepPlan

LOAD_DIR = Path(__file__).resolve().parent
DEFAULT_MAX_DURATION_S = 300.0
USER_CLASSES = ("FileTranscriptionUser", "RealtimeUser", "BatchJobUser")
SHUTDOWN_GRACE_S = 120.0
"""Time on top of the plan for Locust to start and stop before the child is killed."""


def _gpu_name() -> str | None:
    """The load host's NVIDIA GPUs, or None. The server is on loopback, so this is its GPU too."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None
    return "; ".join(line.strip() for line in out.splitlines() if line.strip()) or None


def _wait_ready(host: str) -> None:
    """Fail fast with a clear message rather than record a run of connection errors."""
    url = host.rstrip("/") + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            if resp.status == 200:
                return
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"server at {host} is not ready ({url}: {e}); start it with `make run`") from None
    raise SystemExit(f"server at {host} is not ready ({url})")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Step-load the server with Locust and write a capacity report.")
    p.add_argument("--host", default=DEFAULT_HOST, help="loopback only unless FUNASR_LOAD_ALLOW_REMOTE=1")
    p.add_argument("--max-users", type=int, default=16, help="users in the last step")
    p.add_argument(
        "--step-users", type=int, default=2, help="users added per step after 1; 0 doubles (1, 2, 4, ...)"
    )
    p.add_argument("--step-time", type=float, default=30.0, help="seconds per step")
    p.add_argument(
        "--max-duration",
        type=float,
        default=DEFAULT_MAX_DURATION_S,
        help="refuse plans longer than this, seconds",
    )
    p.add_argument(
        "--user-classes",
        nargs="+",
        choices=USER_CLASSES,
        default=[USER_CLASSES[0]],
        help="the Locust users to run; a step's users are shared between them (equal weights)",
    )
    p.add_argument("--out", type=Path, default=Path("results/load"))
    p.add_argument("--clips-dir", type=Path, default=DEFAULT_CACHE_DIR)
    p.add_argument(
        "--p95-slo-s", type=float, default=report.DEFAULT_P95_SLO_S, help="p95 latency target, seconds"
    )
    p.add_argument("--max-error-rate", type=float, default=report.DEFAULT_MAX_ERROR_RATE, help="0.01 = 1 %%")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        host = check_host(args.host)
    except RemoteHostRefused as e:
        raise SystemExit(str(e)) from None
    plan = StepPlan.ramp(args.max_users, args.step_users, args.step_time)
    if plan.duration_s > args.max_duration:
        raise SystemExit(
            f"the plan {list(plan.users)} x {args.step_time:g} s takes {plan.duration_s:g} s, over "
            f"--max-duration {args.max_duration:g} s: use fewer steps, shorter steps or raise --max-duration"
        )
    clips = build_clip_mix(args.clips_dir)
    _wait_ready(host)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    run = {
        "host": host,
        "users": list(plan.users),
        "user_classes": list(args.user_classes),
        "step_time_s": plan.step_time_s,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gpu": _gpu_name(),
        "locust_version": importlib.metadata.version("locust"),
        "clips": {c.label: c.weight for c in clips},
        "mean_clip_s": round(mean_clip_s(clips), 2),
    }
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    print(f"==> {len(plan.users)} steps {list(plan.users)} x {plan.step_time_s:g} s against {host} -> {out}")

    cmd = [
        sys.executable, "-m", "locust",
        "-f", f"{LOAD_DIR / 'locustfile.py'},{LOAD_DIR / 'shapes.py'}",
        "--headless", "--host", host,
        "--csv", str(out / report.DEFAULT_PREFIX), "--csv-full-history",
        "--html", str(out / "locust.html"),
        "--only-summary",
        # Failures are data here, not a reason to fail the run.
        "--exit-code-on-error", "0",
        *args.user_classes,
    ]  # fmt: skip
    env = {**os.environ, **plan.to_env(), CACHE_DIR_ENV: str(Path(args.clips_dir).resolve())}
    try:
        done = subprocess.run(cmd, env=env, timeout=plan.duration_s + SHUTDOWN_GRACE_S, check=False)
    except subprocess.TimeoutExpired:
        print("locust did not stop in time; writing the report from what it recorded", file=sys.stderr)
    else:
        if done.returncode != 0:
            print(f"locust exited with {done.returncode}; no report written", file=sys.stderr)
            return done.returncode

    path = report.write_report(out, args.p95_slo_s, args.max_error_rate)
    print(path.read_text(), end="")
    print(f"\nwrote {path}, {', '.join(report.PLOTS)} and locust.html in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
