"""Request bodies of job audio (a raw ``PUT /v1/uploads/{sha256}`` body, a multipart job's
files) streamed to ``uploads/`` while hashed, never held whole in memory, and stored by content
(sha256) so that the same file is kept once and a client can ask first whether the server
already has it (``HEAD /v1/uploads/{sha256}``). The files themselves are written, moved and
removed by ``serve_app.jobs.blobs``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from serve_app.errors import InvalidRequest, ServeError
from serve_app.hashing import CHUNK
from serve_app.jobs import blobs
from serve_app.jobs.blobs import BlobWriter


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
        blobs.remove(data_dir, [f.path for f in stored])
        if isinstance(error, ServeError):
            raise error
        raise InvalidRequest(f"could not parse the multipart body: {error}") from None
    return stored, fields
