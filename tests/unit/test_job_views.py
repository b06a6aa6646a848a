"""The JSON views, transcript formats and exports of jobs and history, driven in process: one
transcript model (``contracts.Transcript``) rendered the same way by every route."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serve_app.api import create_app
from serve_app.api.origins import HostPolicy
from serve_app.jobs import JobOptions, JobStore, NewFile, SegmentJson, Window
from tests.unit.stand_ins import api_context

SEGMENTS: list[SegmentJson] = [
    {
        "start_s": 0.25,
        "end_s": 2.5,
        "text": " Hello there.",
        "words": [
            {"start_s": 0.25, "end_s": 0.9, "word": "Hello"},
            {"start_s": 1.0, "end_s": 2.4, "word": "there."},
        ],
    },
    {"start_s": 3.0, "end_s": 3.5, "text": "  "},
    {"start_s": 61.0, "end_s": 65.125, "text": '=General, "Kenobi".'},
]
SRT = '1\n00:00:00,250 --> 00:00:02,500\nHello there.\n\n2\n00:01:01,000 --> 00:01:05,125\n=General, "Kenobi".\n'
VTT = 'WEBVTT\n\n00:00:00.250 --> 00:00:02.500\nHello there.\n\n00:01:01.000 --> 00:01:05.125\n=General, "Kenobi".\n'
TEXT = 'Hello there. =General, "Kenobi".'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore.open(tmp_path / "jobs.db")
    yield s
    s.close()


@pytest.fixture
def client(store: JobStore, tmp_path: Path) -> TestClient:
    ctx = api_context(tmp_path / "data", store=store, hosts=HostPolicy.build("127.0.0.1", "testserver"))
    return TestClient(create_app(ctx))


@pytest.fixture
def job(store: JobStore) -> str:
    """Three files: two done (their names collide once made safe), one failed."""
    names = ["a.wav", "a.mp3", "sub/b.wav"]
    for i in range(len(names)):
        store.uploads.add(f"{i + 1:064x}", 10, f"uploads/{i}")
    new = [NewFile(n, f"{i + 1:064x}") for i, n in enumerate(names)]
    job_id = store.jobs.create(new, JobOptions(model="whisper-1", response_format="srt")).job.id
    for n in range(len(names)):
        claim = store.queue.claim("w", 60)
        assert claim is not None
        if n == 2:
            store.queue.fail(claim.file.id, claim.attempt, "broken file")
            continue
        # Two windows, the second naming no language: the file's is the first window's.
        assert store.queue.commit_window(claim.file.id, claim.attempt, Window(0.0, 30.0, SEGMENTS[:2], "en"))
        assert store.queue.commit_window(claim.file.id, claim.attempt, Window(30.0, 66.0, SEGMENTS[2:], None))
        assert store.queue.complete(claim.file.id, claim.attempt)
    return job_id


def files_of(c: TestClient, job: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = c.get(f"/v1/jobs/{job}/files").json()["data"]
    return data


def test_views_have_their_shapes(client: TestClient, job: str, store: JobStore) -> None:
    body = client.get(f"/v1/jobs/{job}").json()
    assert list(body) == [
        "id", "object", "state", "owner", "created_at", "started_at", "finished_at", "options",
        "metadata", "files", "audio_seconds", "eta_s",
    ], body  # fmt: skip
    assert body["files"] == {"total": 3, "pending": 0, "running": 0, "done": 2, "failed": 1, "cancelled": 0}
    assert body["created_at"].endswith("Z") and "+" not in body["created_at"], body
    f = files_of(client, job)[0]
    assert list(f) == [
        "id", "object", "name", "sha256", "size_bytes", "duration_s", "state", "error", "attempts",
        "progress_s", "created_at", "finished_at",
    ], f  # fmt: skip
    store.history.add(text="hi", segments=SEGMENTS, source_name="x.wav", language="en", duration_s=66.0)
    entry = client.get("/v1/history").json()["data"][0]
    assert list(entry) == [
        "id", "object", "created_at", "owner", "source_name", "duration_s", "language", "model", "text",
    ], entry  # fmt: skip
    assert client.get(f"/v1/history/{entry['id']}").json()["segments"] == SEGMENTS


def test_a_file_in_every_format(client: TestClient, job: str) -> None:
    done = files_of(client, job)[0]
    url = f"/v1/jobs/{job}/files/{done['id']}"
    r = client.get(url)  # the job's own response_format
    assert (r.text, r.headers["content-type"]) == (SRT, "application/x-subrip; charset=utf-8"), r.text
    assert client.get(url, params={"format": "vtt"}).text == VTT
    assert client.get(url, params={"format": "text"}).text == TEXT + "\n"
    assert client.get(url, params={"format": "json"}).json() == {"text": TEXT}
    verbose = client.get(url, params={"format": "verbose_json"}).json()
    assert verbose["language"] == "en" and verbose["duration"] == 66.0, verbose
    assert verbose["file"] == done and len(verbose["words"]) == 2, verbose


def test_zip_export_names_and_contents(client: TestClient, job: str) -> None:
    r = client.get(f"/v1/jobs/{job}/export")
    assert r.headers["content-disposition"] == f'attachment; filename="job-{job}.zip"'
    z = zipfile.ZipFile(io.BytesIO(r.content))
    # a.wav and a.mp3 are both "a": the second becomes "a-2"; the failed file has no transcript.
    assert sorted(z.namelist()) == sorted(
        [f"{stem}.{ext}" for stem in ("a", "a-2") for ext in ("txt", "srt", "vtt", "json")] + ["job.json"]
    ), z.namelist()
    assert z.read("a-2.srt").decode() == SRT
    assert z.read("a.vtt").decode() == VTT
    assert z.read("a.txt").decode() == TEXT + "\n"
    assert json.loads(z.read("a.json"))["text"] == TEXT
    listing = json.loads(z.read("job.json"))
    assert listing["id"] == job and [f["name"] for f in listing["file_list"]] == [
        "a.wav",
        "a.mp3",
        "sub/b.wav",
    ]


def test_csv_exports(client: TestClient, job: str) -> None:
    r = client.get(f"/v1/jobs/{job}/export", params={"format": "csv"})
    assert r.headers["content-disposition"] == f'attachment; filename="job-{job}-files.csv"'
    assert list(csv.reader(io.StringIO(r.text))) == [
        ["file", "state", "duration_s", "language", "text", "error"],
        ["a.wav", "done", "66.0", "en", TEXT, ""],
        ["a.mp3", "done", "66.0", "en", TEXT, ""],
        ["sub/b.wav", "failed", "", "", "", "broken file"],
    ], r.text
    r = client.get(f"/v1/jobs/{job}/export", params={"format": "csv", "rows": "segments"})
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[:2] == [["file", "start_s", "end_s", "text"], ["a.wav", "0.250", "2.500", " Hello there."]], (
        rows
    )
    assert rows[3] == ["a.wav", "61.000", "65.125", "'" + SEGMENTS[2]["text"]], rows  # not a formula
    assert len(rows) == 1 + 2 * len(SEGMENTS), rows
    assert client.get(f"/v1/jobs/{job}/export", params={"format": "tar"}).status_code == 400
    assert client.get(f"/v1/jobs/{job}/export", params={"format": "csv", "rows": "x"}).status_code == 400


def test_history_entries_render_as_transcripts(client: TestClient, store: JobStore) -> None:
    zh = store.history.add(
        text="你好世界",
        segments=[{"start_s": 0, "end_s": 1, "text": "你好"}, {"start_s": 1, "end_s": 2, "text": "世界"}],
    )
    en = store.history.add(text=TEXT, segments=SEGMENTS, language="en", duration_s=66.0)
    assert client.get(f"/v1/history/{en.id}", params={"format": "srt"}).text == SRT
    assert client.get(f"/v1/history/{en.id}", params={"format": "verbose_json"}).json()["duration"] == 66.0
    # No language recorded: segments join with spaces, the duration is 0.
    assert client.get(f"/v1/history/{zh.id}", params={"format": "text"}).text == "你好 世界\n"
    assert client.get(f"/v1/history/{zh.id}", params={"format": "verbose_json"}).json()["duration"] == 0.0


def test_the_event_stream_ends_when_the_job_has_ended(client: TestClient, job: str) -> None:
    with client.stream("GET", f"/v1/jobs/{job}/events", params={"interval_s": 0.2}) as r:
        text = "".join(r.iter_text())
    events = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert events == ["progress", "end"], text
