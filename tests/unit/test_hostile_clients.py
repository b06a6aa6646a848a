"""Hostile clients and tenants, on the real app (``create_app`` over a SQLite job store) without
Ray: uploads belong to the key that made them, every body and stream has a bound, keys have
quotas, other sites' pages are refused, exports are safe to open and to write, and errors are
short answers. Each test fails on the code before these guarantees (see the closing note)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from serve_app.api import ApiContext, create_app
from serve_app.api.origins import HostPolicy
from serve_app.cli import main as cli
from serve_app.config import JobsArgs, LimitsArgs, QuotaArgs
from serve_app.exports import UniqueNames, csv_text, safe_stem
from serve_app.jobs import JobOptions, JobStore, NewFile, Window
from serve_app.jobs.blobs import remove_stale_incoming
from serve_app.keys import KeyRing
from tests.unit.stand_ins import api_context
from tests.unit.test_api_keys import ALICE, BOB, RING, ROOT, bearer

WAV = b"RIFF" + os.urandom(2000)  # content; nothing here decodes it
WAV_SHA = hashlib.sha256(WAV).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore.open(tmp_path / "jobs.db")
    yield s
    s.close()


Factory = Callable[..., TestClient]


@pytest.fixture
def make_ctx(store: JobStore, tmp_path: Path) -> Callable[..., ApiContext]:
    def make(
        keys: KeyRing = RING,
        limits: LimitsArgs | None = None,
        jobs: JobsArgs | None = None,
        quotas: QuotaArgs | None = None,
        hosts: HostPolicy | None = None,
    ) -> ApiContext:
        return api_context(
            tmp_path / "data",
            limits=limits or LimitsArgs(),
            jobs=jobs or JobsArgs(),
            store=store,
            keys=keys,
            quotas=quotas or QuotaArgs(),
            hosts=hosts or HostPolicy.build("127.0.0.1"),
        )

    return make


@pytest.fixture
def make_client(make_ctx: Callable[..., ApiContext]) -> Factory:
    def make(**kw: Any) -> TestClient:
        # TestClient sends Host "testserver": name it, as an operator would name theirs.
        kw.setdefault("hosts", HostPolicy.build("127.0.0.1", "testserver"))
        return TestClient(create_app(make_ctx(**kw)))

    return make


def put(c: TestClient, key: str, data: bytes = WAV) -> Any:
    return c.put(f"/v1/uploads/{hashlib.sha256(data).hexdigest()}", content=data, headers=bearer(key))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ---------------------------------------------------------------------- 3. tenants


def test_a_key_sees_and_references_only_its_own_uploads(make_client: Factory) -> None:
    c = make_client()
    assert put(c, ALICE).status_code == 201
    assert c.head(f"/v1/uploads/{WAV_SHA}", headers=bearer(ALICE)).status_code == 200
    # Bob knows the hash: he learns nothing, and cannot have it transcribed.
    assert c.head(f"/v1/uploads/{WAV_SHA}", headers=bearer(BOB)).status_code == 404
    job = {"files": [{"sha256": WAV_SHA, "name": "theirs.wav"}]}
    r = c.post("/v1/jobs", json=job, headers=bearer(BOB))
    assert r.status_code == 400 and r.json()["error"]["type"] == "upload_missing", r.text
    assert c.post("/v1/jobs", json=job, headers=bearer(ALICE)).status_code == 202
    assert c.head(f"/v1/uploads/{WAV_SHA}", headers=bearer(ROOT)).status_code == 200  # an admin sees all
    # Bob uploading the same bytes proves he has them: stored once, now his as well.
    r = put(c, BOB)
    assert r.status_code == 200 and r.json()["created"] is False, r.text
    assert c.head(f"/v1/uploads/{WAV_SHA}", headers=bearer(BOB)).status_code == 200


def test_deleting_a_job_removes_its_audio_though_another_key_named_the_content(
    make_client: Factory, store: JobStore, tmp_path: Path
) -> None:
    c = make_client()
    put(c, ALICE)
    alice = c.post("/v1/jobs", json={"files": [{"sha256": WAV_SHA, "name": "a.wav"}]}, headers=bearer(ALICE))
    blobs = files_under(tmp_path / "data" / "uploads")
    assert len(blobs) == 1
    # Bob cannot name it (before this issue he could, and his job kept alice's audio alive).
    bob = c.post("/v1/jobs", json={"files": [{"sha256": WAV_SHA, "name": "b.wav"}]}, headers=bearer(BOB))
    assert bob.status_code == 400
    assert c.delete(f"/v1/jobs/{alice.json()['id']}", headers=bearer(ALICE)).status_code == 200
    assert files_under(tmp_path / "data" / "uploads") == [], "the audio outlived its job"


# ---------------------------------------------------------------------- 4. bounds


async def _drive(
    app: Any, method: str, path: str, headers: dict[str, str], chunks: int, size: int
) -> tuple[int, int]:
    """Call the ASGI app with a chunked body of ``chunks`` × ``size`` bytes (no
    Content-Length); ``(status, bytes the app pulled)``."""
    sent, status = 0, 0
    hdrs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [(b"host", b"testserver"), *hdrs], "http_version": "1.1",
             "scheme": "http", "server": ("testserver", 80), "client": ("127.0.0.1", 5000)}  # fmt: skip

    ctype = headers.get("content-type", "")
    field = "file" if path == "/v1/audio/transcriptions" else "files"
    # A multipart body opens a file part properly, then its file never ends.
    head = f'--b\r\nContent-Disposition: form-data; name="{field}"; filename="a.wav"\r\n\r\n'.encode()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent >= chunks * size:
            await asyncio.sleep(30)  # the app asked for more than the client had
        body = b"x" * size
        if sent == 0 and ctype.startswith("multipart/"):
            body = head + body[len(head) :]
        sent += size
        return {"type": "http.request", "body": body, "more_body": sent < chunks * size}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await asyncio.wait_for(app(scope, receive, send), 30)
    return status, sent


@pytest.mark.parametrize(
    "path,ctype",
    [
        ("/v1/audio/transcriptions", "multipart/form-data; boundary=b"),
        ("/v1/jobs", "application/json"),
        ("/v1/jobs", "multipart/form-data; boundary=b"),
        (f"/v1/uploads/{WAV_SHA}", None),
        ("/v1/history", None),
    ],
)
def test_bodies_without_a_length_are_cut_off_at_their_limit(
    make_ctx: Callable[..., ApiContext], path: str, ctype: str | None, tmp_path: Path
) -> None:
    limits = LimitsArgs(max_upload_mb=1, max_json_mb=1, max_body_kb=64)
    jobs = JobsArgs(max_file_mb=1, max_job_upload_gb=1 / 1024)
    app = create_app(
        make_ctx(keys=KeyRing(), limits=limits, jobs=jobs, hosts=HostPolicy.build("127.0.0.1", "*"))
    )
    method = "PUT" if path.startswith("/v1/uploads") else "POST"
    headers = {"content-type": ctype} if ctype else {}
    status, pulled = asyncio.run(_drive(app, method, path, headers, chunks=160, size=64 * 1024))  # 10 MiB
    limit = 64 * 1024 if path == "/v1/history" else (1 << 20) + 64 * 1024
    assert status in (400, 405, 413), status
    assert pulled <= limit + 64 * 1024, f"{pulled} bytes read for a limit of {limit}"
    assert [p for p in files_under(tmp_path / "data") if p.suffix != ".db"] == [], "a partial upload was kept"


def test_a_declared_length_over_the_limit_is_refused_unread(make_client: Factory) -> None:
    c = make_client(keys=KeyRing(), limits=LimitsArgs(max_json_mb=0.5))
    r = c.post(
        "/v1/jobs", content=b"{" + b" " * (600 * 1024) + b"}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large", r.text


def test_json_metadata_and_multipart_fields_are_bounded(make_client: Factory) -> None:
    c = make_client(keys=KeyRing())
    put(c, "")
    body = {"files": [{"sha256": WAV_SHA, "name": "a.wav"}], "metadata": {"x": "y" * 20000}}
    r = c.post("/v1/jobs", json=body)
    assert r.status_code == 400 and "metadata" in r.json()["error"]["message"], r.text
    fields = {f"f{i}": "v" for i in range(100)}
    r = c.post("/v1/jobs", data=fields, files={"files": ("a.wav", WAV)})
    assert r.status_code == 400 and "text fields" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(
    "url",
    [
        "/v1/jobs/{job}/events?interval_s=nan",
        "/v1/jobs/{job}/events?interval_s=inf",
        "/v1/jobs/{job}/events?interval_s=-1",
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=100000",
        "/v1/jobs/{job}/files?limit=0",
        "/v1/history?limit=5000",
    ],
)
def test_numeric_query_parameters_are_checked(make_client: Factory, store: JobStore, url: str) -> None:
    store.uploads.add(WAV_SHA, len(WAV), "uploads/x")
    job = store.jobs.create([NewFile("a.wav", WAV_SHA)], JobOptions(model="whisper-1")).job.id
    r = make_client(keys=KeyRing()).get(url.format(job=job))
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text


def test_event_streams_are_capped_per_key_and_end(make_client: Factory, store: JobStore) -> None:
    store.uploads.add(WAV_SHA, len(WAV), "uploads/x", owner="alice")
    job = store.jobs.create([NewFile("a.wav", WAV_SHA)], JobOptions(model="whisper-1"), owner="alice").job.id
    c = make_client(limits=LimitsArgs(max_event_streams=1, max_event_stream_s=1.0))
    url = f"/v1/jobs/{job}/events?interval_s=0.2"
    with c.stream("GET", url, headers=bearer(ALICE)) as first:
        assert first.status_code == 200
        second = c.get(url, headers=bearer(ALICE))
        assert second.status_code == 429 and second.headers["retry-after"], second.text
        t0 = time.monotonic()
        text = "".join(first.iter_text())  # ends by itself after max_event_stream_s
        assert "event: expired" in text and time.monotonic() - t0 < 10, text
    with c.stream("GET", url, headers=bearer(ALICE)) as again:  # the slot was released
        assert again.status_code == 200


# ---------------------------------------------------------------------- 4. quotas


def test_quotas_apply_to_keys_name_themselves_and_show_in_status(make_client: Factory) -> None:
    c = make_client(quotas=QuotaArgs(concurrent_jobs=1, requests_per_minute=None))
    put(c, ALICE)
    job = {"files": [{"sha256": WAV_SHA, "name": "a.wav"}]}
    assert c.post("/v1/jobs", json=job, headers=bearer(ALICE)).status_code == 202
    r = c.post("/v1/jobs", json=job, headers=bearer(ALICE))
    assert r.status_code == 429 and r.headers["retry-after"], r.text
    assert r.json()["error"]["type"] == "quota_exceeded" and "concurrent_jobs" in r.json()["error"]["message"]
    assert c.post("/v1/jobs", json=job, headers=bearer(ROOT)).status_code == 202  # admins have none
    status = c.get("/v1/status", headers=bearer(ALICE)).json()
    assert status["quotas"]["concurrent_jobs"] == {"limit": 1, "used": 1, "counted": "server"}, status
    assert status["quotas"]["stored_upload_gb"]["used"] == round(len(WAV) / 1e9, 6)
    assert c.get("/v1/status", headers=bearer(ROOT)).json()["quotas"] is None
    # An open server has one tenant and no quotas.
    o = make_client(keys=KeyRing(), quotas=QuotaArgs(concurrent_jobs=1))
    put(o, "")
    assert [o.post("/v1/jobs", json=job).status_code for _ in range(3)] == [202, 202, 202]


def test_requests_per_minute_and_stored_bytes(make_client: Factory) -> None:
    c = make_client(quotas=QuotaArgs(requests_per_minute=3, stored_upload_gb=3000 / 1e9))
    codes = [c.get("/v1/models", headers=bearer(ALICE)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429], codes
    r = c.get("/v1/models", headers=bearer(ALICE))
    assert "requests_per_minute" in r.json()["error"]["message"] and int(r.headers["retry-after"]) >= 1
    assert c.get("/v1/models", headers=bearer(BOB)).status_code == 200  # another key's bucket
    c = make_client(quotas=QuotaArgs(requests_per_minute=None, stored_upload_gb=3000 / 1e9))
    assert put(c, ALICE, b"RIFF" + b"a" * 1500).status_code == 201
    r = put(c, ALICE, b"RIFF" + b"b" * 1500)
    assert r.status_code == 429 and "stored_upload_gb" in r.json()["error"]["message"], r.text


# ---------------------------------------------------------------------- 5. other sites


def test_host_names_are_checked_but_probes_answer_any(make_ctx: Callable[..., ApiContext]) -> None:
    c = TestClient(create_app(make_ctx(keys=KeyRing(), hosts=HostPolicy.build("127.0.0.1"))))
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000"):
        assert c.get("/v1/models", headers={"host": host}).status_code == 200, host
    r = c.get("/v1/history", headers={"host": "attacker.example:8000"})  # DNS rebinding
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden", r.text
    assert c.get("/v1/models", headers={"host": "10.0.0.5:8000"}).status_code == 403  # loopback-only server
    assert c.get("/healthz", headers={"host": "10.1.2.3:8000"}).status_code == 200  # a kubelet probe
    wide = HostPolicy.build("0.0.0.0", "asr.example.com")
    assert wide.host_allowed("10.0.0.5:8000") and wide.host_allowed("asr.example.com")
    assert not wide.host_allowed("attacker.example")
    assert HostPolicy.build("10.0.0.5").host_allowed("10.0.0.5") and not HostPolicy.build(
        "10.0.0.5"
    ).host_allowed("10.0.0.6")


def test_other_origins_may_not_change_state_or_open_sockets(make_ctx: Callable[..., ApiContext]) -> None:
    c = TestClient(create_app(make_ctx(keys=KeyRing(), hosts=HostPolicy.build("127.0.0.1", "testserver"))))
    evil = {"origin": "https://evil.example"}
    r = c.post("/v1/jobs", json={}, headers=evil)
    assert r.status_code == 403 and "evil.example" in r.json()["error"]["message"], r.text
    assert c.post("/v1/jobs", json={}, headers={"origin": "null"}).status_code == 403
    assert c.get("/v1/models", headers=evil).status_code == 200  # a read: the browser keeps it from the page
    own = c.post("/v1/jobs", json={}, headers={"origin": "http://testserver"})
    assert own.status_code == 400, own.text  # the console's own origin gets through (to a 400: no files)
    assert c.post("/v1/jobs", json={}).status_code == 400  # SDKs and curl send no Origin
    with pytest.raises(WebSocketDisconnect):
        with c.websocket_connect("/v1/realtime", headers=evil) as ws:
            ws.receive_json()
    with c.websocket_connect("/v1/realtime", headers={"origin": "http://testserver"}) as ws:
        assert ws.receive_json()["type"] == "session.created"
    allowed = TestClient(
        create_app(
            make_ctx(keys=KeyRing(), hosts=HostPolicy.build("127.0.0.1", "testserver", "https://app.example"))
        )
    )
    assert allowed.post("/v1/jobs", json={}, headers={"origin": "https://app.example"}).status_code == 400


# ---------------------------------------------------------------------- 6. what clients write


def test_safe_names() -> None:
    assert safe_stem("../../x.wav") == "x"
    assert safe_stem("/etc/cron.d/evil.wav") == "etc_cron.d_evil"
    assert safe_stem("C:\\Windows\\system32\\a.wav") == "Windows_system32_a"
    assert safe_stem("a\x00b\x1b[31m.wav") == "ab[31m"
    assert safe_stem("..", "fid") == "fid" and safe_stem(".hidden.wav") == "hidden"
    assert safe_stem("sub/a.wav") == "sub_a" and len(safe_stem("x" * 500 + ".wav")) <= 120
    names = UniqueNames(reserved=["job.json"])
    assert [names.claim(safe_stem(n), ["srt", "txt"]) for n in ("a.wav", "a.mp3", "a-2.wav", "A.wav")] == [
        "a", "a-2", "a-2-2", "A-3"
    ]  # fmt: skip
    assert names.claim("job", ["json"]) == "job-2"
    assert [csv_text(v) for v in ("=1+1", "+1", "-2", "@SUM(A1)", "\tx", "ok", None)] == [
        "'=1+1", "'+1", "'-2", "'@SUM(A1)", "'\tx", "ok", ""
    ]  # fmt: skip


HOSTILE = ["../../../escape.wav", "/tmp/abs.wav", "a.wav", "a.mp3", "a-2.wav", "=HYPERLINK().wav"]


@pytest.fixture
def hostile_job(store: JobStore) -> str:
    new = []
    for i, name in enumerate(HOSTILE):
        sha = f"{i + 1:064x}"
        store.uploads.add(sha, 10, f"uploads/{i}")
        new.append(NewFile(name, sha))
    job = store.jobs.create(new, JobOptions(model="whisper-1")).job.id
    for _ in HOSTILE:
        claim = store.queue.claim("w", 60)
        assert claim is not None
        seg = {"start_s": 0.0, "end_s": 1.0, "text": "+cmd|' /C calc'!A0"}
        assert store.queue.commit_window(claim.file.id, claim.attempt, Window(0.0, 1.0, [seg], "en"))  # type: ignore[list-item]
        assert store.queue.complete(claim.file.id, claim.attempt)
    return job


def test_the_cli_export_writes_only_under_out(
    make_client: Factory, hostile_job: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make_client(keys=KeyRing())
    monkeypatch.setattr("serve_app.cli.client", lambda args: c)
    out = tmp_path / "deep" / "er" / "out"
    assert cli(["jobs", "export", hostile_job, "--format", "srt", "--out", str(out)]) == 0
    written = files_under(tmp_path / "deep")
    assert len(written) == len(HOSTILE), written
    assert all(p.parent == out for p in written), written
    assert not (tmp_path / "escape.srt").exists() and not Path("/tmp/abs.srt").exists()
    assert len({p.name for p in written}) == len(HOSTILE)


def test_zip_entries_are_unique_and_csv_cells_are_not_formulas(
    make_client: Factory, hostile_job: str
) -> None:
    c = make_client(keys=KeyRing())
    z = zipfile.ZipFile(io.BytesIO(c.get(f"/v1/jobs/{hostile_job}/export?format=zip").content))
    names = z.namelist()
    assert len(names) == len(set(names)) == 4 * len(HOSTILE) + 1, names
    assert all("/" not in n and ".." not in n for n in names), names
    rows = c.get(f"/v1/jobs/{hostile_job}/export?format=csv&rows=segments").text.splitlines()
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows[1:] for cell in row.split(",")), rows
    assert any(row.startswith("'=HYPERLINK") for row in rows), rows


# ---------------------------------------------------------------------- 7. errors


def test_status_errors_name_no_internals(
    make_client: Factory, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    def broken(*a: Any) -> Any:
        raise OperationalError(
            "SELECT secret_column FROM files", {}, Exception("host db.internal:5432 refused")
        )

    monkeypatch.setattr(store.usage, "since", broken)
    r = make_client(keys=KeyRing()).get("/v1/status")
    assert r.status_code == 200 and r.json()["errors"]["usage"], r.text
    for leak in ("SELECT", "secret_column", "db.internal", "5432", "Traceback"):
        assert leak not in r.text, (leak, r.json()["errors"])


def test_partial_uploads_left_by_a_crash_are_removed(tmp_path: Path) -> None:
    incoming = tmp_path / "uploads" / ".incoming"
    incoming.mkdir(parents=True)
    old, live = incoming / "crashed", incoming / "being-written"
    old.write_bytes(b"x")
    live.write_bytes(b"y")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_incoming(tmp_path) == 1
    assert not old.exists() and live.exists(), "an upload still being written was removed"
    assert json.dumps(remove_stale_incoming(tmp_path / "nothing")) == "0"


def test_live_realtime_sessions_per_key(make_client: Factory) -> None:
    c = make_client(quotas=QuotaArgs(realtime_sessions=1, requests_per_minute=None))
    with c.websocket_connect("/v1/realtime", headers=bearer(ALICE)) as first:
        assert first.receive_json()["type"] == "session.created"
        with c.websocket_connect("/v1/realtime", headers=bearer(ALICE)) as second:
            err = second.receive_json()
            assert err["type"] == "error" and "realtime_sessions" in err["error"]["message"], err
            with pytest.raises(WebSocketDisconnect) as closed:
                second.receive_json()
            assert closed.value.code == 1013, closed.value
        with c.websocket_connect("/v1/realtime", headers=bearer(BOB)) as other:  # another key's quota
            assert other.receive_json()["type"] == "session.created"
        status = c.get("/v1/status", headers=bearer(ALICE)).json()["quotas"]["realtime_sessions"]
        assert status == {"limit": 1, "used": 1, "counted": "replica"}, status
    with c.websocket_connect("/v1/realtime", headers=bearer(ALICE)) as again:  # released on close
        assert again.receive_json()["type"] == "session.created"
