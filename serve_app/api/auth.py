"""API keys, enforced in one place: a pure ASGI middleware around the whole app, so no route
can forget it and WebSockets are covered before any route accepts them.

With no key configured the server is open, as before. With keys, every HTTP route needs
``Authorization: Bearer <key>`` (what the OpenAI SDK sends) except ``PUBLIC`` (probes, the
console's files and the ``GET /`` redirect: the page must load to ask for a key). A WebSocket
may also carry the key as an ``api_key`` query parameter or as the subprotocol
``openai-insecure-api-key.<key>`` (what OpenAI's browser clients offer: browsers cannot set
headers on a WebSocket). FunASR's protocol sockets (``FUNASR_SOCKETS``) are open only with
``KeyRing.funasr_socket_open``.

A refused HTTP request is answered 401 with the usual error body; a refused WebSocket is
accepted and closed at once with 1008 (policy violation), which a browser can see (a refused
handshake is only "1006" to a page). Keys are matched in constant time
(``KeyRing.match``); the key is taken out of the scope that routes see and never logged.

An accepted request carries its key on ``request.state`` (``owner``: the label, ``admin``);
``serve_app.api.context`` turns that into who owns what it creates and whose jobs and history
it may see.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.api.errors import error_response, request_id
from serve_app.errors import Unauthorized
from serve_app.keys import ApiKey, KeyRing

PUBLIC_HTTP = ("/healthz", "/readyz")
"""HTTP paths open to anyone, any method (probes must work without a key)."""
CONSOLE_PREFIX = "/ui"
"""The console's static files (``serve_app.api.console``), open so the page can ask for a key."""
FUNASR_SOCKETS = ("/", "/v1/realtime/funasr")
"""FunASR's WebSocket protocol (``serve_app.api.realtime.funasr``): open only by setting."""
SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
QUERY_PARAM = "api_key"
CLOSE_POLICY_VIOLATION = 1008

MISSING = "this server needs an API key: send 'Authorization: Bearer <key>'"
INVALID = "invalid API key"


def route_path(scope: Scope) -> str:
    """The path below the app's prefix (Serve's ``route_prefix`` is the scope's ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    return path or "/"


def is_public(scope: Scope, keys: KeyRing) -> bool:
    """Whether this request needs no key (the explicit list in the module docstring)."""
    path = route_path(scope)
    if scope["type"] == "http":
        if path in PUBLIC_HTTP or path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"):
            return True
        return path == "/" and scope.get("method") in ("GET", "HEAD")  # the console redirect
    return keys.funasr_socket_open and path in FUNASR_SOCKETS


def presented_key(scope: Scope) -> tuple[str | None, str | None]:
    """The key the client sent, and the subprotocol that carried it (if one did)."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip(), None
    if scope["type"] != "websocket":
        return None, None
    for proto in scope.get("subprotocols") or []:
        if proto.startswith(SUBPROTOCOL_PREFIX) and len(proto) > len(SUBPROTOCOL_PREFIX):
            return proto[len(SUBPROTOCOL_PREFIX) :], proto
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if name == QUERY_PARAM and value:
            return value, None
    return None, None


def _without_key(scope: Scope, key: ApiKey) -> Scope:
    """The scope routes see: the key's owner on ``state``, the key itself gone from the
    subprotocols and query string (nothing downstream can echo or log it)."""
    out = dict(scope)
    out["state"] = {**scope.get("state", {}), "owner": key.label, "admin": key.admin}
    if scope["type"] == "websocket":
        out["subprotocols"] = [
            p for p in scope.get("subprotocols") or [] if not p.startswith(SUBPROTOCOL_PREFIX)
        ]
        query = scope.get("query_string", b"")
        if QUERY_PARAM.encode() in query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            out["query_string"] = urlencode([(k, v) for k, v in pairs if k != QUERY_PARAM]).encode("latin-1")
    return out


class ApiKeyMiddleware:
    """Requires a configured API key on every request that ``is_public`` does not exempt."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.keys.enabled or is_public(scope, self.keys):
            await self.app(scope, receive, send)
            return
        presented, via_subprotocol = presented_key(scope)
        key = self.keys.match(presented)
        if key is None:
            reason = MISSING if presented is None else INVALID
            if scope["type"] == "http":
                await _refuse_http(scope, receive, send, reason)
            else:
                await _refuse_websocket(scope, receive, send, reason)
            return
        if via_subprotocol is not None:
            send = _echoing(send, via_subprotocol)
        await self.app(_without_key(scope, key), receive, send)


def _echoing(send: Send, subprotocol: str) -> Send:
    """A browser fails a handshake whose answer names none of the subprotocols it offered:
    when the route picks none (it never saw the key's), the key's is echoed."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = {**message, "subprotocol": subprotocol}
        await send(message)

    return wrapped


async def _refuse_http(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
    request = Request(scope, receive)
    response = error_response(Unauthorized(reason), request_id(request))
    response.headers["WWW-Authenticate"] = "Bearer"
    await response(scope, receive, send)


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send, reason: str) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    offered = list(scope.get("subprotocols") or [])
    # Accepted (then closed) with a subprotocol the client offered, so that a browser sees
    # the 1008 and its reason rather than a failed handshake.
    pick = next((p for p in offered if not p.startswith(SUBPROTOCOL_PREFIX)), offered[0] if offered else None)
    await send({"type": "websocket.accept", "subprotocol": pick, "headers": []})
    await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION, "reason": reason})


def open_warning(keys: KeyRing, host: str | None) -> str | None:
    """The line to log when the server needs no key and listens beyond loopback (``host``:
    Serve's HTTP host; ``None`` when it could not be read)."""
    if keys.enabled:
        return None
    if host is not None:
        try:
            if host == "localhost" or ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass  # a host name: it may resolve to anything
    where = f"on {host}" if host is not None else "possibly beyond loopback"
    return (
        f"no API keys are configured and the server listens {where}: anyone who can reach it may "
        "transcribe and read every job and history entry. Create keys with `funasr-serve keys "
        "create` and set FUNASR_SERVE_API_KEYS or FUNASR_SERVE_API_KEYS_FILE."
    )
