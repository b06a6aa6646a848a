"""The web console's router and its static files, without Ray: ``/ui/`` serves the page with a
Content-Security-Policy that allows no inline script, a browser's ``GET /`` is redirected there
(under Serve's route prefix too), nothing outside the package directory is served, the page
and its modules never insert text as HTML, and every string has its English and Chinese."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve_app.api import console
from serve_app.api.errors import install_error_handlers
from serve_app.contracts import Transcript, TranscriptSegment
from serve_app.formats import to_srt, to_vtt

UI = console.UI_DIR


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(console.router)
    return TestClient(app)


def csp_directives(header: str) -> dict[str, str]:
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] if " " in d else "" for d in header.split("; ")}


def test_ui_serves_index_with_csp(client: TestClient) -> None:
    r = client.get("/ui/")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in r.text
    csp = csp_directives(r.headers["content-security-policy"])
    assert csp["script-src"] == "'self'", csp
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    assert csp["connect-src"] == "'self' ws: wss:" and csp["media-src"] == "'self' blob:", csp
    assert csp["object-src"] == "'none'" and csp["frame-ancestors"] == "'none'", csp
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("name", "ctype"),
    [("app.js", "javascript"), ("pcm-worklet.js", "javascript"), ("style.css", "text/css")],
)
def test_ui_files_carry_the_policy(client: TestClient, name: str, ctype: str) -> None:
    r = client.get(f"/ui/{name}")
    assert r.status_code == 200 and ctype in r.headers["content-type"], r.headers
    assert "script-src 'self'" in r.headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/ui/nothing.js", "/ui/../api/console.py", "/ui/%2e%2e/config.py"])
def test_ui_serves_nothing_else(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert r.json()["error"]["type"] == "not_found_error" or "error" in r.json()


@pytest.mark.parametrize(("root", "target"), [("", "/ui/"), ("/funasr-serve", "/funasr-serve/ui/")])
def test_get_root_redirects_to_the_console(root: str, target: str) -> None:
    app = FastAPI()
    app.include_router(console.router)
    c = TestClient(app, root_path=root)
    for path in ("/", "/ui"):
        r = c.get(path, follow_redirects=False)
        assert r.status_code in (307, 308) and r.headers["location"] == target, (path, r.headers)


def test_the_funasr_socket_keeps_slash() -> None:
    """The console adds an HTTP route at ``/``; a WebSocket to ``/`` still speaks FunASR's
    protocol (here: a frame that is not JSON is refused with its close code)."""
    from types import SimpleNamespace

    from starlette.websockets import WebSocketDisconnect

    from serve_app.api.realtime import funasr as realtime_funasr

    app = FastAPI()
    from serve_app.api.quotas import Quotas
    from serve_app.config import QuotaArgs
    from serve_app.realtime.capacity import SocketRegistry

    app.state.ctx = SimpleNamespace(
        realtime=SimpleNamespace(idle_timeout_s=5),
        sockets=SocketRegistry(None, None),
        quota=Quotas(QuotaArgs(), enabled=False),
    )
    for module in (console, realtime_funasr):
        app.include_router(module.router)
    c = TestClient(app)
    assert c.get("/", follow_redirects=False).status_code == 307
    with c.websocket_connect("/") as ws:
        ws.send_text("hello")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1007 and "must be JSON" in closed.value.reason, closed.value


# --- the page itself --------------------------------------------------------------------------


def test_page_has_no_inline_script_or_style() -> None:
    html = (UI / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts), scripts
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handlers"
    assert not re.search(r"\sstyle\s*=", html) and "<style" not in html, "inline styles"
    assert "javascript:" not in html


def test_scripts_never_insert_html() -> None:
    for js in UI.glob("*.js"):
        code = js.read_text()
        for sink in (
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ):
            assert sink not in code, f"{js.name} uses {sink}"


def strings() -> dict[str, dict[str, str]]:
    """The dictionaries of i18n.js (a JS object literal whose keys and values are JSON strings)."""
    code = (UI / "i18n.js").read_text()
    out: dict[str, dict[str, str]] = {}
    for lang, block in re.findall(r"^  (\w+): \{\n(.*?)^  \},", code, re.S | re.M):
        pairs = re.findall(r'^\s+("?[\w.]+"?): ("(?:[^"\\]|\\.)*"),$', block, re.M)
        out[lang] = {k.strip('"'): json.loads(v) for k, v in pairs}
        assert len(pairs) == block.count("\n"), f"unparsed lines in the {lang} block"
    return out


def test_every_string_is_in_english_and_chinese() -> None:
    d = strings()
    assert set(d) == {"en", "zh"}
    assert set(d["en"]) == set(d["zh"]), set(d["en"]) ^ set(d["zh"])
    used = set(
        re.findall(r'data-i18n(?:-placeholder|-aria-label)?="([\w.]+)"', (UI / "index.html").read_text())
    )
    for js in UI.glob("*.js"):
        code = js.read_text()
        used |= set(re.findall(r'\b(?:t|tr)\("([\w.]+)"', code)) | set(re.findall(r'i18n: "([\w.]+)"', code))
    missing = used - set(d["en"])
    assert not missing, missing
    for lang in d.values():  # placeholders agree between languages
        for key, text in lang.items():
            assert set(re.findall(r"\{\w+\}", text)) == set(re.findall(r"\{\w+\}", d["en"][key])), key
    states = {"queued", "running", "completed", "failed", "cancelled", "pending", "done"}
    assert {f"state.{s}" for s in states} <= set(d["en"])


def test_browser_exports_match_the_server(tmp_path: Path) -> None:
    """formats.js (exports made in the browser) renders SRT and WebVTT as serve_app.formats does."""
    assert shutil.which("node"), "node is not installed (make system-test-deps installs nodejs)"
    t = Transcript(
        language="en",
        duration_s=3725.5,
        segments=[
            TranscriptSegment(0.0, 1.234, " Ever tried."),
            TranscriptSegment(1.5, 2.0, "   "),
            TranscriptSegment(3600.25, 3725.5, 'Fail "better", again'),
            TranscriptSegment(3726.0, 3727.0, "=HYPERLINK(1)"),
        ],
    )
    verbose = {
        "text": t.text,
        "segments": [{"start": s.start_s, "end": s.end_s, "text": s.text} for s in t.segments],
    }
    script = tmp_path / "run.mjs"
    script.write_text(
        f"import * as f from {json.dumps((UI / 'formats.js').as_uri())};\n"
        f"const v = {json.dumps(verbose)};\n"
        "process.stdout.write(JSON.stringify({srt: f.toSrt(v), vtt: f.toVtt(v), csv: f.toCsv(v),"
        " name: f.exportName('dir/talk.v1.mp3', 'srt')}));\n"
    )
    out = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    assert out["srt"] == to_srt(t), out["srt"]
    assert out["vtt"] == to_vtt(t), out["vtt"]
    assert out["csv"].splitlines()[2] == '3600.250,3725.500,"Fail ""better"", again"', out["csv"]
    assert out["csv"].splitlines()[3] == "3726.000,3727.000,'=HYPERLINK(1)", out["csv"]  # not a formula
    assert out["name"] == "talk.v1.srt"
