"""Errors shaped in one place: whatever a route raises becomes
``{"error": {"type", "message", "request_id"}}`` with the status of its ``ServeError`` class.
Stage errors arrive already unwrapped (``serve_app.pipeline.as_serve_error``); 5xx bodies never
carry a traceback."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serve_app.errors import InternalError, InvalidRequest, NotFound, ServeError

logger = logging.getLogger("ray.serve")


def request_id(request: Request) -> str:
    rid = request.headers.get("x-request-id")
    if rid:
        return rid[:128]
    try:
        from ray import serve

        return serve.context._get_serve_request_context().request_id or uuid.uuid4().hex
    except Exception:  # outside a Serve request (unit tests)
        return uuid.uuid4().hex


def error_body(err: ServeError, rid: str) -> dict[str, dict[str, str]]:
    return {"error": {"type": err.type, "message": err.message, "request_id": rid}}


def error_response(err: ServeError, rid: str) -> JSONResponse:
    headers = {"x-request-id": rid}
    if err.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(err.retry_after_s)))
    return JSONResponse(status_code=err.status_code, content=error_body(err, rid), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return error_response(exc, request_id(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        return error_response(InvalidRequest("; ".join(msgs)), request_id(request))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        err: ServeError = NotFound(f"no route {request.method} {request.url.path}")
        if exc.status_code != 404:
            err = ServeError(str(exc.detail))
            err.status_code, err.type = exc.status_code, "invalid_request_error"
        return error_response(err, request_id(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(InternalError("internal error"), request_id(request))
