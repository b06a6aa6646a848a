"""Errors of the job store, as members of the project's hierarchy so the API shapes them
without a translation table."""

from __future__ import annotations

from serve_app.errors import InvalidRequest, NotFound


class JobNotFound(NotFound):
    """No such job (or it belongs to another owner)."""


class FileNotFound(NotFound):
    """No such file (or its job belongs to another owner)."""


class InvalidCursor(InvalidRequest):
    """The paging cursor is malformed or belongs to another listing."""


class UploadMissing(InvalidRequest):
    """A file of the job names an upload that is not stored (never uploaded, or deleted)."""

    type = "upload_missing"  # clients upload what is missing and send the job again


class WindowOutOfOrder(ValueError):
    """A window does not start where the file's committed progress ends: a worker bug, not a
    lost race (races are answered with ``WriteResult.STALE``)."""


class HistoryNotFound(NotFound):
    """No such history entry (or it belongs to another owner)."""
