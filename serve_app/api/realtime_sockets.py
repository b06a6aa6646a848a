"""What both realtime protocols do as a socket opens: take its slot on the Ingress replica's
``SocketRegistry`` (``ApiContext.sockets``), or refuse it.

A refused socket has been accepted and is closed at once with 1013 (try again later) and the
reason, as ``serve_app.api.auth`` does for 1008: a browser sees the code and the reason of a
socket it opened, not of a handshake that failed. Nothing is buffered for it. The route holds
the slot in a ``with`` block around the connection, so it is released however the socket ends,
then calls ``after_socket``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import WebSocket
from starlette.websockets import WebSocketState

from serve_app.api.context import ApiContext
from serve_app.api.quotas import Caller
from serve_app.errors import ServeError
from serve_app.realtime.capacity import TRIM_AFTER_BYTES, SocketLimitReached, SocketSlot, trim_heap

CLOSE_TRY_AGAIN_LATER = 1013


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
