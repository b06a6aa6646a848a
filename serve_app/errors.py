"""The error hierarchy. Raised anywhere in the graph, shaped into a response in one place
(``serve_app/api/errors.py``). Every class is picklable (plain ``Exception`` subclasses with a
single message argument) so it survives the hop between Ray actors."""

from __future__ import annotations

from typing import Literal


class ServeError(Exception):
    """Base class: ``status_code`` and ``type`` become the HTTP status and ``error.type``."""

    status_code: int = 500
    type: str = "server_error"
    retry_after_s: float | None = None

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.__class__.__doc__ or self.type


class InvalidRequest(ServeError):
    """The request is malformed."""

    status_code = 400
    type = "invalid_request_error"


class Unauthorized(ServeError):
    """A missing or wrong API key (``Authorization: Bearer <key>``)."""

    status_code = 401
    type = "invalid_api_key"


class UnsupportedAudio(ServeError):
    """The upload is not audio that ffmpeg can decode."""

    status_code = 415
    type = "unsupported_audio"


class PayloadTooLarge(ServeError):
    """The upload or its audio exceeds a configured limit."""

    status_code = 413
    type = "payload_too_large"


class FileChanged(ServeError):
    """An input-folder file no longer holds the content it had when the job was made."""

    status_code = 409
    type = "file_changed"


class PayloadTooLargeForJob(ServeError):
    """A job file over ``jobs.max_file_audio_s``."""

    status_code = 413
    type = "payload_too_large"


class NotFound(ServeError):
    """No such route or resource."""

    status_code = 404
    type = "not_found"


class ModelNotFound(ServeError):
    """The requested model is not served here."""

    status_code = 404
    type = "model_not_found"


class Overloaded(ServeError):
    """Too many requests in flight; retry later."""

    status_code = 429
    type = "overloaded"
    retry_after_s = 1.0


class TooManyStreams(Overloaded):
    """The caller holds as many event streams open as it may."""

    retry_after_s = 5.0


class SocketLimitReached(Overloaded):
    """No room for another realtime socket on this Ingress replica (the total cap)."""

    type = "too_many_sockets"
    cap: Literal["total", "owner"] = "total"
    """Which cap refused the socket: ``total`` (the replica's) or ``owner`` (the key's)."""


class OwnerSocketLimitReached(SocketLimitReached):
    """The socket's owner (its API key) already holds its most live sockets."""

    type = "too_many_sockets_for_owner"
    cap = "owner"


class BufferFull(Overloaded):
    """The realtime sockets of this Ingress replica buffer their most audio together."""

    type = "buffer_full"


class QuotaExceeded(ServeError):
    """A per-key quota (``QuotaArgs``) would be passed: the message names the quota, its limit
    and the key's use; retry once some of the key's work has ended."""

    status_code = 429
    type = "quota_exceeded"
    retry_after_s = 30.0


class TooFast(ServeError):
    """A realtime client sends audio faster than the server processes it, beyond the allowed
    backlog (``RealtimeArgs.max_backlog_s``)."""

    status_code = 429
    type = "too_fast"


class Forbidden(ServeError):
    """The request names something it may not reach, or comes from where it may not."""

    status_code = 403
    type = "forbidden"


class SessionLost(ServeError):
    """A realtime session's state is not on the replica that got its audio (it expired, or
    its replica restarted): the client must start a new session."""

    status_code = 410
    type = "session_lost"


class NotReady(ServeError):
    """A stage is not loaded yet."""

    status_code = 503
    type = "not_ready"


class ModelUnavailable(ServeError):
    """A model could not be found locally or fetched from the hub."""

    status_code = 500
    type = "model_unavailable"


class InternalError(ServeError):
    """Something failed on the server side."""

    status_code = 500
    type = "server_error"
