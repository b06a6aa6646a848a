"""The web console in the served app: ``/ui/`` under Serve's route prefix with its
Content-Security-Policy, a browser's ``GET /`` redirected there, and the FunASR protocol's
WebSocket at ``/`` unchanged beside that redirect."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support import funasr_stream, pcm16, ws_url
from tools.audio import read_wav


def test_console_page_and_redirect(local_app: str) -> None:
    prefix = urlsplit(local_app).path  # /local
    with httpx.Client(timeout=30) as c:
        page = c.get(f"{local_app}/ui/")
        assert page.status_code == 200 and "<title>funasr-serve</title>" in page.text, page.text[:300]
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
        assert c.get(f"{local_app}/ui/pcm-worklet.js").status_code == 200
        for path in ("/",):
            r = c.get(f"{local_app}{path}", follow_redirects=False)
            assert r.status_code in (307, 308) and r.headers["location"] == f"{prefix}/ui/", (path, r.headers)
        # The API beside it is untouched.
        assert c.get(f"{local_app}/v1/models").json()["data"], "models"


def test_funasr_socket_at_slash_still_speaks_funasr(local_app: str, beckett_wav: Path) -> None:
    samples, _ = read_wav(beckett_wav.read_bytes())
    replies = asyncio.run(funasr_stream(ws_url(local_app, "/"), pcm16(samples[: 16000 * 4]), "offline"))
    offline = [r for r in replies if r.get("mode") == "offline" and not r.get("is_end")]
    assert len(offline) == 1 and offline[0]["text"], replies
    assert replies[-1]["is_end"] is True, replies
