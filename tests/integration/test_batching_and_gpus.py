"""Cross-request batching, live batch reconfiguration, and fractional-GPU packing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import ray
from ray import serve
from ray._private.state import actors as actor_table

from tests.integration.conftest import ServeCluster
from tests.support import SENTENCES, funasr_args, post_concurrently
from tools.audio import encode_wav, with_pauses
from tools.local_serve import app_config


def _set_user_config(cluster: ServeCluster, app: str, **knobs: float) -> dict[str, object]:
    """Change the ASR batch knobs through the Serve config (``user_config``) and wait until
    the running replica reports them: ``reconfigure()``, no restart."""
    asr_cfg = next(d for d in cluster.apps[app]["deployments"] if d["name"] == "ASR")
    asr_cfg["user_config"] = {**asr_cfg["user_config"], **knobs}
    cluster.apply()
    handle = serve.get_deployment_handle("ASR", app_name=app)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = handle.stats.remote().result()
        if all(stats["config"][k] == v for k, v in knobs.items()):
            return stats
        time.sleep(0.3)
    raise AssertionError(f"user_config {knobs} not applied: {stats['config']}")


def test_16_concurrent_requests_share_asr_batches(
    serve_cluster: ServeCluster, local_app: str, say: Callable[[str], np.ndarray]
) -> None:
    asr = serve.get_deployment_handle("ASR", app_name="local")
    before = asr.stats.remote().result()
    # On two cores the upstream stages hand segments over ~0.1 s apart; a 0.3 s batch window
    # (a production knob: latency traded for batch size) lets segments of different requests meet.
    stats = _set_user_config(serve_cluster, "local", batch_wait_timeout_s=0.3, max_batch_count=8)
    assert stats["batches"] >= before["batches"], "the replica was restarted, not reconfigured"
    asr.reset_stats.remote().result()
    audio = encode_wav(with_pauses([say(s) for s in SENTENCES], 2.0))
    try:
        responses = post_concurrently(local_app, audio, 16)
        assert [r.status_code for r in responses] == [200] * 16
        assert all("tomorrow" in r.json()["text"].lower() for r in responses), [
            r.json()["text"] for r in responses
        ]
        stats = asr.stats.remote().result()
        print(
            f"16 concurrent requests → ASR batches {stats['batch_size_counts']}, mean {stats['mean_batch_size']:.1f}"
        )
        # Two segments per request.
        assert sum(int(k) * v for k, v in stats["batch_size_counts"].items()) == 32, stats
        assert max(int(k) for k in stats["batch_size_counts"]) > 2, f"no batch spans requests: {stats}"
    finally:
        _set_user_config(
            serve_cluster,
            "local",
            batch_wait_timeout_s=before["config"]["batch_wait_timeout_s"],
            max_batch_count=before["config"]["max_batch_count"],
        )


def test_two_half_gpu_replicas_pack_and_a_third_waits(
    serve_cluster: ServeCluster, tiny_models: dict[str, Path]
) -> None:
    app = app_config(
        "local.yaml",
        "gpupack",
        args=funasr_args(tiny_models),
        deployments={"ASR": {"num_replicas": 3, "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0.5}}},
    )
    serve_cluster.apps["gpupack"] = app
    serve_cluster.apply()
    try:
        deadline = time.monotonic() + 240
        states: dict[str, int] = {}
        while time.monotonic() < deadline:
            status = serve.status().applications.get("gpupack")
            if status and "ASR" in status.deployments:
                states = {str(k): v for k, v in status.deployments["ASR"].replica_states.items()}
                if states.get("RUNNING") == 2:
                    break
            time.sleep(0.2)
        assert states.get("RUNNING") == 2, states
        # The third waits for a GPU share that is not there: its actor is created but cannot be
        # placed (PENDING_CREATION) while the two running ones hold the whole fake GPU. Checked
        # as a state, not by waiting a while and seeing it still pending. Read from the GCS
        # actor table: ray.util.state needs the dashboard, which the test cluster leaves out.
        by_state = sorted(
            a["State"]
            for a in actor_table().values()
            if a["ActorClassName"] == "ServeReplica:gpupack:ASR" and a["State"] != "DEAD"
        )
        assert by_state == ["ALIVE", "ALIVE", "PENDING_CREATION"], by_state
        assert ray.available_resources().get("GPU", 0.0) < 0.5, ray.available_resources()
        status = serve.status().applications["gpupack"]
        states = {str(k): v for k, v in status.deployments["ASR"].replica_states.items()}
        assert states.get("RUNNING") == 2 and sum(states.values()) == 3, states
        assert status.status != "RUNNING"
    finally:
        serve_cluster.remove("gpupack")
