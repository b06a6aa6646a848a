"""Locust users for funasr-serve.

    locust -f load/locustfile.py --host http://127.0.0.1:8000            # web UI
    locust -f load/locustfile.py --headless -u 4 -r 4 -t 60s --csv results/adhoc
    locust -f load/locustfile.py --headless -u 3 -r 3 -t 60s \
        FileTranscriptionUser RealtimeUser BatchJobUser                   # pick the kinds by name
    python -m load.capacity ...                                           # step load + report

Three kinds of client, equal weights (Locust shares the user count between the classes named on
its command line, all of them when none is):

* ``FileTranscriptionUser``: whole files to ``/v1/audio/transcriptions``, back to back;
* ``RealtimeUser``: FunASR's realtime protocol over a WebSocket, audio paced at real time;
* ``BatchJobUser``: a few files as one ``/v1/jobs`` job, polled until it ends.

Only loopback hosts are accepted (see ``load/hosts.py``). Besides the HTTP requests themselves,
each user fires custom request events (names in ``load/metrics.py``) so that Locust's own tables
and CSVs carry the real-time factor, latency per clip length, per-step goodput, realtime latencies
and job completion.

Environment: ``FUNASR_LOAD_CLIPS_DIR`` (clip cache, default ``.cache/clips``),
``FUNASR_LOAD_MODEL`` (the ``model`` form field, default ``whisper-1``),
``FUNASR_LOAD_REALTIME_MODE`` (``2pass``, FunASR's client default, or ``online``).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, User, events, task
from locust.env import Environment
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from load import metrics
from load.clips import CACHE_DIR_ENV, DEFAULT_CACHE_DIR, Clip, build_clip_mix
from load.hosts import DEFAULT_HOST, check_host
from load.realtime import END_MESSAGE, FRAME_S, Mode, SessionTrace, config_message, frames, wav_pcm, ws_url

TRANSCRIPTIONS = "/v1/audio/transcriptions"
JOBS = "/v1/jobs"
MODEL_ENV = "FUNASR_LOAD_MODEL"
REALTIME_MODE_ENV = "FUNASR_LOAD_REALTIME_MODE"
REQUEST_TIMEOUT_S = 900.0
"""Above the server's own request_timeout_s (600 in deploy/local.yaml), so the server's 408
is what a too-slow request reports, not a client-side timeout."""


CONNECTION_BACKOFF_S = 1.0
"""Pause after a request that got no HTTP response, so a server that is down is not hammered
with hundreds of instant failures a second (which would also swamp the error rate)."""


REALTIME_MAX_CLIP_S = 30.0
"""Realtime sessions stream the clips of the mix up to this long (a live turn, not a recording)."""
REALTIME_ACK_TIMEOUT_S = 120.0
"""After the end message, how long a session waits for the server's acknowledgement."""

JOB_FILES = 3
"""Clips per batch job, drawn by mix weight."""
JOB_POLL_S = 1.0
JOB_TIMEOUT_S = 3600.0
"""A job not ended after this long counts as failed (the user then submits the next)."""


class TranscriptionFailed(Exception):
    """A failed request as Locust records it: the message is ``"<status> <error.type>"`` so the
    failures table groups by cause, not by request id."""


class SessionFailed(Exception):
    """A realtime session that did not end with the server's acknowledgement, or a batch job that
    did not complete: the message is the cause, without ids, so the failures table groups it."""


@events.init.add_listener
def _refuse_remote_hosts(environment: Environment, **_kwargs: Any) -> None:
    # An exception in an init listener makes Locust exit 1 before any user starts.
    check_host(environment.host or DEFAULT_HOST)


@functools.lru_cache(maxsize=4)
def _clip_mix(cache_dir: str) -> tuple[tuple[Clip, bytes], ...]:
    """The clips and their bytes, read once per process (the 300 s clip is about 10 MB)."""
    return tuple((clip, clip.path.read_bytes()) for clip in build_clip_mix(cache_dir))


def _cache_dir() -> str:
    return str(Path(os.environ.get(CACHE_DIR_ENV, str(DEFAULT_CACHE_DIR))).resolve())


def _fire(
    environment: Environment,
    request_type: str,
    name: str,
    response_time: float,
    length: int = 0,
    exception: Exception | None = None,
) -> None:
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=response_time,
        response_length=length,
        exception=exception,
        context={},
    )


def _target_users(environment: Environment) -> int:
    """The target, not the live count: it is set before a ramp, so no event is labelled with a
    transient count between two steps."""
    runner = environment.runner
    return runner.target_user_count if runner is not None else 0


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


class _ServerPacedWait:
    """A closed loop: no wait between tasks unless the server asked for one (``Retry-After``)
    or the connection failed (``CONNECTION_BACKOFF_S``), set in ``_backoff_s`` by the task."""

    _backoff_s = 0.0

    def wait_time(self) -> float:
        delay, self._backoff_s = self._backoff_s, 0.0
        return delay


class _ClipsHttpUser(_ServerPacedWait, HttpUser):
    """What the HTTP users share: the loopback check, the ``model`` field and the clip mix."""

    abstract = True
    host = DEFAULT_HOST

    def on_start(self) -> None:
        # The web UI can change the host after init, so check again per user.
        check_host(self.host)
        self._model = os.environ.get(MODEL_ENV, "whisper-1")
        self._clips = _clip_mix(_cache_dir())
        self._weights = [clip.weight for clip, _ in self._clips]


class FileTranscriptionUser(_ClipsHttpUser):
    """One client uploading whole files back to back (closed loop), clips drawn by mix weight.

    A 429 (or any failure carrying ``Retry-After``) is a failure, and the user then waits as long
    as the server asked, as a well-behaved client would; after a connection error it waits
    ``CONNECTION_BACKOFF_S``. Every other wait is zero, so the user count is the concurrency.
    """

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
            self._backoff_s = CONNECTION_BACKOFF_S
        elif problem is not None and "Retry-After" in resp.headers:
            self._backoff_s = _retry_after_s(resp.headers["Retry-After"])
        self._record(clip, latency_ms, problem)

    def _record(self, clip: Clip, latency_ms: float, problem: str | None) -> None:
        users = _target_users(self.environment)
        if problem is not None:
            _fire(
                self.environment,
                metrics.STEP_TYPE,
                metrics.step_name(users, ok=False),
                latency_ms,
                0,
                TranscriptionFailed(problem),
            )
            return
        audio_ms = clip.duration_s * 1000.0
        env = self.environment
        _fire(env, metrics.STEP_TYPE, metrics.step_name(users, ok=True), latency_ms, round(audio_ms))
        _fire(env, metrics.RTF_TYPE, metrics.RTF_NAME, latency_ms / audio_ms * 1000.0)
        _fire(env, metrics.LATENCY_TYPE, metrics.final_latency_name(clip.label), latency_ms)


def _retry_after_s(header: str) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds form; the server sends no dates)."""
    try:
        return max(0.0, float(header))
    except ValueError:
        return 1.0


class RealtimeUser(_ServerPacedWait, User):
    """One live speaker after another (closed loop) over FunASR's realtime WebSocket protocol.

    Each session sends the configuration, a clip of the mix up to ``REALTIME_MAX_CLIP_S`` (drawn
    by weight) in 60 ms frames paced at real time on an absolute schedule, then the end message,
    and waits for the ``is_end`` acknowledgement. It fires first-partial, partial and
    final-after-end events and one ``session`` event (``load/metrics.py``). Uses websockets' sync
    client: under Locust its sockets and its reader thread are gevent's, so a greenlet reads the
    replies while this one sends. After a session that failed to connect it waits
    ``CONNECTION_BACKOFF_S``.
    """

    host = DEFAULT_HOST

    def on_start(self) -> None:
        check_host(self.host)
        mode = os.environ.get(REALTIME_MODE_ENV, "2pass")
        if mode not in ("2pass", "online"):
            raise ValueError(f"{REALTIME_MODE_ENV} must be 2pass or online, not {mode!r}")
        self._mode: Mode = "2pass" if mode == "2pass" else "online"
        clips = [
            (c, wav_pcm(data)) for c, data in _clip_mix(_cache_dir()) if c.duration_s <= REALTIME_MAX_CLIP_S
        ]
        if not clips:
            raise ValueError(f"the clip mix has no clip of at most {REALTIME_MAX_CLIP_S:g} s")
        self._clips = clips
        self._weights = [clip.weight for clip, _ in clips]

    @task
    def stream(self) -> None:
        clip, pcm = random.choices(self._clips, weights=self._weights)[0]
        trace = SessionTrace()
        start = time.perf_counter()
        try:
            with connect(
                ws_url(self.host),
                subprotocols=[Subprotocol("binary")],
                open_timeout=30,
                ping_interval=None,
                compression=None,
                proxy=None,
            ) as ws:
                self._converse(ws, pcm, trace, clip.label)
        except InvalidStatus as e:  # refused at the handshake (e.g. 503 while the app deploys)
            trace.error = trace.error or f"{e.response.status_code} handshake"
            self._backoff_s = CONNECTION_BACKOFF_S
        except (OSError, TimeoutError, WebSocketException) as e:
            trace.error = trace.error or f"connection_error {type(e).__name__}"
            if not trace.sent:
                self._backoff_s = CONNECTION_BACKOFF_S
        self._record(trace, (time.perf_counter() - start) * 1000.0)

    def _converse(self, ws: ClientConnection, pcm: bytes, trace: SessionTrace, name: str) -> None:
        reader = gevent.spawn(_read_replies, ws, trace)
        ws.send(config_message(self._mode, name))
        t0 = time.perf_counter()
        for i, frame in enumerate(frames(pcm)):
            delay = t0 + i * FRAME_S - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            if reader.dead:  # the server ended the session early
                return
            ws.send(frame)
            trace.send(frame, time.perf_counter())
        ws.send(END_MESSAGE)
        trace.end_sent = time.perf_counter()
        reader.join(timeout=REALTIME_ACK_TIMEOUT_S)
        if not reader.dead:
            trace.error = trace.error or f"no acknowledgement within {REALTIME_ACK_TIMEOUT_S:g} s"
            reader.kill()

    def _record(self, trace: SessionTrace, wall_ms: float) -> None:
        env, users = self.environment, _target_users(self.environment)
        first = trace.first_partial_s()
        if first is not None:
            _fire(env, metrics.REALTIME_TYPE, metrics.realtime_name(users, "first_partial"), first * 1000.0)
        for latency in trace.partial_latencies_s():
            _fire(env, metrics.REALTIME_TYPE, metrics.realtime_name(users, "partial"), latency * 1000.0)
        after_end = trace.final_after_end_s()
        if trace.ok and after_end is not None:
            _fire(
                env,
                metrics.REALTIME_TYPE,
                metrics.realtime_name(users, "final_after_end"),
                after_end * 1000.0,
            )
        problem = None if trace.ok else SessionFailed(trace.error or "closed before the acknowledgement")
        _fire(
            env,
            metrics.REALTIME_TYPE,
            metrics.realtime_name(users, "session"),
            wall_ms,
            round(trace.audio_s * 1000.0),
            problem,
        )


def _read_replies(ws: ClientConnection, trace: SessionTrace) -> None:
    """Record every reply until the acknowledgement, an error reply or the socket's close."""
    try:
        for message in ws:
            if trace.receive(message, time.perf_counter()):
                return
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd is not None else "no_close_frame"
        trace.error = trace.error or f"closed {code}"
        return
    trace.error = trace.error or "closed before the acknowledgement"


class BatchJobUser(_ClipsHttpUser):
    """One client submitting batch jobs back to back (closed loop): ``JOB_FILES`` clips of the mix
    (drawn by weight) as one multipart ``POST /v1/jobs``, then ``GET /v1/jobs/{id}`` every
    ``JOB_POLL_S`` until the job ends. Fires a ``completion`` event per job and an ``audio_rate``
    event per completed one (``load/metrics.py``). Completion time is the upload plus the
    server's own ``finished_at - created_at``, so the poll interval does not round it. A job with a
    failed file counts as failed (the cause names how many files failed).
    """

    @task
    def run_job(self) -> None:
        chosen = random.choices(self._clips, weights=self._weights, k=JOB_FILES)
        audio_s = sum(clip.duration_s for clip, _ in chosen)
        start = time.perf_counter()
        upload = [
            ("files", (f"{i}-{clip.path.name}", data, "audio/wav")) for i, (clip, data) in enumerate(chosen)
        ]
        with self.client.post(
            JOBS,
            files=upload,
            data={"model": self._model},
            name=JOBS,
            timeout=REQUEST_TIMEOUT_S,
            catch_response=True,
        ) as resp:
            try:
                body: Any = resp.json()
            except ValueError:
                body = None
            problem = _failure(resp.status_code, body, resp.error) if resp.status_code >= 300 else None
            if problem is None and not (isinstance(body, dict) and isinstance(body.get("id"), str)):
                problem = f"{resp.status_code} bad_response"
            if problem is None:
                resp.success()
            else:
                resp.failure(TranscriptionFailed(problem))
        upload_s = time.perf_counter() - start
        if problem is not None:
            if resp.status_code == 0:
                self._backoff_s = CONNECTION_BACKOFF_S
            elif "Retry-After" in resp.headers:
                self._backoff_s = _retry_after_s(resp.headers["Retry-After"])
            self._record(audio_s, upload_s * 1000.0, problem)
            return
        job, problem = self._wait(body["id"], start)
        self._record(audio_s, _completion_s(job, upload_s, start) * 1000.0, problem)

    def _wait(self, job_id: str, start: float) -> tuple[dict[str, Any], str | None]:
        """Poll until the job ends; the last job JSON and why it failed (None: every file done)."""
        job: dict[str, Any] = {}
        while time.perf_counter() - start < JOB_TIMEOUT_S:
            gevent.sleep(JOB_POLL_S)
            with self.client.get(
                f"{JOBS}/{job_id}", name=f"{JOBS}/{{id}}", timeout=60, catch_response=True
            ) as resp:
                if resp.status_code != 200:
                    resp.failure(TranscriptionFailed(f"{resp.status_code} poll"))
                    if 400 <= resp.status_code < 500 and resp.status_code != 429:
                        return job, f"{resp.status_code} poll"  # gone or refused: polling will not help
                    continue
                resp.success()
                job = resp.json()
            state = job.get("state")
            if state == "completed":
                failed = int(job.get("files", {}).get("failed", 0))
                return job, f"completed with {failed} failed file(s)" if failed else None
            if state in ("failed", "cancelled"):
                return job, f"job {state}"
        return job, f"not ended within {JOB_TIMEOUT_S:g} s"

    def _record(self, audio_s: float, completion_ms: float, problem: str | None) -> None:
        env, users = self.environment, _target_users(self.environment)
        if problem is not None:
            failed = metrics.job_name(users, "failed")
            _fire(env, metrics.JOB_TYPE, failed, completion_ms, 0, SessionFailed(problem))
            return
        length = round(audio_s * 1000.0)
        _fire(env, metrics.JOB_TYPE, metrics.job_name(users, "completion"), completion_ms, length)
        rate = audio_s / max(completion_ms / 1000.0, 1e-3)
        _fire(env, metrics.JOB_TYPE, metrics.job_name(users, "audio_rate"), rate * 1000.0)


def _completion_s(job: dict[str, Any], upload_s: float, start: float) -> float:
    """Upload time plus the server's ``finished_at - created_at``; the client's clock when the
    server's timestamps are missing."""
    created, finished = job.get("created_at"), job.get("finished_at")
    if isinstance(created, str) and isinstance(finished, str):
        span = dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(created)
        return upload_s + span.total_seconds()
    return time.perf_counter() - start
