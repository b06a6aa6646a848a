"""API keys without Ray: keys and their entries (``serve_app.keys``), the CLI that makes them,
and the middleware on the real app (``create_app`` over a SQLite job store) with Starlette's
test client: 401s and their shape, the public paths, WebSockets by header, query parameter and
subprotocol, FunASR's socket exemption, and who sees whose jobs and history."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from serve_app.api import create_app
from serve_app.api.auth import SUBPROTOCOL_PREFIX, open_warning, presented_key, route_path
from serve_app.api.origins import HostPolicy
from serve_app.cli import main as cli
from serve_app.jobs import JobStore
from serve_app.keys import KEY_PREFIX, ApiKey, KeyRing, generate_key, hash_key, new_key
from serve_app.settings import Settings
from tests.unit.stand_ins import api_context

ALICE, BOB, ROOT = "fsk_alice-key", "fsk_bob-key", "fsk_root-key"
RING = KeyRing(
    (
        ApiKey(hash_key(ALICE), "alice"),
        ApiKey(hash_key(BOB), "bob"),
        ApiKey(hash_key(ROOT), "root", admin=True),
    )
)
RING_KEYS = (ALICE, BOB, ROOT)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---------------------------------------------------------------------- keys and entries


def test_keys_are_random_and_stored_as_their_sha256() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for k in keys:
        assert k.startswith(KEY_PREFIX) and len(k) == len(KEY_PREFIX) + 43, k
    key, entry = new_key("alice", admin=True)
    assert entry == ApiKey(hashlib.sha256(key.encode()).hexdigest(), "alice", True)
    assert key not in entry.entry() and entry.entry() == f"{entry.sha256}:alice:admin"
    assert ApiKey.parse(entry.entry()) == entry


def test_entries_parse_and_a_bad_one_names_its_place() -> None:
    h1, h2 = hash_key("one"), hash_key("two")
    ring = KeyRing.parse(f"# keys\n{h1.upper()}:alice , {h2}:ops-team:admin  # the on-call key\n\n")
    assert ring.keys == (ApiKey(h1, "alice"), ApiKey(h2, "ops-team", admin=True)), ring
    assert ring.enabled and not KeyRing.parse(" \n# nothing\n").enabled
    bad = {
        f"{h1}": "<sha256 hex>:<label>",
        f"{h1}:alice:root": "<sha256 hex>:<label>",
        f"{h1[:-1]}:alice": "64 hex digits",
        f"{h1}:al ice": "a key label",
        f"{h1}:": "a key label",
        f"{h1}:{'x' * 201}": "a key label",
    }
    for text, why in bad.items():
        with pytest.raises(ValueError) as e:
            KeyRing.parse(f"{h2}:ok\n{text}", source="keys.txt")
        assert "keys.txt, line 2" in str(e.value) and why in str(e.value), (text, str(e.value))
    with pytest.raises(ValueError, match="configured twice"):
        KeyRing.parse(f"{h1}:alice,{h1}:bob")


def test_match_takes_only_the_exact_key() -> None:
    assert RING.match(ALICE) == ApiKey(hash_key(ALICE), "alice")
    assert RING.match(ROOT) is not None and RING.match(ROOT).admin  # type: ignore[union-attr]
    for wrong in (None, "", ALICE + "x", ALICE[:-1], ALICE.upper(), hash_key(ALICE)):
        assert RING.match(wrong) is None, wrong


def test_settings_read_keys_from_the_environment_and_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("API_KEYS", "API_KEYS_FILE", "FUNASR_SOCKET_OPEN"):
        monkeypatch.delenv(f"FUNASR_SERVE_{name}", raising=False)
    assert KeyRing.from_settings(Settings()) == KeyRing(), "no keys configured: open"
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# team\n{hash_key(BOB)}:bob\n{hash_key(ROOT)}:root:admin\n")
    monkeypatch.setenv("FUNASR_SERVE_API_KEYS", f"{hash_key(ALICE)}:alice")
    monkeypatch.setenv("FUNASR_SERVE_API_KEYS_FILE", str(keys_file))
    monkeypatch.setenv("FUNASR_SERVE_FUNASR_SOCKET_OPEN", "true")
    ring = KeyRing.from_settings(Settings())
    assert ring == KeyRing(RING.keys, funasr_socket_open=True), ring
    keys_file.write_text("# emptied by mistake\n")
    monkeypatch.delenv("FUNASR_SERVE_API_KEYS")
    with pytest.raises(ValueError, match="holds no keys"):
        KeyRing.from_settings(Settings())
    monkeypatch.setenv("FUNASR_SERVE_API_KEYS_FILE", str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="cannot read"):
        KeyRing.from_settings(Settings())


def test_cli_prints_a_new_key_once_with_the_entry_to_add(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli(["keys", "create", "--label", "alice"]) == 0
    out = capsys.readouterr().out.splitlines()
    key, entry = out[1], ApiKey.parse(out[-1])
    assert key.startswith(KEY_PREFIX) and entry == ApiKey(hash_key(key), "alice"), out
    assert KeyRing((entry,)).match(key) == entry

    keys_file = tmp_path / "keys.txt"
    assert cli(["keys", "create", "--label", "ops", "--admin", "--file", str(keys_file)]) == 0
    first_key = capsys.readouterr().out.splitlines()[1]
    keys_file.write_text(keys_file.read_text().rstrip("\n"))  # an editor dropped the newline
    assert cli(["keys", "create", "--label", "bob", "--file", str(keys_file)]) == 0
    second_key = capsys.readouterr().out.splitlines()[1]
    ring = KeyRing.parse(keys_file.read_text())
    assert [(k.label, k.admin) for k in ring.keys] == [("ops", True), ("bob", False)], keys_file.read_text()
    assert ring.match(first_key) == ring.keys[0] and ring.match(second_key) == ring.keys[1]
    assert first_key not in keys_file.read_text()
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600

    assert cli(["keys", "create", "--label", "two words"]) == 2
    assert "a key label" in capsys.readouterr().err


def test_the_open_server_warning() -> None:
    assert open_warning(RING, "0.0.0.0") is None
    for host in ("127.0.0.1", "::1", "localhost"):
        assert open_warning(KeyRing(), host) is None, host
    for exposed in ("0.0.0.0", "::", "10.1.2.3", "asr.internal", None):
        warning = open_warning(KeyRing(), exposed)
        assert warning is not None and "FUNASR_SERVE_API_KEYS" in warning, (exposed, warning)


def test_where_a_key_is_read_from() -> None:
    def scope(
        kind: str, headers: dict[str, str], protos: tuple[str, ...] = (), query: str = ""
    ) -> dict[str, Any]:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return {"type": kind, "headers": raw, "subprotocols": list(protos), "query_string": query.encode()}

    assert presented_key(scope("http", bearer(ALICE))) == (ALICE, None)
    assert presented_key(scope("http", {"Authorization": f"bearer  {ALICE} "})) == (ALICE, None)
    assert presented_key(scope("http", {"Authorization": f"Basic {ALICE}"})) == (None, None)
    assert presented_key(scope("http", {}, query=f"api_key={ALICE}")) == (None, None), "HTTP: header only"
    proto = SUBPROTOCOL_PREFIX + ALICE
    assert presented_key(scope("websocket", {}, ("realtime", proto))) == (ALICE, proto)
    assert presented_key(scope("websocket", {}, query=f"intent=transcription&api_key={BOB}")) == (BOB, None)
    assert route_path({"path": "/app/v1/models", "root_path": "/app"}) == "/v1/models"
    assert route_path({"path": "/app", "root_path": "/app"}) == "/"
    assert route_path({"path": "/application", "root_path": "/app"}) == "/application"


# ---------------------------------------------------------------------- the app


AppFactory = Callable[..., TestClient]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore.open(tmp_path / "jobs.db")
    yield s
    s.close()


@pytest.fixture
def make_client(store: JobStore, tmp_path: Path) -> AppFactory:
    def make(keys: KeyRing = RING, root_path: str = "") -> TestClient:
        ctx = api_context(
            tmp_path,
            store=store,
            keys=keys,
            hosts=HostPolicy.build("127.0.0.1", "testserver"),  # the name TestClient sends
        )
        return TestClient(create_app(ctx), root_path=root_path)

    return make


def test_an_open_server_needs_no_key(make_client: AppFactory) -> None:
    c = make_client(KeyRing())
    assert c.get("/v1/models").status_code == 200
    assert c.get("/v1/jobs", headers=bearer("anything")).status_code == 200
    with c.websocket_connect("/v1/realtime") as ws:
        assert ws.receive_json()["type"] == "session.created"


def test_routes_answer_401_without_a_right_key(make_client: AppFactory) -> None:
    c = make_client(root_path="/app")
    for headers, why in (({}, "needs an API key"), (bearer("fsk_wrong"), "invalid API key")):
        for method, path in (("GET", "/v1/models"), ("GET", "/v1/jobs"), ("POST", "/v1/audio/transcriptions"),
                             ("GET", "/v1/history"), ("GET", "/v1/status"), ("POST", "/"), ("GET", "/nothing")):  # fmt: skip
            r = c.request(method, f"/app{path}", headers=headers)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            err = r.json()["error"]
            assert err["type"] == "invalid_api_key" and why in err["message"] and err["request_id"], err
            assert r.headers["www-authenticate"] == "Bearer"
            assert "fsk_wrong" not in r.text
    r = c.get("/app/v1/models", headers=bearer(ALICE))
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "whisper-1", r.text


def test_probes_and_the_console_need_no_key(make_client: AppFactory) -> None:
    c = make_client(root_path="/app")
    assert c.get("/app/healthz").json() == {"status": "ok"}
    assert c.get("/app/readyz").status_code == 503  # no stage here: not ready, but not 401
    for path in ("/app/", "/app", "/app/ui", "/app/ui/", "/app/ui/app.js"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code != 401, (path, r.status_code, r.text)


def test_history_and_jobs_are_their_owners_and_an_admins(make_client: AppFactory, store: JobStore) -> None:
    c = make_client()
    for who in ("alice", "bob"):
        store.history.add(text=f"said by {who}", owner=who, duration_s=2.0)
    for who, key in (("alice", ALICE), ("bob", BOB)):
        texts = [e["text"] for e in c.get("/v1/history", headers=bearer(key)).json()["data"]]
        assert texts == [f"said by {who}"], (who, texts)
    everyone = c.get("/v1/history", headers=bearer(ROOT)).json()["data"]
    assert sorted(e["text"] for e in everyone) == ["said by alice", "said by bob"], everyone
    bobs = next(e["id"] for e in everyone if e["text"] == "said by bob")
    assert c.get(f"/v1/history/{bobs}", headers=bearer(ALICE)).status_code == 404
    assert c.delete(f"/v1/history/{bobs}", headers=bearer(ALICE)).status_code == 404
    assert c.get(f"/v1/history/{bobs}", headers=bearer(ROOT)).json()["owner"] == "bob"

    sha = "ab" * 32
    store.uploads.add(sha, 1000, "uploads/x.wav", owner="alice")  # alice's upload; an admin may name it
    made = {}
    for key in (ALICE, ROOT):  # the admin's own job is recorded as the admin's
        r = c.post("/v1/jobs", json={"files": [{"sha256": sha, "name": "x.wav"}]}, headers=bearer(key))
        assert r.status_code == 202, r.text
        made[key] = r.json()["id"]
    assert store.jobs.get(made[ALICE]).owner == "alice" and store.jobs.get(made[ROOT]).owner == "root"
    assert c.get(f"/v1/jobs/{made[ROOT]}", headers=bearer(ROOT)).json()["owner"] == "root"
    listed = {
        key: [j["id"] for j in c.get("/v1/jobs", headers=bearer(key)).json()["data"]] for key in RING_KEYS
    }
    assert listed == {ALICE: [made[ALICE]], BOB: [], ROOT: [made[ROOT], made[ALICE]]}, listed
    assert c.get(f"/v1/jobs/{made[ALICE]}", headers=bearer(BOB)).status_code == 404
    assert c.post(f"/v1/jobs/{made[ALICE]}/cancel", headers=bearer(BOB)).status_code == 404
    assert c.get(f"/v1/jobs/{made[ALICE]}", headers=bearer(ROOT)).json()["id"] == made[ALICE]


def test_websockets_take_the_key_by_header_query_or_subprotocol(make_client: AppFactory) -> None:
    c = make_client()
    proto = SUBPROTOCOL_PREFIX + ALICE
    for kwargs, accepted in (
        ({"headers": bearer(ALICE)}, None),
        ({"url": f"/v1/realtime?intent=transcription&api_key={ALICE}"}, None),
        ({"subprotocols": [proto]}, proto),  # a browser must get one of its offers back
        ({"subprotocols": ["realtime", proto, "openai-beta.realtime-v1"]}, "realtime"),
    ):
        url = kwargs.pop("url", "/v1/realtime")
        with c.websocket_connect(url, **kwargs) as ws:  # type: ignore[arg-type]
            assert ws.accepted_subprotocol == accepted, (kwargs, ws.accepted_subprotocol)
            assert ws.receive_json()["type"] == "session.created"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({}, "needs an API key"),
        ({"headers": bearer("fsk_wrong")}, "invalid API key"),
        ({"subprotocols": ["realtime", SUBPROTOCOL_PREFIX + "fsk_wrong"]}, "invalid API key"),
        ({"url": "/v1/realtime?api_key=fsk_wrong"}, "invalid API key"),
    ],
)
def test_a_websocket_without_a_right_key_is_closed_1008(
    make_client: AppFactory, kwargs: dict[str, Any], reason: str
) -> None:
    url = kwargs.pop("url", "/v1/realtime")
    with make_client().websocket_connect(url, **kwargs) as ws:
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_json()
    assert e.value.code == 1008 and reason in e.value.reason, (e.value.code, e.value.reason)


@pytest.mark.parametrize("path", ["/", "/v1/realtime/funasr"])
def test_funasr_socket_is_open_only_by_setting(make_client: AppFactory, path: str) -> None:
    with make_client(RING).websocket_connect(path, subprotocols=["binary"]) as ws:
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_json()
    assert e.value.code == 1008 and "API key" in e.value.reason, (e.value.code, e.value.reason)
    open_ring = KeyRing(RING.keys, funasr_socket_open=True)
    for ring, headers in ((RING, bearer(BOB)), (open_ring, {})):
        with make_client(ring).websocket_connect(path, subprotocols=["binary"], headers=headers) as ws:
            assert ws.accepted_subprotocol == "binary"
            ws.send_bytes(b"\0\0")  # the route itself answers: audio before the configuration
            with pytest.raises(WebSocketDisconnect) as e:
                ws.receive_json()
        assert e.value.code == 1003, (e.value.code, e.value.reason)
    with make_client(open_ring).websocket_connect("/v1/realtime") as ws:  # OpenAI's still needs a key
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_json()
    assert e.value.code == 1008 and "API key" in e.value.reason, (e.value.code, e.value.reason)


def test_status_says_what_it_can_and_why_not_the_rest(make_client: AppFactory, store: JobStore) -> None:
    store.history.add(text="one", owner="alice", duration_s=1800.0)
    store.history.add(text="two", owner="bob", duration_s=900.0)
    c = make_client()
    assert c.get("/v1/status").status_code == 401
    body = c.get("/v1/status", headers=bearer(ALICE)).json()
    assert body["object"] == "status" and body["models"]["asr"]["names"] == ["whisper-1"], body
    assert body["today"]["audio_hours"] == 0.75 and body["today"]["history_entries"] == 2, body["today"]
    assert body["queue"]["jobs"] == {"pending_files": 0, "running_files": 0}, body["queue"]
    # No Serve here: those parts are null, with the reason, and the endpoint still answers.
    assert body["serve"] is None and body["queue"]["asr"] is None, body
    assert set(body["errors"]) == {"serve", "asr", "decode", "vad", "postprocess"}, body["errors"]
    assert body["load"] == {"stages": [], "throughput": None, "saturated": []}, body["load"]
    assert body["auth"] == {"keys_required": True, "label": "alice", "admin": False}, body["auth"]
    assert c.get("/v1/status", headers=bearer(ROOT)).json()["auth"]["admin"] is True
