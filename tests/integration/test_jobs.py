"""Batch jobs through the real service (Whisper tiny.en, deploy/local.yaml): the API, the CLI,
input-folder jobs, failures that do not stop a job, cancel, history, and nothing lost when a
job-runner replica dies mid-file (SQLite here; tests/integration/test_jobs_restart.py kills
the whole serving tree on SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from ray import serve

from serve_app.cli import main as cli
from serve_app.jobs import JobStore
from tests.integration.conftest import ServeCluster
from tests.support import SENTENCES
from tools.audio import encode_wav, with_pauses
from tools.local_serve import app_config

JOBS_ARGS = {"jobs": {"commit_window_s": 60, "lease_s": 6, "concurrency": 2, "poll_s": 0.3}}


def words(text: str) -> set[str]:
    import re

    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def speech(say: Callable[[str], np.ndarray]) -> bytes:
    return encode_wav(with_pauses([say(s) for s in SENTENCES], pause_s=1.0))


@pytest.fixture(scope="module")
def long_speech(say: Callable[[str], np.ndarray]) -> bytes:
    """Over 120 s (at most 150 s): three windows of 60 s."""
    parts = [say(s) for s in SENTENCES] * 16
    return encode_wav(with_pauses(parts, pause_s=2.0)[: 150 * 16000])


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory: pytest.TempPathFactory, speech: bytes) -> Path:
    root = tmp_path_factory.mktemp("input")
    (root / "calls").mkdir()
    (root / "calls" / "a.wav").write_bytes(speech)
    outside = tmp_path_factory.mktemp("outside") / "secret.wav"
    outside.write_bytes(speech)
    (root / "escape.wav").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def jobs_app(
    serve_cluster: ServeCluster, tmp_path_factory: pytest.TempPathFactory, input_dir: Path
) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("jobsdata")
    app = app_config("local.yaml", "jobs", args=JOBS_ARGS)
    app["runtime_env"] = {
        "env_vars": {"FUNASR_SERVE_DATA_DIR": str(data), "FUNASR_SERVE_INPUT_DIR": str(input_dir)}
    }
    url = serve_cluster.deploy(app)
    try:
        yield url, data
    finally:
        serve_cluster.remove("jobs")


def wait_for(
    url: str,
    job_id: str,
    states: tuple[str, ...] = ("completed", "failed", "cancelled"),
    timeout_s: float = 240,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=30).json()
        if job["state"] in states or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.5)


def files_of(url: str, job_id: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}/v1/jobs/{job_id}/files", timeout=30).json()["data"])


def test_a_multipart_job_runs_to_the_end_once_and_exports(
    jobs_app: tuple[str, Path], beckett_wav: Path, speech: bytes, long_speech: bytes
) -> None:
    url, _ = jobs_app
    upload = [
        ("files", ("beckett.wav", beckett_wav.read_bytes())),
        ("files", ("two.wav", speech)),
        ("files", ("long.wav", long_speech)),
    ]
    form = {"response_format": "srt", "metadata": json.dumps({"case": "multipart"})}
    r = httpx.post(
        f"{url}/v1/jobs", files=upload, data=form, headers={"Idempotency-Key": "mp-1"}, timeout=120
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert (
        job["files"]["total"] == 3
        and job["metadata"] == {"case": "multipart"}
        and r.headers["location"].endswith(job["id"])
    )
    again = httpx.post(
        f"{url}/v1/jobs", files=upload, data=form, headers={"Idempotency-Key": "mp-1"}, timeout=120
    )
    assert again.status_code == 200 and again.json()["id"] == job["id"], "the same key made a second job"

    done = wait_for(url, job["id"])
    assert done["state"] == "completed" and done["files"]["done"] == 3, done
    assert done["audio_seconds"]["total_known"] and done["audio_seconds"]["done"] == pytest.approx(
        done["audio_seconds"]["total"], abs=1
    )
    by_name = {f["name"]: f for f in files_of(url, job["id"])}
    long = by_name["long.wav"]
    assert long["duration_s"] > 120 and long["progress_s"] == pytest.approx(long["duration_s"], abs=0.1), long

    beckett = by_name["beckett.wav"]["id"]
    text = httpx.get(f"{url}/v1/jobs/{job['id']}/files/{beckett}?format=text", timeout=30).text
    assert {"fail", "better"} <= words(text), text
    srt = httpx.get(f"{url}/v1/jobs/{job['id']}/files/{beckett}", timeout=30).text  # the job's default: srt
    assert "-->" in srt and "1\n" in srt
    verbose = httpx.get(
        f"{url}/v1/jobs/{job['id']}/files/{by_name['long.wav']['id']}?format=verbose_json", timeout=30
    ).json()
    starts = [s["start"] for s in verbose["segments"]]
    assert starts == sorted(starts) and len(starts) == len(set(starts)) and starts[-1] > 60, (
        "windows not stitched once"
    )

    z = zipfile.ZipFile(
        io.BytesIO(httpx.get(f"{url}/v1/jobs/{job['id']}/export?format=zip", timeout=60).content)
    )
    assert {"beckett.srt", "beckett.txt", "long.vtt", "two.json", "job.json"} <= set(z.namelist()), (
        z.namelist()
    )
    rows = httpx.get(f"{url}/v1/jobs/{job['id']}/export?format=csv", timeout=60).text.splitlines()
    assert rows[0].startswith("file,state") and len(rows) == 4
    segs = httpx.get(
        f"{url}/v1/jobs/{job['id']}/export?format=csv&rows=segments", timeout=60
    ).text.splitlines()
    assert len(segs) > 6 and segs[0] == "file,start_s,end_s,text"


def test_progress_as_server_sent_events(jobs_app: tuple[str, Path], speech: bytes) -> None:
    url, _ = jobs_app
    job = httpx.post(f"{url}/v1/jobs", files=[("files", ("s.wav", speech))], timeout=60).json()
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/events?interval_s=0.3", timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    assert events[0][0] == "progress" and events[-1][0] == "end", [k for k, _ in events]
    assert events[-1][1]["state"] == "completed"


def test_cli_uploads_only_what_the_server_lacks_and_exports(
    jobs_app: tuple[str, Path],
    tmp_path: Path,
    speech: bytes,
    beckett_wav: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, _ = jobs_app
    folder = tmp_path / "recordings"
    (folder / "day1").mkdir(parents=True)
    (folder / "day1" / "beckett.wav").write_bytes(beckett_wav.read_bytes())
    (folder / "two.wav").write_bytes(speech)
    (folder / "notes.txt").write_text("not audio")
    assert cli(["--url", url, "jobs", "submit", str(folder), "--wait", "--format", "srt"]) == 0
    first = capsys.readouterr()
    job_id = first.out.strip()
    assert "2 files, " in first.err and "completed" in first.err, first.err
    # Again, as after a crash: nothing uploaded (though the finished job released its audio),
    # the same job.
    assert cli(["--url", url, "jobs", "submit", str(folder), "--format", "srt"]) == 0
    second = capsys.readouterr()
    assert second.out.strip() == job_id and "0 uploaded, 2 already on the server" in second.err, second.err
    assert "the same job as before" in second.err

    out = tmp_path / "out"
    assert cli(["--url", url, "jobs", "export", job_id, "--format", "srt", "--out", str(out)]) == 0
    # Names from the server become safe base names under --out ("day1/beckett.wav" → "day1_beckett").
    assert {"fail", "better"} <= words((out / "day1_beckett.srt").read_text())
    assert cli(["--url", url, "jobs", "export", job_id, "--format", "csv", "--out", str(out)]) == 0
    assert (out / f"job-{job_id}-files.csv").read_text().count("\n") == 3
    assert cli(["--url", url, "jobs", "status", "nope"]) == 2


def test_uploads_by_content(jobs_app: tuple[str, Path], speech: bytes) -> None:
    import hashlib

    url, _ = jobs_app
    data = speech + b"\0\0"  # unique content for this test
    sha = hashlib.sha256(data).hexdigest()
    assert httpx.head(f"{url}/v1/uploads/{sha}").status_code == 404
    wrong = httpx.put(f"{url}/v1/uploads/{'0' * 64}", content=data, timeout=60)
    assert wrong.status_code == 400 and "sha256" in wrong.json()["error"]["message"]
    assert httpx.put(f"{url}/v1/uploads/{sha}", content=data, timeout=60).status_code == 201
    assert httpx.put(f"{url}/v1/uploads/{sha}", content=data, timeout=60).json()["created"] is False
    assert httpx.head(f"{url}/v1/uploads/{sha}").status_code == 200
    r = httpx.post(f"{url}/v1/jobs", json={"files": [{"sha256": sha, "name": "held.wav"}]}, timeout=60)
    assert r.status_code == 202 and wait_for(url, r.json()["id"])["state"] == "completed"
    missing = httpx.post(
        f"{url}/v1/jobs", json={"files": [{"sha256": "f" * 64, "name": "x.wav"}]}, timeout=60
    )
    assert missing.status_code == 400 and "no stored upload" in missing.json()["error"]["message"]


def test_jobs_from_the_input_folder_and_nothing_outside_it(
    jobs_app: tuple[str, Path], input_dir: Path
) -> None:
    url, data = jobs_app
    r = httpx.post(
        f"{url}/v1/jobs", json={"paths": ["calls/a.wav"], "options": {"language": "en"}}, timeout=60
    )
    assert r.status_code == 202, r.text
    assert wait_for(url, r.json()["id"])["state"] == "completed"
    assert (input_dir / "calls" / "a.wav").exists(), "a user's own file must never be deleted"
    for bad in ("../outside/secret.wav", "escape.wav", "/etc/passwd"):
        refused = httpx.post(f"{url}/v1/jobs", json={"paths": [bad]}, timeout=60)
        assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden", (
            bad,
            refused.text,
        )
    bad_lang = httpx.post(
        f"{url}/v1/jobs", json={"paths": ["calls/a.wav"], "options": {"language": "xx"}}, timeout=60
    )
    assert bad_lang.status_code == 400 and "allowed: en" in bad_lang.text


def test_a_bad_file_fails_with_its_reason_and_the_job_goes_on(
    jobs_app: tuple[str, Path], speech: bytes
) -> None:
    url, data = jobs_app
    r = httpx.post(
        f"{url}/v1/jobs",
        files=[("files", ("junk.wav", os.urandom(4096))), ("files", ("ok.wav", speech + b"\1\1"))],
        timeout=60,
    )
    job = wait_for(url, r.json()["id"])
    assert job["state"] == "completed" and job["files"]["failed"] == 1 and job["files"]["done"] == 1, job
    junk = next(f for f in files_of(url, job["id"]) if f["name"] == "junk.wav")
    assert junk["state"] == "failed" and "not a media file" in junk["error"], junk
    # Done files' audio is deleted (keep_job_audio is off); the results stay.
    held = list((data / "uploads").glob("*/*"))
    assert all(p.stat().st_size for p in held)


def test_cancel_mid_job_keeps_results_and_stops_the_rest(
    jobs_app: tuple[str, Path], say: Callable[[str], np.ndarray]
) -> None:
    url, _ = jobs_app
    clips = [
        ("files", (f"c{i}.wav", encode_wav(with_pauses([say(f"Number {i}. " + SENTENCES[i % 2])] * 6, 1.0))))
        for i in range(8)
    ]
    job = httpx.post(f"{url}/v1/jobs", files=clips, timeout=120).json()
    deadline = time.monotonic() + 120
    while httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=30).json()["files"]["done"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelled = httpx.post(f"{url}/v1/jobs/{job['id']}/cancel", timeout=30).json()
    assert cancelled["state"] == "cancelled" and cancelled["files"]["cancelled"] >= 1, cancelled
    before = {f["id"]: (f["state"], f["progress_s"]) for f in files_of(url, job["id"])}
    # Instead of waiting a while to see nothing happen: a job made after the cancel is worked on
    # to its end; a cancelled file that was still going to be claimed or written would have been
    # by then (the queue is first come, first served), and the runner holds none of them.
    later = httpx.post(f"{url}/v1/jobs", files=[clips[0]], timeout=120).json()
    assert wait_for(url, later["id"])["state"] == "completed"
    after = {f["id"]: (f["state"], f["progress_s"]) for f in files_of(url, job["id"])}
    assert before == after, "a cancelled job went on"
    in_flight = serve.get_deployment_handle("JobRunner", app_name="jobs").stats.remote().result(timeout_s=30)
    assert not set(in_flight["in_flight"]) & set(before), in_flight
    done = [f for f in files_of(url, job["id"]) if f["state"] == "done"]
    assert (
        done
        and httpx.get(f"{url}/v1/jobs/{job['id']}/files/{done[0]['id']}?format=text", timeout=30).text.strip()
    )


def test_history_of_single_transcriptions(jobs_app: tuple[str, Path], beckett_wav: Path) -> None:
    url, _ = jobs_app
    r = httpx.post(
        f"{url}/v1/audio/transcriptions",
        files={"file": ("beckett-history.wav", beckett_wav.read_bytes())},
        timeout=120,
    )
    assert r.status_code == 200
    found = httpx.get(f"{url}/v1/history", params={"q": "BETTER"}, timeout=30).json()["data"]
    entry = next(e for e in found if e["source_name"] == "beckett-history.wav")
    assert {"fail", "better"} <= words(entry["text"]) and entry["duration_s"] == pytest.approx(10, abs=0.5)
    srt = httpx.get(f"{url}/v1/history/{entry['id']}?format=srt", timeout=30).text
    assert "-->" in srt
    csv = httpx.get(f"{url}/v1/history/export", params={"q": "better"}, timeout=30).text
    assert "beckett-history.wav" in csv
    assert httpx.delete(f"{url}/v1/history/{entry['id']}", timeout=30).status_code == 200
    assert httpx.get(f"{url}/v1/history/{entry['id']}", timeout=30).status_code == 404


def test_a_job_runner_that_dies_mid_file_loses_nothing(
    jobs_app: tuple[str, Path], long_speech: bytes
) -> None:
    """SIGKILL the runner while it holds a file: Serve starts another replica, which claims the
    file again once its lease (6 s) has expired, resumes at the last committed window, and the
    file ends done exactly once."""
    url, data = jobs_app
    job = httpx.post(
        f"{url}/v1/jobs", files=[("files", ("long-kill.wav", long_speech + b"\2\2"))], timeout=60
    ).json()
    runner = serve.get_deployment_handle("JobRunner", app_name="jobs")
    deadline = time.monotonic() + 120
    while True:
        stats = runner.stats.remote().result(timeout_s=30)
        if any(p > 0 for p in stats["in_flight"].values()):  # at least one window committed
            break
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)
    os.kill(stats["pid"], signal.SIGKILL)
    done = wait_for(url, job["id"])
    assert done["state"] == "completed", done
    [f] = files_of(url, job["id"])
    assert f["state"] == "done" and f["attempts"] >= 2, f  # 2, or more when a loaded box misses a renewal
    store = JobStore(str(data / "funasr-serve.db"))
    t = store.jobs.get_transcript(f["id"])
    starts = [s["start_s"] for s in t.segments]
    assert (
        starts == sorted(starts)
        and len(starts) == len(set(starts))
        and t.covered_s == pytest.approx(f["duration_s"], abs=0.1)
    )
    store.close()
