"""Locust users for funasr-serve.

    locust -f load/locustfile.py --host http://127.0.0.1:8000            # web UI
    locust -f load/locustfile.py --headless -u 4 -r 4 -t 60s --csv results/adhoc
    python -m load.capacity ...                                           # step load + report

Only loopback hosts are accepted (see ``load/hosts.py``). Besides the HTTP request itself, each
transcription fires custom request events (names in ``load/metrics.py``) so that Locust's own
tables and CSVs carry the real-time factor, latency per clip length and per-step goodput.

Environment: ``FUNASR_LOAD_CLIPS_DIR`` (clip cache, default ``.cache/clips``),
``FUNASR_LOAD_MODEL`` (the ``model`` form field, default ``whisper-1``).
"""

from __future__ import annotations

import functools
import os
import random
import time
from pathlib import Path
from typing import Any

from locust import HttpUser, User, events, task
from locust.env import Environment

from load import metrics
from load.clips import CACHE_DIR_ENV, DEFAULT_CACHE_DIR, Clip, build_clip_mix
from load.hosts import DEFAULT_HOST, check_host

TRANSCRIPTIONS = "/v1/audio/transcriptions"
MODEL_ENV = "FUNASR_LOAD_MODEL"
REQUEST_TIMEOUT_S = 900.0
"""Above the server's own request_timeout_s (600 in deploy/local.yaml), so the server's 408
is what a too-slow request reports, not a client-side timeout."""


CONNECTION_BACKOFF_S = 1.0
"""Pause after a request that got no HTTP response, so a server that is down is not hammered
with hundreds of instant failures a second (which would also swamp the error rate)."""


class TranscriptionFailed(Exception):
    """A failed request as Locust records it: the message is ``"<status> <error.type>"`` so the
    failures table groups by cause, not by request id."""


@events.init.add_listener
def _refuse_remote_hosts(environment: Environment, **_kwargs: Any) -> None:
    # An exception in an init listener makes Locust exit 1 before any user starts.
    check_host(environment.host or DEFAULT_HOST)


@functools.lru_cache(maxsize=4)
def _clip_mix(cache_dir: str) -> tuple[tuple[Clip, bytes], ...]:
    """The clips and their bytes, read once per process (the 300 s clip is about 10 MB)."""
    return tuple((clip, clip.path.read_bytes()) for clip in build_clip_mix(cache_dir))


def _failure(status: int, body: Any, error: object) -> str | None:
    """Why a response counts as a failure, or None when it is a usable transcript."""
    if status == 0:  # no HTTP response at all: connection refused / reset / client timeout
        return f"connection_error {type(error).__name__}"
    if status >= 400:
        err = body.get("error") if isinstance(body, dict) else None
        kind = err.get("type") if isinstance(err, dict) else None
        return f"{status} {kind or 'no_error_body'}"
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return f"{status} bad_response"
    return None


class FileTranscriptionUser(HttpUser):
    """One client uploading whole files back to back (closed loop), clips drawn by mix weight.

    A 429 (or any failure carrying ``Retry-After``) is a failure, and the user then waits as long
    as the server asked, as a well-behaved client would; after a connection error it waits
    ``CONNECTION_BACKOFF_S``. Every other wait is zero, so the user count is the concurrency.
    """

    host = DEFAULT_HOST

    def on_start(self) -> None:
        # The web UI can change the host after init, so check again per user.
        check_host(self.host)
        self._model = os.environ.get(MODEL_ENV, "whisper-1")
        self._clips = _clip_mix(str(Path(os.environ.get(CACHE_DIR_ENV, str(DEFAULT_CACHE_DIR))).resolve()))
        self._weights = [clip.weight for clip, _ in self._clips]
        self._retry_after_s = 0.0

    def wait_time(self) -> float:
        delay, self._retry_after_s = self._retry_after_s, 0.0
        return delay

    @task
    def transcribe(self) -> None:
        clip, payload = random.choices(self._clips, weights=self._weights)[0]
        start = time.perf_counter()
        with self.client.post(
            TRANSCRIPTIONS,
            files={"file": (clip.path.name, payload, "audio/wav")},
            data={"model": self._model, "response_format": "verbose_json"},
            name=TRANSCRIPTIONS,
            timeout=REQUEST_TIMEOUT_S,
            catch_response=True,
        ) as resp:
            latency_ms = (time.perf_counter() - start) * 1000.0
            try:
                body: Any = resp.json()
            except ValueError:
                body = None
            problem = _failure(resp.status_code, body, resp.error)
            if problem is None:
                resp.success()
            else:
                resp.failure(TranscriptionFailed(problem))
        if resp.status_code == 0:
            self._retry_after_s = CONNECTION_BACKOFF_S
        elif problem is not None and "Retry-After" in resp.headers:
            self._retry_after_s = _retry_after_s(resp.headers["Retry-After"])
        self._record(clip, latency_ms, problem)

    def _record(self, clip: Clip, latency_ms: float, problem: str | None) -> None:
        runner = self.environment.runner
        # The target, not the live count: it is set before a ramp, so no event is labelled
        # with a transient count between two steps.
        users = runner.target_user_count if runner is not None else 0
        if problem is not None:
            self._fire(
                metrics.STEP_TYPE,
                metrics.step_name(users, ok=False),
                latency_ms,
                0,
                TranscriptionFailed(problem),
            )
            return
        audio_ms = clip.duration_s * 1000.0
        self._fire(metrics.STEP_TYPE, metrics.step_name(users, ok=True), latency_ms, round(audio_ms))
        self._fire(metrics.RTF_TYPE, metrics.RTF_NAME, latency_ms / audio_ms * 1000.0)
        self._fire(metrics.LATENCY_TYPE, metrics.final_latency_name(clip.label), latency_ms)

    def _fire(
        self,
        request_type: str,
        name: str,
        response_time: float,
        length: int = 0,
        exception: Exception | None = None,
    ) -> None:
        self.environment.events.request.fire(
            request_type=request_type,
            name=name,
            response_time=response_time,
            response_length=length,
            exception=exception,
            context={},
        )


def _retry_after_s(header: str) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds form; the server sends no dates)."""
    try:
        return max(0.0, float(header))
    except ValueError:
        return 1.0


class RealtimeStreamingUser(User):
    """PLACEHOLDER: a realtime client streaming microphone-paced audio over a WebSocket and
    measuring partial/final latency. The server has no realtime endpoint yet; implement this
    (e.g. with ``websockets`` firing the same ``final_latency`` events) once it exists.
    Abstract, so Locust never spawns it."""

    abstract = True


class BatchJobUser(HttpUser):
    """PLACEHOLDER: a client submitting asynchronous batch transcription jobs and polling them
    to completion. The server has no jobs endpoint yet; implement this once it exists.
    Abstract, so Locust never spawns it."""

    abstract = True
