"""``GET /v1/jobs/{id}/export``: a job's results in one download, a zip (per finished file its
transcript as .txt, .srt, .vtt and .json, and ``job.json``) or a CSV (a row per file or per
segment). Built from each file's ``contracts.Transcript``, rendered by ``serve_app.formats``."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from collections.abc import Mapping

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from serve_app.api.context import ApiContext, context, visible_owner
from serve_app.api.views import file_json, job_json
from serve_app.contracts import Transcript
from serve_app.errors import InvalidRequest
from serve_app.exports import UniqueNames, csv_text, safe_stem
from serve_app.formats import ResponseFormat, render
from serve_app.jobs import FileState, Job, JobFile, JobStore

router = APIRouter(tags=["jobs"])

ZIP_FILES: tuple[tuple[str, ResponseFormat], ...] = (
    ("txt", "text"),
    ("srt", "srt"),
    ("vtt", "vtt"),
    ("json", "verbose_json"),
)
"""Per finished file in a zip: an extension and the response format written under it."""
JOB_JSON = "job.json"
CSV_ROWS = ("files", "segments")


def job_zip(job: Job, files: list[JobFile], transcripts: Mapping[str, Transcript]) -> bytes:
    """The zip export: each file with a transcript under a safe name of its own (names taken
    from the uploads, ``-2``, ``-3``, ... on a collision), then ``job.json``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        names = UniqueNames(reserved=[JOB_JSON])
        for f in files:
            if f.id not in transcripts:
                continue
            stem = names.claim(safe_stem(f.name, fallback=f.id), [ext for ext, _ in ZIP_FILES])
            t = transcripts[f.id]
            for ext, fmt in ZIP_FILES:
                body = render(t, fmt, words=True)
                z.writestr(
                    f"{stem}.{ext}",
                    json.dumps(body, ensure_ascii=False) if isinstance(body, dict) else body,
                )
        z.writestr(
            JOB_JSON,
            json.dumps({**job_json(job), "file_list": [file_json(f) for f in files]}, indent=2),
        )
    return buf.getvalue()


def job_csv(files: list[JobFile], transcripts: Mapping[str, Transcript], rows: str) -> str:
    """The CSV export: a row per file (``files``) or per segment of the finished files
    (``segments``); text cells never start a formula (``exports.csv_text``)."""
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
    return out.getvalue()


async def all_files(store: JobStore, job_id: str, who: str | None) -> list[JobFile]:
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
    store = ctx.store
    job = await asyncio.to_thread(store.jobs.get, job_id, owner=who)
    files = await all_files(store, job_id, who)
    transcripts = {
        f.id: (await asyncio.to_thread(store.jobs.get_transcript, f.id, owner=who)).transcript(
            ctx.served.language
        )
        for f in files
        if f.state is FileState.DONE
    }
    if format == "zip":
        return Response(
            job_zip(job, files, transcripts),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="job-{job_id}.zip"'},
        )
    if format != "csv":
        raise InvalidRequest("format must be zip or csv")
    if rows not in CSV_ROWS:
        raise InvalidRequest("rows must be files or segments")
    return Response(
        job_csv(files, transcripts, rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-{rows}.csv"'},
    )
