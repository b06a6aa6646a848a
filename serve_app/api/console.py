"""The web console: static files from the package (``serve_app/ui/``) at ``/ui/``, and a
browser's plain ``GET /`` redirected there (the FunASR WebSocket at ``/`` is a WebSocket route
and is untouched).

Every console response carries a Content-Security-Policy that allows no inline script: the
page's modules, its AudioWorklet and its styles come from this origin only; transcripts are
inserted as text, never as HTML (``ui/dom.js``), and the policy is the second line of defence.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

router = APIRouter(tags=["console"], include_in_schema=False)

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        # The realtime socket is on this origin; ws:/wss: because CSP 2 browsers do not let
        # 'self' match a WebSocket URL.
        "connect-src 'self' ws: wss:",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}

# ``html=True``: ``/ui/`` answers with index.html. ``follow_symlink`` stays off: nothing outside
# the package directory is served.
_static = StaticFiles(directory=UI_DIR, html=True, check_dir=False)


def root_path(request: Request) -> str:
    """The app's prefix (Serve's ``route_prefix``, e.g. ``/funasr-serve`` in tests; ``""`` at ``/``)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/")
async def to_console(request: Request) -> RedirectResponse:
    """A browser opening the server's address lands on the console."""
    return RedirectResponse(f"{root_path(request)}/ui/", status_code=307)


@router.get("/ui")
async def to_console_dir(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{root_path(request)}/ui/", status_code=307)


@router.get("/ui/{path:path}")
async def console_file(path: str, request: Request) -> Response:
    """A file of the console; ``/ui/`` is index.html. Missing files are our shaped 404."""
    # Normalised as StaticFiles does; its lookup refuses anything outside UI_DIR.
    response = await _static.get_response(posixpath.normpath(path or "."), request.scope)
    response.headers.update(HEADERS)
    if path in ("", "index.html"):
        # The page names its modules without a version: revalidate instead of caching stale ones.
        response.headers["Cache-Control"] = "no-cache"
    return response
