"""Per-key quotas (``QuotaArgs``): which apply to a request, the ones an Ingress replica counts
itself (the request rate here; live realtime sockets in ``ApiContext.sockets``), and the cap on
open event streams.

Quotas apply only while API keys are configured, and never to admin keys: a server without
keys has one tenant, its operator. The database-held quotas (jobs, queued audio, stored
uploads) are checked by the job store inside the transaction that would pass them
(``JobQuota``, ``max_stored_bytes``), so they are exact across replicas; the rate and the live
sessions are per Ingress replica.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.api.errors import error_response, request_id
from serve_app.config import QuotaArgs
from serve_app.errors import QuotaExceeded, TooManyStreams
from serve_app.jobs import JobQuota

CLOSE_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True)
class Caller:
    """Who sent a request: its key's label (``None`` without API keys) and admin flag."""

    owner: str | None
    admin: bool = False

    @classmethod
    def of(cls, scope: Scope) -> Caller:
        state = scope.get("state") or {}
        return cls(owner=state.get("owner"), admin=bool(state.get("admin", False)))


@dataclass(frozen=True)
class Quotas:
    """``QuotaArgs`` as they apply to callers (``enabled``: API keys are configured)."""

    args: QuotaArgs
    enabled: bool

    def applies(self, caller: Caller) -> bool:
        return self.enabled and caller.owner is not None and not caller.admin

    def jobs(self, caller: Caller) -> JobQuota | None:
        if not self.applies(caller):
            return None
        hours = self.args.queued_audio_h
        return JobQuota(
            max_live_jobs=self.args.concurrent_jobs,
            max_queued_audio_s=None if hours is None else hours * 3600.0,
        )

    def stored_bytes(self, caller: Caller) -> int | None:
        gb = self.args.stored_upload_gb
        return None if not self.applies(caller) or gb is None else int(gb * 1e9)

    def realtime_sessions(self, caller: Caller) -> int | None:
        return self.args.realtime_sessions if self.applies(caller) else None

    def requests_per_minute(self, caller: Caller) -> int | None:
        return self.args.requests_per_minute if self.applies(caller) else None


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """Token buckets per owner: ``per_minute`` requests in a burst, refilled evenly over a
    minute. Owners are the configured keys' labels, so the table stays small."""

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, owner: str, per_minute: int) -> float | None:
        """Spend one token; ``None`` if there was one, else the seconds until there is."""
        now = self.clock()
        b = self._buckets.get(owner)
        if b is None:
            b = self._buckets[owner] = _Bucket(float(per_minute), now)
        b.tokens = min(float(per_minute), b.tokens + (now - b.at) * per_minute / 60.0)
        b.at = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return None
        return (1.0 - b.tokens) * 60.0 / per_minute

    def used(self, owner: str, per_minute: int) -> int:
        """Requests counted against the bucket now (``per_minute`` minus the tokens left)."""
        b = self._buckets.get(owner)
        if b is None:
            return 0
        tokens = min(float(per_minute), b.tokens + (self.clock() - b.at) * per_minute / 60.0)
        return max(0, math.ceil(per_minute - tokens))


class RateLimitMiddleware:
    """``requests_per_minute`` for every request that carries a key (it runs inside
    ``ApiKeyMiddleware``, which names the caller); probes and the console's files carry none."""

    def __init__(self, app: ASGIApp, quotas: Quotas, limiter: RateLimiter) -> None:
        self.app, self.quotas, self.limiter = app, quotas, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            caller = Caller.of(scope)
            per_minute = self.quotas.requests_per_minute(caller)
            if per_minute is not None and caller.owner is not None:
                wait = self.limiter.take(caller.owner, per_minute)
                if wait is not None:
                    err = QuotaExceeded(
                        f"quota requests_per_minute exceeded: this key may send {per_minute} requests a "
                        f"minute (to this server replica); retry in {wait:.0f} s"
                    )
                    err.retry_after_s = max(1.0, wait)
                    await _refuse(scope, receive, send, err)
                    return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, receive: Receive, send: Send, err: QuotaExceeded) -> None:
    from starlette.requests import Request

    if scope["type"] == "http":
        await error_response(err, request_id(Request(scope, receive)))(scope, receive, send)
        return
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER, "reason": err.message[:120]})


@dataclass
class EventStreams:
    """Open server-sent event streams per owner on this replica (without keys: one owner)."""

    limit: int
    _open: dict[str, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def hold(self, owner: str | None) -> Iterator[None]:
        key = owner or ""
        if self._open.get(key, 0) >= self.limit:
            raise TooManyStreams(
                f"this key already has {self.limit} event streams open (the most it may); close one first"
            )
        self._open[key] = self._open.get(key, 0) + 1
        try:
            yield
        finally:
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]

    def count(self, owner: str | None) -> int:
        return self._open.get(owner or "", 0)
