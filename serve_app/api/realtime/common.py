"""What both realtime protocols share: a socket's slot, its send/close/idle-receive loop, and
the close codes of faults.

As a socket opens it takes its slot on the Ingress replica's ``SocketRegistry``
(``ApiContext.sockets``), or is refused: a refused socket has been accepted and is closed at
once with 1013 (try again later) and the reason, as ``serve_app.api.auth`` does for 1008 (a
browser sees the code and the reason of a socket it opened, not of a handshake that failed).
Nothing is buffered for it. ``serve_socket`` holds the slot in a ``with`` block around the
connection, so it is released however the socket ends, then calls ``after_socket``.

A ``Connection`` is one protocol's side of one socket: ``run`` receives until the client goes,
hands each frame to ``on_bytes`` / ``on_text``, and ends the socket on a fault (a
``ProtocolError``: its own code; a ``ServeError``: ``close_code``) after ``report`` has told the
client in the protocol's words.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from serve_app.api.context import ApiContext
from serve_app.api.quotas import Caller
from serve_app.errors import (
    InvalidRequest,
    Overloaded,
    PayloadTooLarge,
    ServeError,
    SocketLimitReached,
    TooFast,
)
from serve_app.realtime.audio import Budget
from serve_app.realtime.capacity import TRIM_AFTER_BYTES, SocketSlot, trim_heap
from serve_app.realtime.events import Emit
from serve_app.realtime.session import RealtimeSession, SessionOptions

CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_CODES: dict[type[ServeError], int] = {
    InvalidRequest: 1007,
    TooFast: 1008,
    PayloadTooLarge: 1009,
    Overloaded: 1013,
}
"""WebSocket close codes (RFC 6455 section 7.4.1) of the errors a session may end with."""


def close_code(err: ServeError) -> int:
    """The close code of a socket that ends with ``err``: 1011 (internal error) unless listed."""
    return next((code for cls, code in CLOSE_CODES.items() if isinstance(err, cls)), 1011)


class ProtocolError(Exception):
    """A client that breaks the protocol: closed with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def socket_owner(ws: WebSocket) -> str | None:
    """The socket's owner: its API key's label (``serve_app.api.auth`` puts it on the scope's
    ``state``), ``None`` on a server without keys or a socket open to anyone."""
    owner = ws.scope.get("state", {}).get("owner")
    return str(owner) if owner is not None else None


async def open_slot(
    ws: WebSocket,
    ctx: ApiContext,
    on_refused: Callable[[ServeError], Awaitable[None]] | None = None,
    per_owner_limit: int | None = None,
) -> SocketSlot | None:
    """The accepted socket's slot, or ``None`` once it has been refused and closed
    (``on_refused`` first sends the protocol's own error message, if it has one)."""
    if per_owner_limit is None:  # the key's quota (none without keys, none for an admin key)
        per_owner_limit = ctx.quota.realtime_sessions(Caller.of(ws.scope))
    try:
        return ctx.sockets.acquire(socket_owner(ws), per_owner_limit)
    except SocketLimitReached as e:
        if on_refused is not None:
            await on_refused(e)
        if ws.client_state == WebSocketState.CONNECTED:
            await ws.close(code=CLOSE_TRY_AGAIN_LATER, reason=e.message[:120])
        return None


async def after_socket(slot: SocketSlot) -> None:
    """Once a socket has ended and its slot is closed: a socket that buffered a lot (a long
    offline stream) gives the heap it freed back to the operating system."""
    if slot.peak >= TRIM_AFTER_BYTES:
        await asyncio.to_thread(trim_heap)


class Connection(ABC):
    """One realtime protocol on one accepted socket."""

    subprotocol: ClassVar[str]
    """Chosen when the client offers it (``binary`` for FunASR, ``realtime`` for OpenAI)."""

    def __init__(self, ws: WebSocket, ctx: ApiContext) -> None:
        self.ws, self.ctx = ws, ctx
        self.budget: Budget | None = None
        """Pays for the audio its sessions buffer (the socket's slot on ``ctx.sockets``)."""
        self._send_lock = asyncio.Lock()

    # -- what each protocol says --------------------------------------------------------------

    @abstractmethod
    async def opened(self) -> None:
        """Sent as the socket opens (after its slot is taken)."""

    @abstractmethod
    async def refused(self, error: ServeError) -> None:
        """Sent before a socket without a slot is closed with 1013."""

    @abstractmethod
    async def on_text(self, text: str) -> None: ...

    @abstractmethod
    async def on_bytes(self, data: bytes) -> None: ...

    @abstractmethod
    async def report(self, fault: ProtocolError | ServeError) -> None:
        """Tell the client why its socket is about to close (its close reason says it too)."""

    def busy(self) -> bool:
        """The client waits for the server: an idle socket is not closed meanwhile."""
        return False

    @abstractmethod
    async def ended(self) -> None:
        """However the socket ended: free what the connection holds."""

    # -- the skeleton ---------------------------------------------------------------------------

    async def send_json(self, message: dict[str, Any], ensure_ascii: bool = True) -> None:
        """One text frame; nothing once the client has gone (it may go at any moment)."""
        if self.ws.client_state != WebSocketState.CONNECTED:
            return
        async with self._send_lock:
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=ensure_ascii))
            except (WebSocketDisconnect, RuntimeError):  # the client went away meanwhile
                pass

    async def close(self, code: int, reason: str) -> None:
        if self.ws.client_state == WebSocketState.CONNECTED:
            try:
                await self.ws.close(code=code, reason=reason[:120])  # a close reason: <= 123 bytes
            except RuntimeError:
                pass

    def new_session(self, options: SessionOptions, emit: Emit) -> RealtimeSession:
        """A session on this connection's context, paid for from its budget."""
        ctx = self.ctx
        return RealtimeSession(
            ctx.streaming, ctx.pipeline, ctx.realtime, ctx.limits, options, emit, self.budget
        )

    async def run(self) -> None:
        """Receive until the client goes, a fault, or ``realtime.idle_timeout_s`` of silence."""
        idle = self.ctx.realtime.idle_timeout_s
        try:
            await self.opened()
            while True:
                try:
                    message = await asyncio.wait_for(self.ws.receive(), timeout=idle)
                except TimeoutError:
                    if self.busy():
                        continue
                    raise ProtocolError(1008, f"nothing received for {idle:.0f} s") from None
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    await self.on_bytes(message["bytes"])
                elif message.get("text") is not None:
                    await self.on_text(message["text"])
        except ProtocolError as p:
            await self.report(p)
            await self.close(p.code, p.reason)
        except ServeError as e:
            await self.report(e)
            await self.close(close_code(e), e.message)
        except WebSocketDisconnect:
            pass
        finally:
            await self.ended()


async def serve_socket(ws: WebSocket, conn: Connection) -> None:
    """Accept ``ws``, take its slot, and run ``conn`` on it while the slot is held."""
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol=conn.subprotocol if conn.subprotocol in offered else None)
    slot = await open_slot(ws, conn.ctx, on_refused=conn.refused)
    if slot is None:
        return
    with slot:
        conn.budget = slot
        await conn.run()
    await after_socket(slot)
