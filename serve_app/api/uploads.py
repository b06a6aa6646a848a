"""Uploads of job audio: streamed to the data directory while hashed, never held whole in
memory, and stored by content (sha256) so that the same file is kept once and a client can ask
first whether the server already has it (``HEAD /v1/uploads/{sha256}``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from serve_app.errors import InvalidRequest, PayloadTooLarge, ServeError

CHUNK = 1 << 20


@dataclass
class StoredFile:
    """An uploaded file written under ``data_dir`` (``path`` relative to it), not yet recorded."""

    name: str
    sha256: str
    size_bytes: int
    path: str


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)
    hasher: hashlib._Hash | None = None
    tmp: Path | None = None
    fh: object = None
    size: int = 0


INCOMING = Path("uploads") / ".incoming"
"""Under the data directory: uploads on their way in (moved under their hash when complete)."""
STALE_INCOMING_S = 600.0
"""A file in ``INCOMING`` untouched this long is what a crash left (a live upload writes on)."""


def remove_stale_incoming(data_dir: Path, older_than_s: float = STALE_INCOMING_S) -> int:
    """Delete partial uploads a crash left behind; how many. Files another replica is still
    writing (touched within ``older_than_s``) are left alone: replicas share the directory."""
    import time

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


def blob_path(data_dir: Path, sha256: str) -> Path:
    """Where a new copy of ``sha256``'s content goes (unique per copy: see ``UploadStore.add``)."""
    return data_dir / "uploads" / sha256[:2] / f"{sha256}.{secrets.token_hex(4)}"


class BlobWriter:
    """One file streamed to a temporary name under ``data_dir/uploads/.incoming``, hashed on the
    way; ``finish`` moves it under its content's name."""

    def __init__(self, data_dir: Path, max_bytes: int) -> None:
        self.data_dir, self.max_bytes = data_dir, max_bytes
        incoming = data_dir / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        self.tmp = incoming / secrets.token_hex(8)
        self._fh = self.tmp.open("wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(f"a file is larger than {self.max_bytes / 2**20:.0f} MB")
        self._hash.update(data)
        self._fh.write(data)  # type: ignore[attr-defined]

    def finish(self) -> tuple[str, str]:
        """``(sha256, path relative to data_dir)``."""
        self._fh.close()  # type: ignore[attr-defined]
        sha = self._hash.hexdigest()
        target = blob_path(self.data_dir, sha)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, target)
        return sha, str(target.relative_to(self.data_dir))

    def discard(self) -> None:
        self._fh.close()  # type: ignore[attr-defined]
        self.tmp.unlink(missing_ok=True)


async def receive_body(request: Request, data_dir: Path, max_bytes: int) -> tuple[str, str, int]:
    """A raw request body (``PUT /v1/uploads/{sha256}``) to the data directory:
    ``(sha256, path, size)``."""
    writer = BlobWriter(data_dir, max_bytes)
    try:
        async for chunk in request.stream():
            await asyncio.to_thread(writer.write, chunk) if len(chunk) > CHUNK else writer.write(chunk)
        sha, path = await asyncio.to_thread(writer.finish)
    except BaseException:
        writer.discard()
        raise
    return sha, path, writer.size


async def receive_multipart(
    request: Request,
    data_dir: Path,
    max_file_bytes: int,
    max_files: int,
    max_fields: int = 64,
    max_field_bytes: int = 64 * 1024,
) -> tuple[list[StoredFile], dict[str, list[str]]]:
    """A multipart body: its files streamed to the data directory (hashed on the way) and its
    text fields (at most ``max_fields``, each at most ``max_field_bytes``). On any error every
    file written so far is removed."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequest("expected a multipart/form-data body")
    stored: list[StoredFile] = []
    fields: dict[str, list[str]] = {}
    writers: list[BlobWriter] = []
    part = _Part()
    current: BlobWriter | None = None
    header_field, header_value = bytearray(), bytearray()
    headers: dict[bytes, bytes] = {}
    error: Exception | None = None

    def on_part_begin() -> None:
        nonlocal part, headers
        part, headers = _Part(), {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal current
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        part.name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        if filename is None and sum(map(len, fields.values())) >= max_fields:
            raise InvalidRequest(f"at most {max_fields} text fields in a multipart job")
        if filename is not None:
            if len(writers) >= max_files:
                raise InvalidRequest(f"at most {max_files} files in one job")
            part.filename = Path(filename.decode("utf-8", "replace")).name or "audio"
            current = BlobWriter(data_dir, max_file_bytes)
            writers.append(current)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if current is not None:
            current.write(data[start:end])
        else:
            part.value.extend(data[start:end])
            if len(part.value) > max_field_bytes:
                raise InvalidRequest(f"the field {part.name[:64]!r} is longer than {max_field_bytes} bytes")

    def on_part_end() -> None:
        nonlocal current
        if current is not None:
            sha, path = current.finish()
            stored.append(StoredFile(part.filename or "audio", sha, current.size, path))
            current = None
        else:
            fields.setdefault(part.name, []).append(part.value.decode("utf-8", "replace"))

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            # Hashing and writing a large chunk would hold the event loop: a thread does it.
            await asyncio.to_thread(parser.write, chunk)
        parser.finalize()
    except Exception as e:  # noqa: BLE001 - cleaned up, then raised as our error
        error = e
    if error is not None:
        for w in writers:
            w.discard()
        for f in stored:
            (data_dir / f.path).unlink(missing_ok=True)
        if isinstance(error, ServeError):
            raise error
        raise InvalidRequest(f"could not parse the multipart body: {error}") from None
    return stored, fields
