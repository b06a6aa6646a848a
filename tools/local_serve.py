"""A local Ray + Serve for tests and the benchmark: deploy apps from ``deploy/*.yaml``
through the controller (as ``serve run``/``serve deploy`` do), with overrides merged in."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

SERVE_ENV = {
    # Serve's defaults poll every 100 ms: on a 2-core machine an idle graph then burns a third
    # of a core. The Makefile sets the same for `make run` (see the README, "Small machines").
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def app_config(
    yaml_name: str,
    name: str,
    args: dict[str, Any] | None = None,
    deployments: dict[str, dict[str, Any]] | None = None,
    root: Path = ROOT,
) -> dict[str, Any]:
    """The first application of ``<root>/deploy/<yaml_name>``, renamed and served under
    ``/<name>`` (``root``: another checkout, for before/after benchmarks)."""
    app = yaml.safe_load((root / "deploy" / yaml_name).read_text())["applications"][0]
    app = merge(app, {"name": name, "route_prefix": f"/{name}", "args": args or {}})
    for d in app.get("deployments", []):
        d.update(copy.deepcopy((deployments or {}).get(d["name"], {})))
    return app


@dataclass
class LocalServe:
    port: int
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_root: Path | None = None
    """When set, each app gets its own ``<data_root>/<app>`` data directory (and so its own
    SQLite database and job runner queue) unless its ``runtime_env`` names one."""

    @classmethod
    def start(cls, num_cpus: int = 8, num_gpus: int | None = None, object_store_mb: int = 300) -> LocalServe:
        import ray
        from ray.serve._private import api as serve_api

        for key, value in SERVE_ENV.items():  # read by Ray's processes when they start
            os.environ.setdefault(key, value)
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            object_store_memory=object_store_mb * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
            namespace="funasr-serve-local",
        )
        port = free_port()
        serve_api.serve_start(http_options={"host": "127.0.0.1", "port": port})
        return cls(port=port)

    def stop(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()

    def url(self, app: str) -> str:
        return f"http://127.0.0.1:{self.port}/{app}"

    def apply(self) -> None:
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        client = _get_global_client()
        if client is None:
            raise RuntimeError("Serve is not running: call LocalServe.start() first")
        client.deploy_apps(ServeDeploySchema.model_validate({"applications": list(self.apps.values())}))

    def deploy(self, app: dict[str, Any], timeout_s: float = 300) -> str:
        """Deploy (or keep) ``app`` and wait until it is RUNNING; returns its base URL."""
        from ray import serve

        name = app["name"]
        if self.data_root is not None:
            env = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
            env.setdefault("FUNASR_SERVE_DATA_DIR", str(self.data_root / name))
        if self.apps.get(name) != app:
            self.apps[name] = app
            self.apply()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = serve.status().applications.get(name)
            if status is not None and status.status == "RUNNING":
                return self.url(name)
            if status is not None and status.status == "DEPLOY_FAILED":
                self.remove(name)  # a failed app left in the config would fail every later deploy
                raise RuntimeError(f"{name} failed to deploy: {status.message}")
            time.sleep(0.5)
        raise TimeoutError(f"{name} not running after {timeout_s} s: {serve.status().applications.get(name)}")

    def remove(self, name: str) -> None:
        from ray import serve

        self.apps.pop(name, None)
        self.apply()
        deadline = time.monotonic() + 60
        while name in serve.status().applications and time.monotonic() < deadline:
            time.sleep(0.5)


class ServingTree:
    """``python -m tools.local_serve`` in a subprocess: a whole serving tree (Ray included)
    that tests and benchmarks kill with SIGKILL. ``env`` is the subprocess's environment
    (storage settings); ``url`` is the app's base URL once it is ready."""

    def __init__(self, env: dict[str, str], name: str = "app", args: dict[str, Any] | None = None) -> None:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.local_serve", "--name", name, "--args", json.dumps(args or {})],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("READY "):
                self.url = line.split()[1]
                self.start_s = time.monotonic() - t0
                return
        raise RuntimeError(f"the serving tree exited: {self.proc.wait()}")

    def kill(self) -> int:
        """SIGKILL the tree, every process it started included; how many processes there were."""
        import psutil

        root = psutil.Process(self.proc.pid)
        tree = [root, *root.children(recursive=True)]
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=30)
        return len(tree)


def main() -> None:
    """A whole serving process tree in one command, for tests that kill it:

        python -m tools.local_serve --yaml local.yaml --name app --args '{...}'

    starts Ray and Serve, deploys the app, prints ``READY <url>`` and serves until killed.
    Storage comes from the environment (``FUNASR_SERVE_DATA_DIR``, ``FUNASR_SERVE_DATABASE_URL``)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--yaml", default="local.yaml")
    p.add_argument("--name", default="app")
    p.add_argument("--args", default="{}", help="PipelineArgs overrides as JSON")
    p.add_argument("--deployments", default="{}", help="deployment overrides as JSON")
    a = p.parse_args()
    cluster = LocalServe.start(num_cpus=8, object_store_mb=300)
    url = cluster.deploy(
        app_config(a.yaml, a.name, args=json.loads(a.args), deployments=json.loads(a.deployments))
    )
    print(f"READY {url}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
