"""Names of the custom Locust request events: the contract between the locustfile, which fires
them, and the report, which reads them back from Locust's CSVs. No Locust import here, so the
report (and its unit tests) stay light.

Locust only knows "requests" with a response time and a content length, so each custom metric
borrows those two fields; what they mean is stated per event below.
"""

from __future__ import annotations

import re

RTF_TYPE = "RTF"
RTF_NAME = "rtf"
"""response_time = real-time factor x 1000 (processing time / audio length; 1000 = realtime)."""

LATENCY_TYPE = "LATENCY"
"""name ``final_latency/<clip>``: response_time = time to the final transcript in ms, per clip length."""

STEP_TYPE = "STEP"
"""name ``step/u<users>/ok``: one per successful transcription, attributed to the target user
count when it completed. response_time = latency in ms, response_length = audio length in ms
(so Request Count x Average Content Size = audio milliseconds transcribed in that step).
name ``step/u<users>/error``: one per failed request, with the failure as its exception."""

REALTIME_TYPE = "REALTIME"
"""Realtime sessions (``RealtimeUser``), names ``realtime/u<users>/<kind>`` by the target user
count when the session ended, response_time in ms (``load/realtime.py`` says how each is taken):

* ``first_partial``: first audio frame sent → first partial received, one per session;
* ``partial``: one per partial, its latency after the latest 600 ms chunk boundary sent;
* ``final_after_end``: end message → the server's ``is_end`` acknowledgement, one per session;
* ``session``: one per session, response_time = its wall time, response_length = audio ms
  streamed; a failed session carries the failure as its exception."""

JOB_TYPE = "JOB"
"""Batch jobs (``BatchJobUser``), names ``job/u<users>/<kind>`` by the target user count when
the job ended:

* ``completion``: one per completed job, response_time = submit → ended in ms, response_length
  = the job's audio ms (Request Count x Average Content Size = audio ms completed);
* ``audio_rate``: one per completed job, response_time = its audio-s/s x 1000 (audio seconds
  over completion seconds; 1000 = as fast as realtime);
* ``failed``: one per job that failed (a failed file, an HTTP error, a timeout), with the
  failure as its exception, so that completion times are those of successes only."""

REALTIME_KINDS = ("first_partial", "partial", "final_after_end", "session")
JOB_KINDS = ("completion", "audio_rate", "failed")

_STEP_NAME = re.compile(r"^step/u(\d+)/(ok|error)$")
_KIND_NAME = re.compile(r"^(realtime|job)/u(\d+)/([a-z_]+)$")


def final_latency_name(clip_label: str) -> str:
    return f"final_latency/{clip_label}"


def step_name(users: int, ok: bool) -> str:
    # Zero-padded so Locust's alphabetical tables list steps in order.
    return f"step/u{users:03d}/{'ok' if ok else 'error'}"


def parse_step_name(name: str) -> tuple[int, bool] | None:
    """``(users, ok)`` for a step event name, else None."""
    match = _STEP_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), match.group(2) == "ok"


def realtime_name(users: int, kind: str) -> str:
    assert kind in REALTIME_KINDS, kind
    return f"realtime/u{users:03d}/{kind}"


def job_name(users: int, kind: str) -> str:
    assert kind in JOB_KINDS, kind
    return f"job/u{users:03d}/{kind}"


def parse_kind_name(name: str) -> tuple[str, int, str] | None:
    """``(family, users, kind)`` for a realtime or job event name (family ``realtime`` or
    ``job``), else None."""
    match = _KIND_NAME.match(name)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), match.group(3)
