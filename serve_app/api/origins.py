"""Browsers on other sites: the ``Host`` and ``Origin`` checks, in one pure ASGI middleware
around everything else.

* ``Host``: a page on another site can reach a server on loopback or an office network by DNS
  rebinding (its own name made to resolve to the server's address); the browser then sends that
  name as ``Host``. So requests are answered only for allowed names: the loopback names when the
  server listens only on loopback; otherwise IP addresses (of the listening address; any when
  it listens on all of them) and the loopback names; and always the names configured in
  ``FUNASR_SERVE_ALLOWED_HOSTS``. ``/healthz`` and ``/readyz`` answer every host (Kubernetes
  probes send the pod's address). A request without ``Host`` (HTTP/1.0) is not a browser's.
* ``Origin``: a WebSocket or a state-changing request (POST, PUT, PATCH, DELETE) whose
  ``Origin`` is present must come from the server's own origin (the console) or one in
  ``FUNASR_SERVE_ALLOWED_ORIGINS``. Clients that send no ``Origin`` (FunASR's, the SDKs, curl)
  are unaffected; browsers always send it on these requests.

A refused HTTP request is answered 403 with the usual error body; a refused WebSocket handshake
is answered 403 (closed before it is accepted).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.api.auth import PUBLIC_HTTP, route_path
from serve_app.api.errors import error_response, request_id
from serve_app.errors import Forbidden

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLOSE_POLICY_VIOLATION = 1008


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def split_host(value: str) -> tuple[str, int | None]:
    """``(name, port)`` of a ``Host`` header or netloc: lowercase, no trailing dot, IPv6
    without brackets."""
    value = value.strip().lower()
    port: int | None = None
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif value.count(":") == 1:
        name, _, p = value.partition(":")
        port = int(p) if p.isdigit() else None
    else:
        name = value
    return name.rstrip("."), port


def _names(csv: str) -> frozenset[str]:
    return frozenset(n.strip().lower().rstrip("/") for n in csv.split(",") if n.strip())


@dataclass(frozen=True)
class HostPolicy:
    """Which ``Host`` names and ``Origin``s are answered (see the module docstring)."""

    names: frozenset[str]
    """Allowed names, IP literals included."""
    any_ip: bool
    """Any IP literal (the server listens on every address)."""
    any_host: bool
    origins: frozenset[str]
    any_origin: bool

    @classmethod
    def build(cls, listen_host: str | None, allowed_hosts: str = "", allowed_origins: str = "") -> HostPolicy:
        """``listen_host``: Serve's HTTP host (``None``: unknown, taken as every address)."""
        hosts, origins = _names(allowed_hosts), _names(allowed_origins)
        names = set(LOOPBACK_NAMES) | {h for h in hosts if h != "*"}
        any_ip = False
        if listen_host is not None and listen_host.lower() not in LOOPBACK_NAMES:
            ip = _ip(listen_host)
            if ip is None:
                names.add(listen_host.lower())  # a host name to listen on is a name to answer to
            elif ip.is_unspecified:
                any_ip = True
            elif not ip.is_loopback:
                names.add(str(ip))
        elif listen_host is None:
            any_ip = True
        return cls(
            names=frozenset(names),
            any_ip=any_ip,
            any_host="*" in hosts,
            origins=frozenset(o for o in origins if o != "*"),
            any_origin="*" in origins,
        )

    def host_allowed(self, host: str) -> bool:
        if self.any_host:
            return True
        name, _ = split_host(host)
        ip = _ip(name)
        if ip is not None:
            return ip.is_loopback or str(ip) in self.names or self.any_ip
        return name in self.names

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """The page's origin is the server's own (same host and port as ``Host``) or allowed."""
        if self.any_origin or origin.lower().rstrip("/") in self.origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or host is None:
            return False  # "null" (sandboxed frames, files) and anything else unknown
        default = 443 if parts.scheme == "https" else 80
        o_name, o_port = split_host(parts.netloc)
        h_name, h_port = split_host(host)
        return (o_name, o_port or default) == (h_name, h_port or default) and self.host_allowed(host)


class HostOriginMiddleware:
    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or (kind == "http" and route_path(scope) in PUBLIC_HTTP):
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", [])
            if k in (b"host", b"origin")
        }
        host, origin = headers.get("host"), headers.get("origin")
        reason = None
        if host is not None and not self.policy.host_allowed(host):
            name = split_host(host)[0][:100]
            reason = f"this server does not answer to the host name {name!r} (FUNASR_SERVE_ALLOWED_HOSTS)"
        elif origin is not None and (kind == "websocket" or scope.get("method") in STATE_CHANGING):
            if not self.policy.origin_allowed(origin, host):
                reason = (
                    f"requests from pages of {origin[:100]!r} are not allowed (FUNASR_SERVE_ALLOWED_ORIGINS)"
                )
        if reason is None:
            await self.app(scope, receive, send)
        elif kind == "http":
            await error_response(Forbidden(reason), request_id(Request(scope, receive)))(scope, receive, send)
        elif (await receive())["type"] == "websocket.connect":
            # Closed before it is accepted: the handshake is answered 403.
            await send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION, "reason": reason[:120]})
