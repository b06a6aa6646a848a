"""What one Ingress replica lets realtime sockets hold: how many are live (in all, and per
owner) and how many bytes of audio they buffer together.

A Streaming replica's ``max_sessions`` counts only sessions that reach it; an offline-mode
FunASR socket never does (its audio waits here for the offline pipeline), so the Ingress keeps
its own count of every live socket, every protocol and mode. ``SocketRegistry.acquire`` takes a
slot when a socket opens and refuses one beyond the caps (``SocketLimitReached``: which cap in
``cap``); the slot is the socket's account for the audio it buffers (``reserve`` before memory
is taken, ``release`` when it is freed), and ``SocketSlot.close`` gives back the slot and every
byte still reserved, whatever way the socket ended. One registry per Ingress replica, on
``ApiContext.sockets``; everything runs on the replica's event loop (the lock only guards
against a caller on another thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections import Counter
from collections.abc import Callable
from types import TracebackType

from serve_app.errors import BufferFull, OwnerSocketLimitReached, SocketLimitReached


class SocketRegistry:
    """The live realtime sockets of one Ingress replica and the audio bytes they buffer.

    ``max_sockets``: live sockets in all; ``max_buffered_bytes``: bytes buffered by all of
    them together (``None``: no cap, for tests and tools)."""

    def __init__(self, max_sockets: int | None, max_buffered_bytes: int | None) -> None:
        self.max_sockets = max_sockets
        self.max_buffered_bytes = max_buffered_bytes
        self._lock = threading.Lock()
        self._live = 0
        self._owners: Counter[str] = Counter()
        self._bytes = 0

    @property
    def sockets(self) -> int:
        return self._live

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def owned(self, owner: str) -> int:
        """Live sockets of ``owner``."""
        return self._owners[owner]

    def acquire(self, owner: str | None = None, per_owner_limit: int | None = None) -> SocketSlot:
        """A slot for a new socket of ``owner`` (``None``: a server without API keys), or
        ``SocketLimitReached`` (``OwnerSocketLimitReached`` when ``per_owner_limit`` is what
        refused it) with a reason a client can read."""
        with self._lock:
            if self.max_sockets is not None and self._live >= self.max_sockets:
                raise SocketLimitReached(
                    f"this server holds its maximum of {self.max_sockets} live realtime sockets; "
                    "try again later"
                )
            if owner is not None and per_owner_limit is not None and self._owners[owner] >= per_owner_limit:
                raise OwnerSocketLimitReached(
                    f"quota realtime_sessions exceeded: this API key holds its maximum of {per_owner_limit} "
                    "live realtime sockets on this server replica; close one and try again"
                )
            self._live += 1
            if owner is not None:
                self._owners[owner] += 1
        return SocketSlot(self, owner)

    def _reserve(self, nbytes: int) -> None:
        with self._lock:
            if self.max_buffered_bytes is not None and self._bytes + nbytes > self.max_buffered_bytes:
                raise BufferFull(
                    f"this server buffers its maximum of {self.max_buffered_bytes / 2**20:g} MB of "
                    "realtime audio; try again later"
                )
            self._bytes += nbytes

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._bytes -= nbytes

    def _free(self, owner: str | None) -> None:
        with self._lock:
            self._live -= 1
            if owner is not None:
                self._owners[owner] -= 1
                if self._owners[owner] <= 0:
                    del self._owners[owner]


class SocketSlot:
    """One live socket's place in its ``SocketRegistry``, and its account of buffered bytes
    (what ``serve_app.realtime.audio.Budget`` asks of it). A context manager: leaving the
    ``with`` block (``close``) frees the slot and every byte it still holds."""

    def __init__(self, registry: SocketRegistry, owner: str | None) -> None:
        self.registry, self.owner = registry, owner
        self.held = 0
        """Bytes this socket has reserved and not released."""
        self.peak = 0
        """The most it held at once."""
        self._open = True

    def reserve(self, nbytes: int) -> None:
        """Take ``nbytes`` of the replica's budget before allocating them; ``BufferFull`` when
        the replica has no room (nothing is taken then)."""
        if nbytes <= 0:
            return
        if not self._open:
            raise BufferFull("the socket is closed")
        self.registry._reserve(nbytes)
        self.held += nbytes
        self.peak = max(self.peak, self.held)

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes`` (never more than this socket holds)."""
        n = min(nbytes, self.held)
        if n > 0:
            self.held -= n
            self.registry._release(n)

    def close(self) -> None:
        """Free the slot and everything it holds (idempotent)."""
        if not self._open:
            return
        self._open = False
        self.release(self.held)
        self.registry._free(self.owner)

    def __enter__(self) -> SocketSlot:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


TRIM_AFTER_BYTES = 4 * 2**20
"""A socket that buffered this much gives the freed heap back (``trim_heap``) when it ends:
above what a 2pass/online session holds (~2.2 MB), so offline streams of over ~2 min."""


def trim_heap() -> None:
    """Give freed heap memory back to the operating system (glibc's ``malloc_trim``; nothing
    elsewhere). A stream arrives as thousands of small frames, and the messages queued for a
    fast sender leave the heap full of free holes that glibc keeps: measured with 20 offline
    sockets of 5 min, the Ingress stayed +380 MB after they ended, +110 MB with a trim. Blocking
    (tens of ms on a large heap): run it in a thread."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")  # runs ldconfig: once per process
    libc = ctypes.CDLL(name) if name else None
    return getattr(libc, "malloc_trim", None)
