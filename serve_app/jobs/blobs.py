"""The server's stored copies of job audio under ``<data_dir>/uploads/``: written while hashed,
moved into place under their content's name, discarded, removed. The only code that deletes a
file: whatever a database row or a request names, nothing outside ``uploads/`` is ever removed
(files of the input folder are the user's own). No Ray, no HTTP."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from serve_app.errors import PayloadTooLarge
from serve_app.hashing import Sha256

UPLOADS = Path("uploads")
"""Under the data directory: every stored copy, ``uploads/<sha256[:2]>/<sha256>.<token>``."""
INCOMING = UPLOADS / ".incoming"
"""Under the data directory: uploads on their way in (moved under their hash when complete)."""
STALE_INCOMING_S = 600.0
"""A file in ``INCOMING`` untouched this long is what a crash left (a live upload writes on)."""


def blob_path(data_dir: Path, sha256: str) -> Path:
    """Where a new copy of ``sha256``'s content goes (unique per copy: see ``UploadStore.add``)."""
    return data_dir / UPLOADS / sha256[:2] / f"{sha256}.{secrets.token_hex(4)}"


def remove(data_dir: Path, paths: Iterable[str]) -> None:
    """Delete stored copies (paths relative to ``data_dir``), only ever under
    ``data_dir/uploads``: a path that leads anywhere else, a symlink's target included, is
    left alone. Copies already gone are no error."""
    uploads = (data_dir / UPLOADS).resolve()
    for p in paths:
        path = (data_dir / p).resolve()
        if path.is_relative_to(uploads) and path != uploads:
            path.unlink(missing_ok=True)


def remove_stale_incoming(data_dir: Path, older_than_s: float = STALE_INCOMING_S) -> int:
    """Delete partial uploads a crash left behind; how many. Files another replica is still
    writing (touched within ``older_than_s``) are left alone: replicas share the directory."""
    incoming = data_dir / INCOMING
    if not incoming.is_dir():
        return 0
    cutoff, removed = time.time() - older_than_s, 0
    for p in incoming.iterdir():
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except FileNotFoundError:  # finished or removed by another replica meanwhile
            pass
    return removed


class BlobWriter:
    """One file streamed to a temporary name under ``data_dir/uploads/.incoming``, hashed on the
    way; ``finish`` moves it under its content's name, ``discard`` drops it."""

    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        self.data_dir, self.max_bytes = data_dir, max_bytes
        incoming = data_dir / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        self.tmp = incoming / secrets.token_hex(8)
        self._fh = self.tmp.open("wb")
        self._hash = Sha256()

    @property
    def size(self) -> int:
        return self._hash.size

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.max_bytes:
            raise PayloadTooLarge(f"a file is larger than {self.max_bytes / 2**20:.0f} MB")
        self._hash.update(data)
        self._fh.write(data)

    def finish(self) -> tuple[str, str]:
        """``(sha256, path relative to data_dir)``."""
        self._fh.close()
        sha = self._hash.hexdigest()
        target = blob_path(self.data_dir, sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, target)
        return sha, str(target.relative_to(self.data_dir))

    def discard(self) -> None:
        self._fh.close()
        self.tmp.unlink(missing_ok=True)
