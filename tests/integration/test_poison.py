"""A poison request (one whose stage call kills its replica) is retried once, answered when a
second replica dies under it, and refused at once when it is sent again: no client can kill
replicas in turn. The Decode replica is killed through the test hook (``Settings.test_hooks``,
``KILL_MARKER``), not by exhausting the machine's memory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ray import serve

from serve_app.deployments.decode import KILL_MARKER
from tests.integration.conftest import ServeCluster
from tests.support import assert_error
from tools.local_serve import app_config

APP = "poison"
DECODE_CLASS = f"ServeReplica:{APP}:Decode"


@pytest.fixture(scope="module")
def poison_app(serve_cluster: ServeCluster) -> Iterator[str]:
    """deploy/local.yaml with the test hooks on and one Decode replica (so that every death
    is one of the request's), under its own name: this test kills its replicas."""
    app = app_config(
        "local.yaml", APP, deployments={"Decode": {"autoscaling_config": None, "num_replicas": 1}}
    )
    app["runtime_env"] = {"env_vars": {"FUNASR_SERVE_TEST_HOOKS": "1"}}
    url = serve_cluster.deploy(app)
    try:
        yield url
    finally:
        serve_cluster.remove(APP)


def dead_decode_replicas() -> set[str]:
    """Actor ids of this app's Decode replicas that died (from the GCS: the dashboard, which
    Ray's state API needs, is off in tests)."""
    from ray._private.state import state

    return {
        actor_id
        for actor_id, a in state.actor_table(None).items()
        if a.get("ActorClassName") == DECODE_CLASS and a.get("State") == "DEAD"
    }


def decode_pid() -> int:
    handle = serve.get_deployment_handle("Decode", app_name=APP)
    return int(handle.info.remote().result(timeout_s=120)["pid"])


def post(url: str, audio: bytes, timeout_s: float) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("p.wav", audio)}, timeout=timeout_s)


def test_a_poison_upload_kills_two_replicas_at_most_and_is_then_refused(
    poison_app: str, beckett_wav: Path
) -> None:
    import psutil

    speech = beckett_wav.read_bytes()
    poison = KILL_MARKER + speech
    first_pid = decode_pid()
    dead_before = dead_decode_replicas()

    t = time.monotonic()
    r = post(poison_app, poison, timeout_s=90)  # unlimited retries would run into this
    answered_s = time.monotonic() - t
    err = assert_error(r, 500, "server_error")
    assert "took down a pipeline replica twice" in err["message"], err
    assert not psutil.pid_exists(first_pid), "the first Decode replica is still alive"
    deaths = dead_decode_replicas() - dead_before
    assert len(deaths) == 2, f"{len(deaths)} Decode replicas died, expected exactly 2"

    t = time.monotonic()
    again = post(poison_app, poison, timeout_s=30)
    refused_s = time.monotonic() - t
    err = assert_error(again, 500, "server_error")
    assert "identical request took down" in err["message"], err
    assert refused_s < 5.0, f"a repeat took {refused_s:.1f} s: it reached a stage"
    assert dead_decode_replicas() - dead_before == deaths, "a repeat killed another replica"

    # Serve has replaced the replica; an ordinary upload transcribes (waiting for it if need be).
    ok = post(poison_app, speech, timeout_s=120)
    assert ok.status_code == 200, ok.text
    assert "fail" in ok.json()["text"].lower(), f"got {ok.json()['text']!r}"
    assert dead_decode_replicas() - dead_before == deaths
    print(
        f"poison answered after {answered_s:.1f} s (2 replicas killed), repeat refused in {refused_s:.2f} s"
    )
