"""``POST /v1/audio/transcriptions``: the OpenAI-compatible file transcription."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from serve_app.api.context import ApiContext, context, owner
from serve_app.api.limits import MULTIPART_SLACK
from serve_app.api.protocol import TranscriptionOptions
from serve_app.api.views import transcript_response
from serve_app.contracts import AudioSource, Transcript
from serve_app.errors import InvalidRequest, PayloadTooLarge, ServeError
from serve_app.jobs import JobStore
from serve_app.jobs.models import segments_json

logger = logging.getLogger("ray.serve")

router = APIRouter(tags=["transcription"])


async def read_upload(request: Request, ctx: ApiContext) -> tuple[bytes, TranscriptionOptions, str]:
    """The uploaded file's bytes and the validated form fields; transport limits first."""
    limits = ctx.limits
    max_bytes = int(limits.max_upload_mb * 1024 * 1024)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes + MULTIPART_SLACK:
        raise PayloadTooLarge(f"upload is larger than {limits.max_upload_mb:g} MB")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("expected a multipart/form-data body with a 'file' field")
    try:
        form = await request.form(max_files=1, max_fields=32)
    except ServeError:
        raise  # the body passed its limit (serve_app.api.limits)
    except Exception as e:  # malformed multipart
        raise InvalidRequest(f"could not parse the multipart body: {e}") from e
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("the 'file' field is missing")
        options = TranscriptionOptions.from_form(form, ctx.served, limits)
        data = await upload.read(max_bytes + 1)
        name = (upload.filename or "audio")[:512]
    finally:
        await form.close()  # spooled upload buffers are released (and deleted) here
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"upload is larger than {limits.max_upload_mb:g} MB")
    if not data:
        raise InvalidRequest("the uploaded file is empty")
    return data, options, name


@router.post("/v1/audio/transcriptions")
async def create_transcription(
    request: Request, ctx: ApiContext = Depends(context), who: str | None = Depends(owner)
) -> Response:
    data, options, name = await read_upload(request, ctx)
    transcript = await ctx.pipeline.transcribe_source(AudioSource(data=data), options.pipeline_options())
    if ctx.keep_history:
        await keep(ctx.store, transcript, name, options.model or ctx.served.names[0], who)
    return transcript_response(transcript, options.response_format, options.words)


async def keep(store: JobStore, t: Transcript, name: str, model: str, who: str | None) -> None:
    """Text and metadata into the history (never the audio); a failure to write it is logged,
    not the user's problem."""
    try:
        await asyncio.to_thread(
            store.history.add,
            text=t.text,
            segments=segments_json(t),
            owner=who,
            source_name=name,
            duration_s=t.duration_s,
            language=t.language,
            model=model,
        )
    except Exception:
        logger.exception("could not keep a transcription in the history")
