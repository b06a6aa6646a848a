"""API keys through the real service (deploy/local.yaml, keys in the app's runtime_env as an
operator sets them): 401 without a key and the OpenAI SDK with one, WebSockets by header, query
parameter and subprotocol (1008 without), FunASR's socket closed by default and open by
setting, whose jobs and history a key sees, and the status endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from serve_app.api.auth import SUBPROTOCOL_PREFIX
from serve_app.keys import new_key
from tests.integration.conftest import ServeCluster
from tests.support import funasr_stream, pcm16, ws_url
from tools.audio import read_wav
from tools.local_serve import app_config

APP = "keys"
BECKETT_WORDS = {"ever", "tried", "failed", "matter", "try", "again", "fail", "better"}


@dataclass
class KeysApp:
    url: str
    alice: str
    bob: str
    root: str
    """An admin key (from the keys file; alice and bob come from the environment variable)."""
    env: dict[str, str]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def words(text: str) -> set[str]:
    import re

    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def keys_app(serve_cluster: ServeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeysApp]:
    data = tmp_path_factory.mktemp("keysdata")
    (alice, a), (bob, b), (root, r) = new_key("alice"), new_key("bob"), new_key("root", admin=True)
    keys_file = data / "keys.txt"
    keys_file.write_text(f"# operators\n{r.entry()}\n")
    env = {
        "FUNASR_SERVE_DATA_DIR": str(data),
        "FUNASR_SERVE_API_KEYS": f"{a.entry()},{b.entry()}",
        "FUNASR_SERVE_API_KEYS_FILE": str(keys_file),
    }
    app = app_config("local.yaml", APP)
    app["runtime_env"] = {"env_vars": env}
    url = serve_cluster.deploy(app)
    try:
        yield KeysApp(url, alice, bob, root, env)
    finally:
        serve_cluster.remove(APP)


@pytest.fixture(scope="module")
def beckett_pcm(beckett_wav: Path) -> bytes:
    samples, rate = read_wav(beckett_wav.read_bytes())
    assert rate == 16000
    return pcm16(samples)


def test_probes_are_open_and_the_api_needs_a_key(keys_app: KeysApp) -> None:
    url = keys_app.url
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
    for headers in ({}, bearer("fsk_not-a-key"), bearer(keys_app.alice + "x")):
        r = httpx.get(f"{url}/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_api_key", r.text
    r = httpx.get(f"{url}/v1/models", headers=bearer(keys_app.alice))
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "whisper-1", r.text


def test_the_openai_sdk_sends_its_key(keys_app: KeysApp, beckett_wav: Path) -> None:
    good = openai.OpenAI(base_url=f"{keys_app.url}/v1", api_key=keys_app.alice, max_retries=0, timeout=120)
    with beckett_wav.open("rb") as f:
        text = good.audio.transcriptions.create(model="whisper-1", file=f).text
    assert len(words(text) & BECKETT_WORDS) >= 6, text
    bad = openai.OpenAI(base_url=f"{keys_app.url}/v1", api_key="fsk_wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as e, beckett_wav.open("rb") as f:
        bad.audio.transcriptions.create(model="whisper-1", file=f)
    assert e.value.status_code == 401 and "fsk_wrong" not in str(e.value), e.value


def test_a_key_sees_its_own_history_and_jobs_an_admin_all(keys_app: KeysApp, beckett_wav: Path) -> None:
    url, audio = keys_app.url, beckett_wav.read_bytes()
    for key, name in ((keys_app.alice, "alice.wav"), (keys_app.bob, "bob.wav")):
        r = httpx.post(
            f"{url}/v1/audio/transcriptions", files={"file": (name, audio)}, headers=bearer(key), timeout=120
        )
        assert r.status_code == 200, r.text

    def history(key: str) -> dict[str, str]:
        r = httpx.get(f"{url}/v1/history", params={"limit": 100}, headers=bearer(key))
        assert r.status_code == 200, r.text
        return {e["source_name"]: e["owner"] for e in r.json()["data"]}

    assert history(keys_app.bob) == {"bob.wav": "bob"}
    assert history(keys_app.root).items() >= {"alice.wav": "alice", "bob.wav": "bob"}.items()
    assert "bob.wav" not in history(keys_app.alice)
    bobs = next(
        e["id"]
        for e in httpx.get(f"{url}/v1/history", headers=bearer(keys_app.bob)).json()["data"]
        if e["source_name"] == "bob.wav"
    )
    assert httpx.get(f"{url}/v1/history/{bobs}", headers=bearer(keys_app.alice)).status_code == 404

    made = {}
    for who, key in (("bob", keys_app.bob), ("root", keys_app.root)):
        r = httpx.post(
            f"{url}/v1/jobs", files=[("files", ("j.wav", audio))], headers=bearer(key), timeout=120
        )
        assert r.status_code == 202 and r.json()["owner"] == who, r.text  # an admin's own job is its own
        made[who] = r.json()["id"]

    def jobs(key: str) -> set[str]:
        return {j["id"] for j in httpx.get(f"{url}/v1/jobs", headers=bearer(key)).json()["data"]}

    assert jobs(keys_app.bob) == {made["bob"]} and not jobs(keys_app.alice) & set(made.values())
    assert set(made.values()) <= jobs(keys_app.root)
    assert httpx.get(f"{url}/v1/jobs/{made['bob']}", headers=bearer(keys_app.alice)).status_code == 404
    assert httpx.delete(f"{url}/v1/jobs/{made['root']}", headers=bearer(keys_app.bob)).status_code == 404
    assert httpx.get(f"{url}/v1/jobs/{made['bob']}", headers=bearer(keys_app.root)).json()["owner"] == "bob"


async def _first_event(url: str, **kwargs: Any) -> tuple[str | None, dict[str, Any]]:
    async with websockets.connect(url, open_timeout=30, **kwargs) as ws:
        return ws.subprotocol, json.loads(await asyncio.wait_for(ws.recv(), 30))


async def _closed_with(url: str, **kwargs: Any) -> tuple[int | None, str]:
    async with websockets.connect(url, open_timeout=30, **kwargs) as ws:
        with pytest.raises(ConnectionClosed) as e:
            await asyncio.wait_for(ws.recv(), 30)
    assert e.value.rcvd is not None, "closed without a close frame"
    return e.value.rcvd.code, e.value.rcvd.reason


def test_realtime_takes_the_key_by_header_query_or_subprotocol(keys_app: KeysApp) -> None:
    url, alice = ws_url(keys_app.url, "/v1/realtime?intent=transcription"), keys_app.alice
    proto = SUBPROTOCOL_PREFIX + alice
    accepted = [
        asyncio.run(_first_event(url, additional_headers=bearer(alice))),
        asyncio.run(_first_event(f"{url}&api_key={alice}")),
        asyncio.run(_first_event(url, subprotocols=[proto])),  # as a browser must send it
        asyncio.run(_first_event(url, subprotocols=["realtime", proto])),
    ]
    assert [p for p, _ in accepted] == [None, None, proto, "realtime"], accepted
    assert all(event["type"] == "session.created" for _, event in accepted), accepted
    for kwargs in (
        {},
        {"additional_headers": bearer("fsk_wrong")},
        {"subprotocols": [SUBPROTOCOL_PREFIX + "fsk_wrong"]},
    ):
        code, reason = asyncio.run(_closed_with(url, **kwargs))
        assert code == 1008 and "API key" in reason, (kwargs, code, reason)


def test_the_openai_sdk_realtime_client_sends_its_key(keys_app: KeysApp) -> None:
    async def first(key: str) -> str:
        client = openai.AsyncOpenAI(base_url=f"{keys_app.url}/v1", api_key=key)
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            return str((await asyncio.wait_for(conn.recv(), 30)).type)

    assert asyncio.run(first(keys_app.bob)) == "session.created"
    with pytest.raises(ConnectionClosed) as e:
        asyncio.run(first("fsk_wrong"))
    assert e.value.rcvd is not None and e.value.rcvd.code == 1008, e.value


def test_funasr_socket_needs_a_key_by_default(keys_app: KeysApp, beckett_pcm: bytes) -> None:
    for path in ("/", "/v1/realtime/funasr"):
        code, reason = asyncio.run(_closed_with(ws_url(keys_app.url, path), subprotocols=["binary"]))
        assert code == 1008 and "API key" in reason, (path, code, reason)
    replies = asyncio.run(
        funasr_stream(
            ws_url(keys_app.url, f"/v1/realtime/funasr?api_key={keys_app.alice}"), beckett_pcm, "offline"
        )
    )
    offline = [r for r in replies if r.get("mode") == "offline" and not r.get("is_end")]
    assert offline and {"fail", "better"} <= words(offline[0]["text"]), replies


def test_status_reports_replicas_queue_and_todays_audio(keys_app: KeysApp, beckett_wav: Path) -> None:
    url = keys_app.url
    assert httpx.get(f"{url}/v1/status").status_code == 401
    r = httpx.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": ("s.wav", beckett_wav.read_bytes())},
        headers=bearer(keys_app.bob),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = httpx.get(f"{url}/v1/status", headers=bearer(keys_app.bob), timeout=30).json()
    assert body["errors"] == {}, body["errors"]
    assert body["models"]["asr"]["names"][0] == "whisper-1", body["models"]
    deployments = body["serve"]["deployments"]
    assert body["serve"]["app"] == APP and body["serve"]["status"] == "RUNNING", body["serve"]
    for stage in ("Ingress", "Decode", "VAD", "ASR", "Postprocess"):
        assert deployments[stage]["running"] >= 1, (stage, deployments)
    asr = body["queue"]["asr"]
    assert asr["queued_segments"] >= 0 and asr["inflight_requests"] >= 0 and asr["replica"], asr
    assert body["queue"]["jobs"]["pending_files"] >= 0, body["queue"]
    today = body["today"]  # Beckett (10 s) at least once, whoever transcribed it (every owner)
    assert today["history_entries"] >= 1 and today["history_audio_s"] >= 9.5, today
    assert today["audio_hours"] >= (today["history_audio_s"] + today["job_audio_s"]) / 3600 - 1e-3, today
    assert body["auth"] == {"keys_required": True, "label": "bob", "admin": False}, body["auth"]


def test_funasr_socket_open_by_setting(
    serve_cluster: ServeCluster, keys_app: KeysApp, beckett_pcm: bytes
) -> None:
    """Last: it redeploys the app with the FunASR socket open (every replica restarts)."""
    app = app_config("local.yaml", APP)
    app["runtime_env"] = {"env_vars": {**keys_app.env, "FUNASR_SERVE_FUNASR_SOCKET_OPEN": "true"}}
    url = serve_cluster.deploy(app)
    replies = asyncio.run(funasr_stream(ws_url(url), beckett_pcm, "offline"))  # no key, as FunASR's client
    offline = [r for r in replies if r.get("mode") == "offline" and not r.get("is_end")]
    assert offline and {"fail", "better"} <= words(offline[0]["text"]), replies
    assert httpx.get(f"{url}/v1/models").status_code == 401
    code, _ = asyncio.run(_closed_with(ws_url(url, "/v1/realtime?intent=transcription")))
    assert code == 1008, "the exemption covers FunASR's protocol only"
