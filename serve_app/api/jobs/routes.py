"""``/v1/jobs``: create a job (from a multipart upload, from uploads the server holds, or from
files of the input folder), list, read, cancel and delete jobs, list a job's files and read a
file's transcript in any response format."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.api.context import ApiContext, caller, context, visible_owner
from serve_app.api.jobs.receive import receive_multipart
from serve_app.api.jobs.uploads import SHA256_HEX, record
from serve_app.api.protocol import TranscriptionOptions, describe
from serve_app.api.quotas import Caller
from serve_app.api.views import file_json, job_json, page_json, transcript_response
from serve_app.engines.decode import probe_duration
from serve_app.errors import Forbidden, InvalidRequest, NotFound, ServeError
from serve_app.formats import ResponseFormat, parse_format
from serve_app.hashing import sha256_file
from serve_app.jobs import FileState, JobOptions, JobState, NewFile, blobs
from serve_app.jobs.paging import MAX_LIMIT

router = APIRouter(tags=["jobs"])


class FileRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(min_length=SHA256_HEX, max_length=SHA256_HEX, pattern="^[0-9a-f]+$")
    name: str = Field(min_length=1, max_length=512)


class JobRequest(BaseModel):
    """``POST /v1/jobs`` as JSON: files the server holds, or paths under the input folder."""

    model_config = ConfigDict(extra="forbid")
    files: list[FileRef] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] | None = None


def _resolve_input(ctx: ApiContext, rel: str) -> Path:
    """A path under the input folder, symlinks resolved; anything that leaves it is refused."""
    if ctx.input_dir is None:
        raise Forbidden("path jobs are off on this server (no input folder is configured)")
    root = ctx.input_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise Forbidden(f"{rel!r} is outside the input folder")
    if not path.is_file():
        raise InvalidRequest(f"{rel!r} is not a file in the input folder")
    return path


def _options(ctx: ApiContext, fields: dict[str, Any]) -> JobOptions:
    opts = TranscriptionOptions.parse(fields, ctx.served, ctx.limits)
    return JobOptions(
        model=opts.model or ctx.served.names[0],
        language=opts.language,
        prompt=opts.prompt,
        punctuation=opts.punctuation,
        itn=opts.itn,
        response_format=opts.response_format,
    )


@router.post("/v1/jobs", status_code=202)
async def create_job(
    request: Request, ctx: ApiContext = Depends(context), who: Caller = Depends(caller)
) -> JSONResponse:
    store = ctx.store
    key = request.headers.get("idempotency-key") or None
    if key is not None and len(key) > 256:
        raise InvalidRequest("Idempotency-Key is at most 256 characters")
    ctype = request.headers.get("content-type", "")
    metadata: dict[str, Any] | None = None
    if ctype.startswith("multipart/form-data"):
        jobs = ctx.jobs
        stored, raw = await receive_multipart(
            request, ctx.data_dir, int(jobs.max_file_mb * 2**20), jobs.max_files, jobs.max_fields
        )
        try:
            if not stored:
                raise InvalidRequest("the job has no files: send one or more 'files' fields")
            fields = {k: v[-1] for k, v in raw.items() if k not in ("metadata", "timestamp_granularities[]")}
            options = _options(ctx, fields)
            if "metadata" in raw:
                metadata = _metadata(raw["metadata"][-1])
        except ServeError:
            blobs.remove(ctx.data_dir, [f.path for f in stored])
            raise
        new_files = await record(ctx, store, stored, who)
    elif ctype.startswith("application/json"):
        try:
            body = JobRequest.model_validate_json(await request.body())
        except ValidationError as e:
            raise InvalidRequest(describe(e)) from None
        if bool(body.files) == bool(body.paths):
            raise InvalidRequest(
                "name either 'files' (by sha256, uploaded first) or 'paths' (in the input folder)"
            )
        if len(body.files) + len(body.paths) > ctx.jobs.max_files:
            raise InvalidRequest(f"at most {ctx.jobs.max_files} files in one job")
        options = _options(ctx, body.options)
        if body.metadata is not None:
            metadata = _metadata(json.dumps(body.metadata))
        if body.paths:
            new_files = []
            for rel in body.paths:
                path = _resolve_input(ctx, rel)
                # Hashed now and checked when read: a file swapped in the folder afterwards
                # fails instead of being transcribed as this job's.
                sha, size = await asyncio.to_thread(sha256_file, path)
                duration = await asyncio.to_thread(probe_duration, path)
                new_files.append(
                    NewFile(name=rel, sha256=sha, duration_s=duration, source_path=str(path), size_bytes=size)
                )
        else:
            new_files = [NewFile(name=f.name, sha256=f.sha256) for f in body.files]
    else:
        raise InvalidRequest("send multipart/form-data with 'files', or JSON with 'files' or 'paths'")
    created = await asyncio.to_thread(
        store.jobs.create,
        new_files,
        options,
        metadata=metadata,
        owner=who.owner,
        idempotency_key=key,
        uploads_of=None if who.admin else who.owner,
        quota=ctx.quota.jobs(who),
    )
    body_json = job_json(created.job)
    return JSONResponse(
        body_json,
        status_code=202 if created.created else 200,
        headers={
            "Location": f"/v1/jobs/{created.job.id}",
            "Idempotent-Replayed": str(not created.created).lower(),
        },
    )


MAX_METADATA_BYTES = 16384


def _metadata(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidRequest("metadata must be a JSON object") from None
    if not isinstance(value, dict) or len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"metadata must be a JSON object of at most {MAX_METADATA_BYTES // 1024} kB")
    return value


def page_size(default: int) -> Any:
    """A ``limit`` query parameter: 1..MAX_LIMIT, else 400."""
    return Query(default, ge=1, le=MAX_LIMIT)


@router.get("/v1/jobs")
async def list_jobs(
    cursor: str | None = Query(None, max_length=1024),
    limit: int = page_size(20),
    state: str | None = None,
    ctx: ApiContext = Depends(context),
    who: str | None = Depends(visible_owner),
) -> dict[str, Any]:
    js = _enum(JobState, state, "state")
    page = await asyncio.to_thread(ctx.store.jobs.find, owner=who, state=js, limit=limit, cursor=cursor)
    return page_json(page, job_json)


def _enum(cls: Any, value: str | None, name: str) -> Any:
    if value is None:
        return None
    try:
        return cls(value)
    except ValueError:
        raise InvalidRequest(f"{name} must be one of {', '.join(s.value for s in cls)}") from None


@router.get("/v1/jobs/{job_id}")
async def get_job(
    job_id: str, ctx: ApiContext = Depends(context), who: str | None = Depends(visible_owner)
) -> dict[str, Any]:
    return job_json(await asyncio.to_thread(ctx.store.jobs.get, job_id, owner=who))


@router.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(
    job_id: str, ctx: ApiContext = Depends(context), who: str | None = Depends(visible_owner)
) -> dict[str, Any]:
    return job_json(await asyncio.to_thread(ctx.store.jobs.cancel, job_id, owner=who))


@router.delete("/v1/jobs/{job_id}")
async def delete_job(
    job_id: str, ctx: ApiContext = Depends(context), who: str | None = Depends(visible_owner)
) -> dict[str, Any]:
    deleted = await asyncio.to_thread(ctx.store.jobs.delete, job_id, owner=who)
    blobs.remove(ctx.data_dir, deleted.unreferenced_paths)
    return {"id": deleted.job_id, "object": "job", "deleted": True}


@router.get("/v1/jobs/{job_id}/files")
async def list_files(
    job_id: str,
    state: str | None = None,
    cursor: str | None = Query(None, max_length=1024),
    limit: int = page_size(100),
    ctx: ApiContext = Depends(context),
    who: str | None = Depends(visible_owner),
) -> dict[str, Any]:
    fs = _enum(FileState, state, "state")
    page = await asyncio.to_thread(
        ctx.store.jobs.list_files, job_id, owner=who, state=fs, limit=limit, cursor=cursor
    )
    return page_json(page, file_json)


@router.get("/v1/jobs/{job_id}/files/{file_id}")
async def get_file_result(
    job_id: str,
    file_id: str,
    format: str | None = None,
    ctx: ApiContext = Depends(context),
    who: str | None = Depends(visible_owner),
) -> Response:
    store = ctx.store
    t = await asyncio.to_thread(store.jobs.get_transcript, file_id, owner=who)
    if t.file.job_id != job_id:
        raise NotFound(f"no file {file_id} in job {job_id}")
    job = await asyncio.to_thread(store.jobs.get, job_id, owner=who)
    fmt: ResponseFormat = parse_format(format or job.options.response_format)
    return transcript_response(t.transcript(ctx.served.language), fmt, True, {"file": file_json(t.file)})
