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

_STEP_NAME = re.compile(r"^step/u(\d+)/(ok|error)$")


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
