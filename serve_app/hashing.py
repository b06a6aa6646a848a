"""SHA-256 of files and streams, in one place: stored uploads are named by their content's
hash, input-folder files are checked against the hash taken when their job was made, and the
CLI hashes a folder to ask the server what it already holds (``HEAD /v1/uploads/{sha256}``).
Standard library only, so the CLI imports it without the server's dependencies."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20
"""Bytes read at a time: a recording is never held whole in memory."""


class Sha256:
    """A SHA-256 fed piece by piece (a request body on its way to disk), counting the bytes."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def sha256_file(path: Path) -> tuple[str, int]:
    """``(hex digest, size in bytes)`` of a file, read ``CHUNK`` at a time."""
    h = Sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest(), h.size
