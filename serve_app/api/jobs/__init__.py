"""Batch jobs: ``/v1/jobs`` and ``/v1/uploads``.

A job is created from uploaded files (multipart, repeatable ``files`` fields, plus the
transcription form's fields), from files the server already holds (JSON ``{"files": [{"sha256",
"name"}]}``, after ``PUT /v1/uploads/{sha256}``), or from files under the configured input folder
(JSON ``{"paths": [...]}``). ``Idempotency-Key``: the same key within 24 h returns the same job.
The job runner transcribes its files in the batch-job class of the ASR queue; progress is
``GET /v1/jobs/{id}`` or its server-sent events, results per file in every response format or
exported as a zip or CSV.

One module per feature: ``routes`` (create, list, read, cancel, delete jobs and their files),
``uploads`` (``/v1/uploads/{sha256}``: content the server holds for later jobs), ``export``
(a job as a zip or CSV), ``events`` (its server-sent events); ``receive`` streams request
bodies to ``uploads/`` (through ``serve_app.jobs.blobs``).
"""

from __future__ import annotations

from fastapi import APIRouter

from serve_app.api.jobs import events, export, routes, uploads

router = APIRouter()
for _module in (routes, export, events, uploads):
    router.include_router(_module.router)

__all__ = ["router"]
