"""HTTP ingress: the OpenAI-compatible API in front of the graph.

Errors from any stage arrive here (wrapped by Ray) and are shaped into
``{"error": {"type", "message", "request_id"}}`` by ``error_response`` — the one place that
does it. 5xx bodies never carry a traceback.
"""

import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile

from serve_app.config import PipelineArgs
from serve_app.contracts import AsrOptions, PostOptions
from serve_app.errors import (
    InternalError,
    InvalidRequest,
    ModelNotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServeError,
)
from serve_app.formats import MEDIA_TYPES, parse_format, render

logger = logging.getLogger("ray.serve")
api = FastAPI(title="funasr-serve", version="0.1.0")


def as_serve_error(exc: BaseException) -> ServeError:
    """Unwrap what a DeploymentHandle raised into our hierarchy."""
    from ray.exceptions import RayTaskError
    from ray.serve.exceptions import BackPressureError

    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    if isinstance(cause, ServeError):
        # A RayTaskError without .cause is itself a subclass of the cause's type (Ray's
        # as_instanceof_cause) and lacks our attributes: rebuild the plain error.
        if isinstance(cause, RayTaskError):
            return type(cause)(getattr(cause, "message", None) or str(cause))
        return cause
    if isinstance(cause, BackPressureError):
        return Overloaded("the ASR queue is full; retry shortly")
    if isinstance(cause, asyncio.TimeoutError | TimeoutError):
        return InternalError("a pipeline stage timed out")
    logger.exception("unexpected error in the pipeline", exc_info=exc)
    return InternalError("internal error")


def request_id(request: Request) -> str:
    rid = request.headers.get("x-request-id")
    if rid:
        return rid
    try:
        return serve.context._get_serve_request_context().request_id or uuid.uuid4().hex
    except Exception:  # outside a Serve request (unit tests)
        return uuid.uuid4().hex


def error_response(err: ServeError, rid: str) -> JSONResponse:
    headers = {"x-request-id": rid}
    if err.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(err.retry_after_s)))
    return JSONResponse(
        status_code=err.status_code,
        content={"error": {"type": err.type, "message": err.message, "request_id": rid}},
        headers=headers,
    )


@api.exception_handler(ServeError)
async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
    return error_response(exc, request_id(request))


@api.exception_handler(Exception)
async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return error_response(as_serve_error(exc), request_id(request))


def _flag(value: Any, name: str) -> bool | None:
    if value is None or value == "":
        return None
    s = str(value).strip().lower()
    if s in {"1", "true", "yes", "on"}:
        return True
    if s in {"0", "false", "no", "off"}:
        return False
    raise InvalidRequest(f"{name} must be true or false; got {value!r}")


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        decode: DeploymentHandle,
        vad: DeploymentHandle,
        asr: DeploymentHandle,
        post: DeploymentHandle,
        args: PipelineArgs,
    ) -> None:
        self._decode, self._vad, self._asr, self._post = decode, vad, asr, post
        self._stages = {"decode": decode, "vad": vad, "asr": asr, "postprocess": post}
        self._args = args
        self._created = int(time.time())

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        async def probe(h: DeploymentHandle) -> bool:
            try:
                return bool(await asyncio.wait_for(h.ready.remote(), timeout=5))
            except Exception:
                return False

        names = list(self._stages)
        ok = await asyncio.gather(*(probe(self._stages[n]) for n in names))
        stages = dict(zip(names, ok, strict=True))
        if not all(ok):
            err = NotReady("not ready: " + ", ".join(n for n, v in stages.items() if not v))
            return JSONResponse(
                status_code=503, content={"status": "not_ready", "stages": stages, "error": err.message}
            )
        return JSONResponse({"status": "ready", "stages": stages})

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": self._created, "owned_by": "funasr-serve"}
                for name in self._args.asr.served_names
            ],
        }

    @api.get("/v1/stats")
    async def stats(self) -> Any:
        """Batching statistics of the ASR replica that answers (for operators and tests)."""
        return await self._asr.stats.remote()

    @api.post("/v1/audio/transcriptions")
    async def transcriptions(self, request: Request) -> Response:
        limits = self._args.limits
        max_bytes = int(limits.max_upload_mb * 1024 * 1024)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes + 64 * 1024:
            raise PayloadTooLarge(f"upload is larger than {limits.max_upload_mb:g} MB")
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise InvalidRequest("expected a multipart/form-data body with a 'file' field")
        try:
            form = await request.form(max_files=1, max_fields=32)
        except Exception as e:  # malformed multipart
            raise InvalidRequest(f"could not parse the multipart body: {e}") from e
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest("the 'file' field is missing")
            data = await upload.read(max_bytes + 1)
        finally:
            await form.close()  # spooled upload buffers are released (and deleted) here
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"upload is larger than {limits.max_upload_mb:g} MB")
        if not data:
            raise InvalidRequest("the uploaded file is empty")

        model = str(form.get("model") or self._args.asr.served_names[0])
        if model not in self._args.asr.served_names:
            raise ModelNotFound(
                f"model {model!r} is not served here; available: {', '.join(self._args.asr.served_names)}"
            )
        fmt = parse_format(str(form.get("response_format") or "json"))
        granularities = {
            str(g)
            for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
        }
        if granularities - {"word", "segment"}:
            raise InvalidRequest("timestamp_granularities[] takes 'word' and/or 'segment'")
        words = "word" in granularities
        if words and fmt != "verbose_json":
            raise InvalidRequest("timestamp_granularities[] needs response_format=verbose_json")
        options = AsrOptions(
            language=str(form.get("language") or "") or None,
            hotwords=str(form.get("prompt") or "") or None,
            word_timestamps=words,
        )
        post = PostOptions(
            punctuation=_flag(form.get("punctuation"), "punctuation"), itn=_flag(form.get("itn"), "itn")
        )

        # Chain the stages without awaiting the middle: each response feeds the next handle.
        try:
            decoded = self._decode.remote(data)
            segmentation = self._vad.remote(decoded)
            transcript = self._asr.transcribe.remote(segmentation, options)
            result = await self._post.remote(transcript, post)
        except Exception as e:
            raise as_serve_error(e) from None
        body = render(result, fmt, words)
        if isinstance(body, dict):
            return JSONResponse(body)
        return PlainTextResponse(body, media_type=MEDIA_TYPES[fmt])
