"""Every request body has a bound: a pure ASGI middleware counts the bytes of each body as they
stream in and cuts it off at its route's limit, so a chunked upload (no ``Content-Length``) is
refused at the limit like a declared one, and nothing past it is read, spooled or written.

A body declared larger than its limit is answered 413 at once, unread; one that turns out
larger raises ``PayloadTooLarge`` from ``receive`` into whatever is reading it (Starlette's form
parser, our multipart and upload streams, ``request.body()``), which the error handlers turn
into the 413. Readers that stream to disk (``serve_app.api.jobs.receive``) delete their partial
files when that happens."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.api.auth import route_path
from serve_app.api.errors import error_response, request_id
from serve_app.config import JobsArgs, LimitsArgs
from serve_app.errors import PayloadTooLarge

MULTIPART_SLACK = 64 * 1024
"""Bytes a transcription's multipart body may carry beyond the file (boundaries, other fields)."""
MIB = 1 << 20


@dataclass(frozen=True)
class BodyLimits:
    """The body limit of each route, from the configured limits."""

    limits: LimitsArgs
    jobs: JobsArgs

    def of(self, method: str, path: str, content_type: str) -> tuple[int, str]:
        """``(bytes, what)`` for a request: the most its body may hold, and what the 413 says."""
        if method == "POST" and path == "/v1/audio/transcriptions":
            mb = self.limits.max_upload_mb
            return int(mb * MIB) + MULTIPART_SLACK, f"an upload is larger than {mb:g} MB"
        if method == "POST" and path == "/v1/jobs" and content_type.startswith("multipart/"):
            gb = self.jobs.max_job_upload_gb
            return int(gb * 1024 * MIB), (
                f"a multipart job is larger than {gb:g} GB; upload larger batches file by file "
                "(PUT /v1/uploads/{sha256}, as `funasr-serve jobs submit` does)"
            )
        if method == "PUT" and path.startswith("/v1/uploads/"):
            mb = self.jobs.max_file_mb
            return int(mb * MIB), f"a file is larger than {mb:g} MB"
        if method == "POST" and path == "/v1/jobs":
            mb = self.limits.max_json_mb
            return int(mb * MIB), f"a JSON body is larger than {mb:g} MB"
        kb = self.limits.max_body_kb
        return int(kb * 1024), f"the request body is larger than {kb:g} KB"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope.get("headers", []) if k in (b"content-length", b"content-type")}
        limit, what = self.limits.of(
            scope.get("method", "GET"), route_path(scope), headers.get(b"content-type", b"").decode("latin-1")
        )
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            request = Request(scope, receive)
            await error_response(PayloadTooLarge(what), request_id(request))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(what)
            return message

        await self.app(scope, counted, send)
