"""Batch jobs: ``/v1/jobs`` and ``/v1/uploads``.

A job is created from uploaded files (multipart, repeatable ``files`` fields, plus the
transcription form's fields), from files the server already holds (JSON ``{"files": [{"sha256",
"name"}]}``, after ``PUT /v1/uploads/{sha256}``), or from files under the configured input folder
(JSON ``{"paths": [...]}``). ``Idempotency-Key``: the same key within 24 h returns the same job.
The job runner transcribes its files in the batch-job class of the ASR queue; progress is
``GET /v1/jobs/{id}`` or its server-sent events, results per file in every response format or
exported as a zip or CSV.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.api.context import ApiContext, caller, context, owner, visible_owner
from serve_app.api.protocol import TranscriptionOptions, describe
from serve_app.api.quotas import Caller
from serve_app.api.uploads import StoredFile, receive_body, receive_multipart
from serve_app.contracts import Transcript
from serve_app.engines.decode import probe_duration
from serve_app.errors import Forbidden, InvalidRequest, NotFound, QuotaExceeded, ServeError
from serve_app.exports import UniqueNames, csv_text, safe_stem
from serve_app.formats import MEDIA_TYPES, ResponseFormat, parse_format, render
from serve_app.jobs import FileState, Job, JobOptions, JobStore, NewFile
from serve_app.jobs.audio import remove_audio
from serve_app.jobs.models import FileTranscript, JobFile, segment_of
from serve_app.jobs.paging import MAX_LIMIT

router = APIRouter(tags=["jobs"])

SHA256_HEX = 64


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


def store_of(ctx: ApiContext) -> JobStore:
    if ctx.store is None:
        raise NotFound("batch jobs are not enabled on this server")
    return ctx.store


def _time(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def job_json(job: Job) -> dict[str, Any]:
    counts = {state.value: job.counts.get(state, 0) for state in FileState}
    return {
        "id": job.id,
        "object": "job",
        "state": job.state.value,
        "owner": job.owner,  # the label of the API key that created it (null without keys)
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "options": job.options.to_json(),
        "metadata": job.metadata,
        "files": {"total": sum(counts.values()), **counts},
        "audio_seconds": {
            "total": round(job.audio_total_s, 3),
            "done": round(job.audio_done_s, 3),
            "total_known": job.durations_known,
        },
        "eta_s": None if (eta := job.eta_s(datetime.now(UTC))) is None else round(eta, 1),
    }


def file_json(f: JobFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "job.file",
        "name": f.name,
        "sha256": f.sha256,
        "size_bytes": f.size_bytes,
        "duration_s": f.duration_s,
        "state": f.state.value,
        "error": f.error,
        "attempts": f.attempts,
        "progress_s": round(f.progress_s, 3),
        "created_at": _time(f.created_at),
        "finished_at": _time(f.finished_at),
    }


def as_transcript(t: FileTranscript, default_language: str) -> Transcript:
    segments = [segment_of(s) for s in t.segments]
    return Transcript(
        language=t.language or default_language,
        duration_s=t.file.duration_s or t.covered_s,
        segments=segments,
    )


async def _record(ctx: ApiContext, store: JobStore, stored: list[StoredFile], who: Caller) -> list[NewFile]:
    """Record uploaded copies as the caller's; a copy of content already held is deleted again.
    On a refusal (the stored-upload quota) every copy not yet recorded is deleted."""
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
                (ctx.data_dir / f.path).unlink(missing_ok=True)
            out.append(NewFile(name=f.name, sha256=f.sha256, duration_s=duration))
    except BaseException:
        for f in stored[len(out) :]:
            (ctx.data_dir / f.path).unlink(missing_ok=True)
        raise
    return out


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


def _hash_file(path: Path) -> tuple[str, int]:
    import hashlib

    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


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
    store = store_of(ctx)
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
            for f in stored:
                (ctx.data_dir / f.path).unlink(missing_ok=True)
            raise
        new_files = await _record(ctx, store, stored, who)
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
                sha, size = await asyncio.to_thread(_hash_file, path)
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
    from serve_app.jobs import JobState

    js = _enum(JobState, state, "state")
    page = await asyncio.to_thread(store_of(ctx).jobs.find, owner=who, state=js, limit=limit, cursor=cursor)
    return {"object": "list", "data": [job_json(j) for j in page.items], "next_cursor": page.next_cursor}


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
    return job_json(await asyncio.to_thread(store_of(ctx).jobs.get, job_id, owner=who))


@router.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(
    job_id: str, ctx: ApiContext = Depends(context), who: str | None = Depends(visible_owner)
) -> dict[str, Any]:
    return job_json(await asyncio.to_thread(store_of(ctx).jobs.cancel, job_id, owner=who))


@router.delete("/v1/jobs/{job_id}")
async def delete_job(
    job_id: str, ctx: ApiContext = Depends(context), who: str | None = Depends(visible_owner)
) -> dict[str, Any]:
    deleted = await asyncio.to_thread(store_of(ctx).jobs.delete, job_id, owner=who)
    remove_audio(ctx.data_dir, deleted.unreferenced_paths)
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
        store_of(ctx).jobs.list_files, job_id, owner=who, state=fs, limit=limit, cursor=cursor
    )
    return {"object": "list", "data": [file_json(f) for f in page.items], "next_cursor": page.next_cursor}


@router.get("/v1/jobs/{job_id}/files/{file_id}")
async def get_file_result(
    job_id: str,
    file_id: str,
    format: str | None = None,
    ctx: ApiContext = Depends(context),
    who: str | None = Depends(visible_owner),
) -> Response:
    store = store_of(ctx)
    t = await asyncio.to_thread(store.jobs.get_transcript, file_id, owner=who)
    if t.file.job_id != job_id:
        raise NotFound(f"no file {file_id} in job {job_id}")
    job = await asyncio.to_thread(store.jobs.get, job_id, owner=who)
    fmt: ResponseFormat = parse_format(format or job.options.response_format)
    body = render(as_transcript(t, ctx.served.language), fmt, words=True)
    if isinstance(body, dict):
        return JSONResponse({**body, "file": file_json(t.file)} if fmt == "verbose_json" else body)
    return PlainTextResponse(body, media_type=MEDIA_TYPES[fmt])


async def _all_files(store: JobStore, job_id: str, who: str | None) -> list[JobFile]:
    out: list[JobFile] = []
    cursor = None
    while True:
        page = await asyncio.to_thread(store.jobs.list_files, job_id, owner=who, limit=500, cursor=cursor)
        out += page.items
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


@router.get("/v1/jobs/{job_id}/export")
async def export_job(
    job_id: str,
    format: str = "zip",
    rows: str = "files",
    ctx: ApiContext = Depends(context),
    who: str | None = Depends(visible_owner),
) -> Response:
    """``zip``: per finished file its transcript as .txt, .srt, .vtt and .json; ``csv``: a row
    per file (``rows=files``) or per segment (``rows=segments``)."""
    store = store_of(ctx)
    job = await asyncio.to_thread(store.jobs.get, job_id, owner=who)
    files = await _all_files(store, job_id, who)
    transcripts = {
        f.id: as_transcript(
            await asyncio.to_thread(store.jobs.get_transcript, f.id, owner=who), ctx.served.language
        )
        for f in files
        if f.state is FileState.DONE
    }
    if format == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            names = UniqueNames(reserved=["job.json"])
            kinds = (("txt", "text"), ("srt", "srt"), ("vtt", "vtt"), ("json", "verbose_json"))
            for f in files:
                if f.id not in transcripts:
                    continue
                stem = names.claim(safe_stem(f.name, fallback=f.id), [ext for ext, _ in kinds])
                t = transcripts[f.id]
                for ext, fmt in kinds:
                    body = render(t, fmt, words=True)  # type: ignore[arg-type]
                    z.writestr(
                        f"{stem}.{ext}",
                        json.dumps(body, ensure_ascii=False) if isinstance(body, dict) else body,
                    )
            z.writestr(
                "job.json",
                json.dumps({**job_json(job), "file_list": [file_json(f) for f in files]}, indent=2),
            )
        return Response(
            buf.getvalue(),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="job-{job_id}.zip"'},
        )
    if format != "csv":
        raise InvalidRequest("format must be zip or csv")
    if rows not in ("files", "segments"):
        raise InvalidRequest("rows must be files or segments")
    out = io.StringIO()
    w = csv.writer(out)
    if rows == "files":
        w.writerow(["file", "state", "duration_s", "language", "text", "error"])
        for f in files:
            done = transcripts.get(f.id)
            w.writerow(
                [
                    csv_text(f.name),
                    f.state.value,
                    f.duration_s,
                    done.language if done else "",
                    csv_text(done.text if done else ""),
                    csv_text(f.error or ""),
                ]
            )
    else:
        w.writerow(["file", "start_s", "end_s", "text"])
        for f in files:
            for s in transcripts[f.id].segments if f.id in transcripts else []:
                w.writerow([csv_text(f.name), f"{s.start_s:.3f}", f"{s.end_s:.3f}", csv_text(s.text)])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-{rows}.csv"'},
    )


@router.get("/v1/jobs/{job_id}/events")
async def job_events(
    job_id: str,
    interval_s: float = Query(1.0, ge=0.2, le=30.0, allow_inf_nan=False),
    ctx: ApiContext = Depends(context),
    who: str | None = Depends(visible_owner),
    holder: str | None = Depends(owner),
) -> StreamingResponse:
    """Server-sent events: ``progress`` whenever the job changes, ``end`` when it has ended.
    A key holds at most ``limits.max_event_streams`` streams at once on a replica (429 beyond);
    a stream ends after ``limits.max_event_stream_s`` with an ``expired`` event (an
    ``EventSource`` reconnects by itself)."""
    store = store_of(ctx)
    await asyncio.to_thread(store.jobs.get, job_id, owner=who)  # 404 before the stream starts
    slot = ctx.event_streams.hold(holder)
    slot.__enter__()  # 429 before the stream starts; released when the stream ends
    lifetime = ctx.limits.max_event_stream_s

    async def stream() -> AsyncIterator[bytes]:
        try:
            last = None
            idle = 0.0
            ends = asyncio.get_running_loop().time() + lifetime
            yield b"retry: 2000\n\n"
            while True:
                job = job_json(await asyncio.to_thread(store.jobs.get, job_id, owner=who))
                state = (job["state"], job["files"], job["audio_seconds"])
                if state != last:
                    last, idle = state, 0.0
                    yield f"event: progress\ndata: {json.dumps(job)}\n\n".encode()
                elif (idle := idle + interval_s) >= 15:
                    idle = 0.0
                    yield b": keep-alive\n\n"
                if job["state"] in ("completed", "failed", "cancelled"):
                    yield f"event: end\ndata: {json.dumps(job)}\n\n".encode()
                    return
                if asyncio.get_running_loop().time() >= ends:
                    yield f"event: expired\ndata: {json.dumps({'after_s': lifetime})}\n\n".encode()
                    return
                await asyncio.sleep(interval_s)
        finally:
            slot.__exit__(None, None, None)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


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
    held = await asyncio.to_thread(store_of(ctx).uploads.has, _sha256(sha256), owner=who)
    return Response(status_code=200 if held else 404)


@router.put("/v1/uploads/{sha256}", status_code=201)
async def put_upload(
    sha256: str, request: Request, ctx: ApiContext = Depends(context), who: Caller = Depends(caller)
) -> JSONResponse:
    """The raw file as the body; stored by content once its hash is checked against the URL,
    and the caller's from then on (content stored before is not stored twice)."""
    store = store_of(ctx)
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
        (ctx.data_dir / path).unlink(missing_ok=True)
        raise InvalidRequest(f"the body's sha256 is {sha}, not {sha256}")
    try:
        duration = await asyncio.to_thread(probe_duration, ctx.data_dir / path)
        _, created = await asyncio.to_thread(
            store.uploads.add, sha, size, path, owner=who.owner, duration_s=duration, max_stored_bytes=quota
        )
    except BaseException:
        (ctx.data_dir / path).unlink(missing_ok=True)
        raise
    if not created:
        (ctx.data_dir / path).unlink(missing_ok=True)
    return JSONResponse(
        {"sha256": sha, "size_bytes": size, "created": created}, status_code=201 if created else 200
    )
