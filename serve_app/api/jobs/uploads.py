"""``/v1/uploads/{sha256}``: content the server holds for the caller's later jobs, stored once
by its hash (``HEAD`` asks whether it is held, ``PUT`` stores it), and the recording of a
multipart job's files as uploads."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from serve_app.api.context import ApiContext, caller, context, visible_owner
from serve_app.api.jobs.receive import StoredFile, receive_body
from serve_app.api.quotas import Caller
from serve_app.engines.decode import probe_duration
from serve_app.errors import InvalidRequest, QuotaExceeded
from serve_app.jobs import JobStore, NewFile, blobs

router = APIRouter(tags=["jobs"])

SHA256_HEX = 64


async def record(ctx: ApiContext, store: JobStore, stored: list[StoredFile], who: Caller) -> list[NewFile]:
    """Record uploaded copies (a multipart job's files) as the caller's; a copy of content
    already held is deleted again. On a refusal (the stored-upload quota) every copy not yet
    recorded is deleted."""
    out: list[NewFile] = []
    try:
        for f in stored:
            duration = await asyncio.to_thread(probe_duration, ctx.data_dir / f.path)
            _, created = await asyncio.to_thread(
                store.uploads.add,
                f.sha256,
                f.size_bytes,
                f.path,
                owner=who.owner,
                duration_s=duration,
                max_stored_bytes=ctx.quota.stored_bytes(who),
            )
            if not created:
                blobs.remove(ctx.data_dir, [f.path])
            out.append(NewFile(name=f.name, sha256=f.sha256, duration_s=duration))
    except BaseException:
        blobs.remove(ctx.data_dir, [f.path for f in stored[len(out) :]])
        raise
    return out


def _sha256(value: str) -> str:
    sha = value.lower()
    if len(sha) != SHA256_HEX or any(c not in "0123456789abcdef" for c in sha):
        raise InvalidRequest("the URL must name the file's sha256 (64 hex digits)")
    return sha


@router.head("/v1/uploads/{sha256}")
async def has_upload(
    sha256: str, ctx: ApiContext = Depends(context), who: str | None = Depends(visible_owner)
) -> Response:
    """200 when the server holds this content as the caller's upload (the client need not
    upload it), else 404: whether someone else holds it is not the caller's to know."""
    held = await asyncio.to_thread(ctx.store.uploads.has, _sha256(sha256), owner=who)
    return Response(status_code=200 if held else 404)


@router.put("/v1/uploads/{sha256}", status_code=201)
async def put_upload(
    sha256: str, request: Request, ctx: ApiContext = Depends(context), who: Caller = Depends(caller)
) -> JSONResponse:
    """The raw file as the body; stored by content once its hash is checked against the URL,
    and the caller's from then on (content stored before is not stored twice)."""
    store = ctx.store
    sha256 = _sha256(sha256)
    quota = ctx.quota.stored_bytes(who)
    length = request.headers.get("content-length")
    if quota is not None and length and length.isdigit():
        used = (await asyncio.to_thread(store.usage.of_owner, who.owner)).stored_bytes
        if used + int(length) > quota:  # refused before a byte is written
            raise QuotaExceeded(
                f"quota stored_upload_gb exceeded: this key stores {used / 1e9:.2f} GB of uploads and "
                f"{int(length) / 1e9:.2f} GB more would pass its {quota / 1e9:.2f} GB"
            )
    sha, path, size = await receive_body(request, ctx.data_dir, int(ctx.jobs.max_file_mb * 2**20))
    if sha != sha256:
        blobs.remove(ctx.data_dir, [path])
        raise InvalidRequest(f"the body's sha256 is {sha}, not {sha256}")
    try:
        duration = await asyncio.to_thread(probe_duration, ctx.data_dir / path)
        _, created = await asyncio.to_thread(
            store.uploads.add, sha, size, path, owner=who.owner, duration_s=duration, max_stored_bytes=quota
        )
    except BaseException:
        blobs.remove(ctx.data_dir, [path])
        raise
    if not created:
        blobs.remove(ctx.data_dir, [path])
    return JSONResponse(
        {"sha256": sha, "size_bytes": size, "created": created}, status_code=201 if created else 200
    )
