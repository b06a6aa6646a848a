"""Realtime over WebSocket, through the real service: FunASR's protocol as its official client
speaks it (both generations, all three modes), OpenAI's Realtime transcription through the
``openai`` SDK, the faults a client can commit, and sessions pinned to their Streaming replica."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import websockets
from ray import serve

from serve_app.errors import SessionLost
from tests.integration.conftest import ServeCluster
from tests.support import funasr_args, funasr_stream, pcm16, ws_url
from tools.audio import read_wav, resample
from tools.local_serve import app_config

BECKETT_WORDS = {"ever", "tried", "failed", "matter", "try", "again", "fail", "better"}


def words(text: str) -> set[str]:
    import re

    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def beckett_pcm(beckett_wav: Path) -> bytes:
    samples, rate = read_wav(beckett_wav.read_bytes())
    assert rate == 16000
    return pcm16(samples)


@pytest.fixture(scope="module")
def realtime_app(serve_cluster: ServeCluster, tiny_models: dict[str, Path]) -> Iterator[str]:
    """The FunASR path with a streaming Paraformer (random weights, real architecture) and two
    Streaming replicas, short timeouts for the fault tests, and small caps on what sockets may
    hold (its one Ingress replica: 3 live sockets, offline streams of at most 20 s, 1 MiB of
    buffered audio, which is three 10 s blocks of 16-bit PCM; the other tests here stay within
    them: one or two short streams at a time)."""
    args = funasr_args(tiny_models)
    args["realtime"] = {
        "streaming_model": str(tiny_models["paraformer-streaming-tiny"]),
        "threads": 1,
        "idle_timeout_s": 4,
        "max_backlog_s": 8,
        "max_sessions": 12,
        "max_sockets": 3,
        "max_offline_audio_s": 20,
        "max_buffered_mb": 1,
    }
    app = app_config(
        "local-funasr.yaml",
        "rt",
        args=args,
        deployments={"Streaming": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0.25}}},
    )
    url = serve_cluster.deploy(app)
    try:
        yield url
    finally:
        serve_cluster.remove("rt")


# --- FunASR's protocol on the default (Whisper) deployment ------------------------------------


@pytest.mark.parametrize("end", ["is_end", "classic"])
def test_funasr_2pass_on_the_default_deployment(local_app: str, beckett_pcm: bytes, end: str) -> None:
    replies = asyncio.run(
        # At half real time (60 ms frames every 120 ms): Whisper's partials re-decode the open
        # utterance at most once a second, and a partial that comes back after its utterance
        # ended is dropped (the final says it); Beckett's utterances last a second or two, which
        # at real time left no partial in time on a loaded CI machine.
        funasr_stream(ws_url(local_app), beckett_pcm, "2pass", end=end, pace_s=0.12, wav_name="beckett")
    )
    modes = [r.get("mode") for r in replies]
    assert "2pass-online" in modes, replies  # partials re-decoded while speaking
    finals = [r for r in replies if r.get("mode") == "2pass-offline"]
    assert finals and all(r["wav_name"] == "beckett" for r in finals), replies
    text = " ".join(r["text"] for r in finals)
    assert len(words(text) & BECKETT_WORDS) >= 6, text
    last_final = finals[-1]
    assert last_final["is_final"] is True, finals
    stamps = json.loads(last_final["timestamp"]) if last_final["text"] else []
    assert all(a <= b for a, b in stamps)
    if end == "is_end":  # the newest client fails without this acknowledgement
        assert replies[-1]["is_end"] is True and replies[-1]["is_final"] is True, replies[-1]
    else:  # the classic client closes 2 s after its end: the last final came within that
        assert not any(r.get("is_end") for r in replies)


def test_funasr_offline_mode(local_app: str, beckett_pcm: bytes) -> None:
    replies = asyncio.run(funasr_stream(ws_url(local_app, "/v1/realtime/funasr"), beckett_pcm, "offline"))
    offline = [r for r in replies if r.get("mode") == "offline" and not r.get("is_end")]
    assert len(offline) == 1 and offline[0]["is_final"] is True, replies
    assert replies[-1]["is_end"] is True
    assert {"fail", "better"} <= words(offline[0]["text"]), offline
    assert offline[0]["stamp_sents"] and offline[0]["stamp_sents"][0]["start"] >= 0


# --- FunASR's protocol on the streaming Paraformer ---------------------------------------------


@pytest.mark.parametrize("mode", ["online", "2pass"])
def test_funasr_streaming_model_partials_and_finals(realtime_app: str, say: Any, mode: str) -> None:
    audio = np.concatenate(
        [np.zeros(8000, np.float32), say("Please call me back tomorrow."), np.zeros(24000, np.float32)]
    )
    replies = asyncio.run(funasr_stream(ws_url(realtime_app), pcm16(audio), mode, pace_s=0.005))
    online = [r for r in replies if r.get("mode") == ("2pass-online" if mode == "2pass" else "online")]
    # Random weights: the words are noise, but the streaming model decodes tokens as chunks
    # arrive (how many partials depends on how the steps group chunks on a loaded machine).
    assert sum(bool(r["text"]) for r in online) >= 1, replies
    assert replies[-1]["is_end"] is True and replies[-1]["is_final"] is True
    if mode == "2pass":
        offline = [r for r in replies if r.get("mode") == "2pass-offline"]
        assert offline and any(r["text"] for r in offline), replies


def test_funasr_8khz_client_is_resampled(realtime_app: str, say: Any) -> None:
    audio = resample(np.asarray(say("Resampled speech works too.")), 16000, 8000)
    replies = asyncio.run(
        funasr_stream(ws_url(realtime_app), pcm16(audio), "2pass", rate=8000, frame_bytes=960, pace_s=0.002)
    )
    assert any(r.get("mode") == "2pass-offline" and r["text"] for r in replies), replies


# --- OpenAI Realtime transcription -------------------------------------------------------------


def test_openai_sdk_realtime_transcription(local_app: str, beckett_wav: Path) -> None:
    samples, _ = read_wav(beckett_wav.read_bytes())
    audio24 = pcm16(np.concatenate([resample(samples, 16000, 24000), np.zeros(24000, np.float32)]))

    async def run() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=f"{local_app}/v1", api_key="unused")
        events: list[Any] = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(
                session={
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "whisper-1", "language": "en"},
                        }
                    },
                }
            )
            for i in range(0, len(audio24), 4800):  # 100 ms
                await conn.input_audio_buffer.append(audio=base64.b64encode(audio24[i : i + 4800]).decode())
            # Beckett pauses between phrases: server VAD makes an item of each. Read until every
            # stopped turn has its transcription.
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                try:
                    events.append(await asyncio.wait_for(conn.recv(), 1.0))
                except TimeoutError:
                    kinds = [e.type for e in events]
                    stopped = kinds.count("input_audio_buffer.speech_stopped")
                    done = kinds.count("conversation.item.input_audio_transcription.completed")
                    if stopped and done == stopped:
                        break
        return events

    events = asyncio.run(run())
    types = [e.type for e in events]
    assert types[0] == "session.created" and "session.updated" in types, types
    for needed in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ):
        assert needed in types, types
    completed = [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]
    assert len(completed) == types.count("input_audio_buffer.speech_stopped") >= 1, types
    text = " ".join(e.transcript for e in completed)
    assert len(words(text) & BECKETT_WORDS) >= 6 and "better" in words(text), text


def test_openai_beta_form_and_manual_commit(realtime_app: str, say: Any) -> None:
    audio = pcm16(resample(np.asarray(say("Manual commit works.")), 16000, 24000))

    async def run() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        async with websockets.connect(
            ws_url(realtime_app, "/v1/realtime?intent=transcription"),
            additional_headers={"OpenAI-Beta": "realtime=v1"},
        ) as ws:
            got.append(json.loads(await ws.recv()))
            await ws.send(
                json.dumps(
                    {
                        "type": "transcription_session.update",
                        "session": {"input_audio_format": "pcm16", "turn_detection": None},
                    }
                )
            )
            await ws.send(
                json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})
            )
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "%%%notbase64"}))
            while not any(e["type"].endswith(".completed") for e in got):
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        return got

    got = asyncio.run(run())
    types = [e["type"] for e in got]
    assert types[0] == "transcription_session.created" and "transcription_session.updated" in types, types
    assert "input_audio_buffer.speech_started" not in types  # turn_detection: null
    assert "input_audio_buffer.committed" in types and "error" in types, types
    error = next(e for e in got if e["type"] == "error")["error"]
    assert error["param"] == "audio" and "base64" in error["message"]
    completed = next(e for e in got if e["type"].endswith(".completed"))
    assert completed["transcript"] and completed["usage"]["type"] == "duration"


def test_openai_unsupported_format_is_an_error_event(local_app: str) -> None:
    async def run() -> dict[str, Any]:
        async with websockets.connect(ws_url(local_app, "/v1/realtime?intent=transcription")) as ws:
            await ws.recv()
            await ws.send(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "transcription",
                            "audio": {"input": {"format": {"type": "audio/pcmu"}}},
                        },
                    }
                )
            )
            return dict(json.loads(await ws.recv()))

    event = asyncio.run(run())
    assert event["type"] == "error" and "audio/pcmu" in event["error"]["message"], event


# --- faults -----------------------------------------------------------------------------------


async def _close_of(url: str, *messages: str | bytes, wait_s: float = 30) -> tuple[int | None, str]:
    async with websockets.connect(url, subprotocols=["binary"]) as ws:  # type: ignore[list-item]
        for m in messages:
            await ws.send(m)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), wait_s)
        except websockets.ConnectionClosed as e:
            return (e.rcvd.code if e.rcvd else None), (e.rcvd.reason if e.rcvd else "")


async def _refusal_of_a_burst(url: str, seconds: int, gap_s: float) -> tuple[int | None, str]:
    """A 2pass socket sending ``seconds`` of one-second frames ``gap_s`` apart, stopping at the
    server's close: its code and reason (``None`` if the server never closed)."""
    async with websockets.connect(url, subprotocols=["binary"]) as ws:  # type: ignore[list-item]
        try:
            await ws.send(CONFIG)
            for _ in range(seconds):
                await ws.send(b"\x10\x00" * 16000)
                await asyncio.sleep(gap_s)
            while True:
                await asyncio.wait_for(ws.recv(), 30)
        except websockets.ConnectionClosed as e:
            return (e.rcvd.code if e.rcvd else None), (e.rcvd.reason if e.rcvd else "")


def replica_stats(app: str) -> dict[str, dict[str, Any]]:
    """``stats()`` of every running Streaming replica, each addressed by its id (Serve has no
    broadcast; ``SessionRouter`` routes ``session_id="replica:<id>"`` to that replica)."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    ids = [n.rsplit("#", 1)[-1] for n in names if f"{app}#Streaming#" in n]
    handle = serve.get_deployment_handle("Streaming", app_name=app)
    seen: dict[str, dict[str, Any]] = {}
    for rid in ids:
        try:
            stats = handle.options(session_id=f"replica:{rid}").stats.remote().result(timeout_s=10)
        except Exception:  # a replica that is going away
            continue
        assert stats["replica"] == rid, (stats["replica"], rid)
        seen[rid] = stats
    return seen


def streaming_sessions(app: str) -> int:
    return sum(int(s["sessions"]) for s in replica_stats(app).values())


CONFIG = json.dumps({"mode": "2pass", "wav_name": "x", "is_speaking": True, "audio_fs": 16000})


@pytest.mark.parametrize(
    ("case", "messages", "code", "reason"),
    [
        ("garbage text", ["not json {"], 1007, "JSON"),
        ("audio before the configuration", [b"\x00\x01" * 960], 1003, "configuration"),
        ("a sample rate no one uses", [json.dumps({"mode": "2pass", "audio_fs": 12345})], 1007, "12345"),
        ("text where audio is expected", [CONFIG, json.dumps({"hello": "world"})], 1007, "unexpected keys"),
        (
            "a container outside offline mode",
            [json.dumps({"mode": "online", "wav_format": "mp3"})],
            1003,
            "offline",
        ),
    ],
)
def test_faults_close_with_a_code_and_reason(
    realtime_app: str, case: str, messages: list[Any], code: int, reason: str
) -> None:
    got_code, got_reason = asyncio.run(_close_of(ws_url(realtime_app), *messages))
    assert got_code == code and reason in got_reason, (case, got_code, got_reason)


def test_faster_than_real_time_and_idle_sockets_are_refused(realtime_app: str) -> None:
    # 40 s of audio in 0.4 s (the backlog limit is 8 s), sent until the server's close arrives (a
    # client that kept writing after it would see the connection drop instead of the reason).
    # Sent at 100x real time: at 20x, the tiny model on an idle box kept up until the 2pass
    # final buffer reached the replica's 1 MB budget (1013) before the backlog passed 8 s.
    code, reason = asyncio.run(_refusal_of_a_burst(ws_url(realtime_app), seconds=40, gap_s=0.01))
    assert code == 1008 and "faster than it is processed" in reason, (code, reason)
    t = time.monotonic()
    code, reason = asyncio.run(_close_of(ws_url(realtime_app), CONFIG, b"\x00\x00" * 3200))
    assert code == 1008 and "nothing received" in reason and time.monotonic() - t < 15, (code, reason)


def test_a_client_that_vanishes_mid_utterance_leaves_nothing_behind(realtime_app: str, say: Any) -> None:
    async def vanish() -> None:
        ws = await websockets.connect(ws_url(realtime_app), subprotocols=["binary"])  # type: ignore[list-item]
        await ws.send(CONFIG)
        audio = pcm16(say("This utterance is never finished."))
        for i in range(0, len(audio) // 2, 1920):
            await ws.send(audio[i : i + 1920])
        await ws.close()

    for _ in range(3):
        asyncio.run(vanish())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and streaming_sessions("rt") > 0:
        time.sleep(0.5)
    assert streaming_sessions("rt") == 0


# --- what a socket may hold (realtime_app's max_sockets / max_offline_audio_s / max_buffered_mb) -


OFFLINE_CONFIG = json.dumps({"mode": "offline", "wav_name": "cap", "audio_fs": 16000, "is_speaking": True})
SILENCE_1S = b"\x00\x00" * 16000


async def _offline(url: str, seconds: int) -> Any:
    """An offline-mode FunASR socket that has sent ``seconds`` of audio as fast as it can (as
    FunASR's client sends offline frames), in one-second frames."""
    ws = await websockets.connect(url, subprotocols=["binary"], ping_interval=None)  # type: ignore[list-item]
    await ws.send(OFFLINE_CONFIG)
    for _ in range(seconds):
        await ws.send(SILENCE_1S)
    return ws


async def _closed_within(ws: Any, wait_s: float) -> tuple[int | None, str]:
    """How the server closed ``ws`` within ``wait_s`` (``(None, "open")``: it did not)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), wait_s)
    except websockets.ConnectionClosed as e:
        return (e.rcvd.code if e.rcvd else None), (e.rcvd.reason if e.rcvd else "")
    except TimeoutError:
        return None, "open"


def _settle() -> None:
    # A socket's slot and bytes come back when its replica hears of the end, a few ms after the
    # client's close handshake: the next test starts from an empty replica.
    time.sleep(0.5)


def test_sockets_beyond_the_cap_are_closed_1013_offline_ones_counted(realtime_app: str) -> None:
    url = ws_url(realtime_app)

    async def run() -> tuple[list[tuple[int | None, str]], tuple[int | None, str], tuple[int | None, str]]:
        held = [await _offline(url, 1) for _ in range(3)]  # offline: they never reach a Streaming replica
        refused = []
        for path, offer in (("/", ["binary"]), ("/v1/realtime", None)):  # both protocols count
            extra = await websockets.connect(ws_url(realtime_app, path), subprotocols=offer)  # type: ignore[arg-type]
            refused.append(await _closed_within(extra, 10))
        alive = [await _closed_within(ws, 0.2) for ws in held]
        await held.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the freed slot is taken again
            again = await _offline(url, 1)
            taken = await _closed_within(again, 1.0)
            if taken[0] != 1013 or time.monotonic() > deadline:
                break
        for ws in [*held, again]:
            await ws.close()
        return refused, alive[0], taken

    refused, alive, taken = asyncio.run(run())
    for code, reason in refused:
        assert code == 1013 and "3 live realtime sockets" in reason, refused
    assert alive == (None, "open"), alive
    assert taken == (None, "open"), f"a freed slot should be taken again; got {taken}"
    _settle()


def test_an_offline_socket_past_its_cap_is_closed_1009(realtime_app: str) -> None:
    async def run() -> tuple[int | None, str]:
        ws = await _offline(ws_url(realtime_app, "/v1/realtime/funasr"), 21)
        return await _closed_within(ws, 10)

    code, reason = asyncio.run(run())
    assert code == 1009 and "may last 20 s" in reason, (code, reason)
    _settle()


def test_the_replicas_buffered_budget_closes_the_socket_that_would_pass_it_1013(realtime_app: str) -> None:
    url = ws_url(realtime_app)

    async def run() -> tuple[tuple[int | None, str], tuple[int | None, str]]:
        first = await _offline(url, 15)  # two 10 s blocks of the three that fit
        await asyncio.sleep(0.2)
        second = await _offline(url, 15)  # its second block would pass the budget
        refused = await _closed_within(second, 10)
        alive = await _closed_within(first, 0.2)
        await first.close()
        return refused, alive

    refused, alive = asyncio.run(run())
    assert refused[0] == 1013 and "MB of realtime audio" in refused[1], refused
    assert alive == (None, "open"), f"the socket within the budget goes on; got {alive}"
    _settle()


def test_malformed_openai_events_are_errors_and_the_session_goes_on(
    local_app: str, beckett_wav: Path
) -> None:
    samples, _ = read_wav(beckett_wav.read_bytes())
    audio24 = pcm16(resample(samples, 16000, 24000))
    malformed: list[tuple[Any, str | None]] = [
        ({"type": "session.update", "session": "transcription"}, "session"),
        (
            {"type": "session.update", "session": {"audio": {"input": {"format": 24000}}}},
            "session.audio.input.format",
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": "fast"}}}},
            },
            "session.audio.input.format.rate",
        ),
        ({"type": "input_audio_buffer.append", "audio": 1234}, "audio"),
        ({"type": "input_audio_buffer.append", "audio": "%%%notbase64"}, "audio"),
        (["input_audio_buffer.append"], None),  # not an object: no field to name
    ]

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        errors: list[dict[str, Any]] = []
        got: list[dict[str, Any]] = []
        async with websockets.connect(ws_url(local_app, "/v1/realtime?intent=transcription")) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            for event, _ in malformed:
                await ws.send(json.dumps(event))
                errors.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            await ws.send(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {
                            "type": "transcription",
                            "audio": {
                                "input": {
                                    "format": {"type": "audio/pcm", "rate": 24000},
                                    "transcription": {"model": "whisper-1", "language": "en"},
                                    "turn_detection": None,
                                }
                            },
                        },
                    }
                )
            )
            for i in range(0, len(audio24), 4800):
                chunk = base64.b64encode(audio24[i : i + 4800]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            while not any(e["type"].endswith(".completed") for e in got):
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
        return errors, got

    errors, got = asyncio.run(run())
    for (event, param), error in zip(malformed, errors, strict=True):
        assert error["type"] == "error" and error["error"]["param"] == param, (event, error)
        assert "Traceback" not in json.dumps(error)
    assert errors[-1]["error"]["code"] == "invalid_event" and "JSON object" in errors[-1]["error"]["message"]
    types = [e["type"] for e in got]
    assert types[0] == "session.updated" and "input_audio_buffer.committed" in types, types
    completed = next(e for e in got if e["type"].endswith(".completed"))
    assert len(words(completed["transcript"]) & BECKETT_WORDS) >= 6, completed


# --- sessions pinned to a replica, chunks batched across sessions -------------------------------


async def _session(handle: Any, sid: str, audio: np.ndarray, chunk: int = 3200) -> list[tuple[str, int]]:
    """One session straight on the Streaming deployment: (replica, sessions in the step) of
    every answer."""
    h = handle.options(session_id=sid)
    opened = await h.open.remote(sid)
    attach = asyncio.ensure_future(h.attach.remote(sid))
    answers = [(opened["replica"], 0)]
    try:
        for i in range(0, len(audio), chunk):
            result = await h.feed.remote(sid, audio[i : i + chunk], i + chunk >= len(audio))
            answers.append((result.replica, result.step_sessions))
    finally:
        await h.close.remote(sid)
        await attach
    return answers


def test_eight_sessions_over_two_replicas_stay_pinned_and_share_steps(realtime_app: str, say: Any) -> None:
    audio = np.asarray(say("Each session keeps its own replica."))
    handle = serve.get_deployment_handle("Streaming", app_name="rt")

    async def run() -> list[list[tuple[str, int]]]:
        return await asyncio.gather(*(_session(handle, f"pin-{i}", audio) for i in range(8)))

    sessions = asyncio.run(run())
    for answers in sessions:
        assert len({r for r, _ in answers}) == 1, f"a session's calls reached {set(answers)}"
    assert len({answers[0][0] for answers in sessions}) == 2, "both replicas should get sessions"
    shared = [n for answers in sessions for _, n in answers if n]
    print(f"sessions per streaming step: mean {sum(shared) / len(shared):.2f}, max {max(shared)}")
    assert max(shared) > 1, "chunks of concurrent sessions should share forward passes"


def test_control_default_routing_scatters_a_session(
    serve_cluster: ServeCluster, tiny_models: dict[str, Path], say: Any
) -> None:
    """The same sessions through Serve's default router: calls of one session land on both
    replicas, which answer SessionLost. The pinning test above can fail."""
    args = funasr_args(tiny_models)
    args["realtime"] = {"streaming_model": str(tiny_models["paraformer-streaming-tiny"]), "threads": 1}
    default_router = {
        "request_router_class": "ray.serve._private.request_router:PowerOfTwoChoicesRequestRouter"
    }
    app = app_config(
        "local-funasr.yaml",
        "rtctl",
        args=args,
        deployments={
            "Streaming": {
                "num_replicas": 2,
                "request_router_config": default_router,
                "ray_actor_options": {"num_cpus": 0.25},
            }
        },
    )
    serve_cluster.deploy(app)
    try:
        handle = serve.get_deployment_handle("Streaming", app_name="rtctl")
        audio = np.asarray(say("Scattered."))

        async def one(i: int) -> bool:
            try:
                answers = await _session(handle, f"ctl-{i}", audio)
                return len({r for r, _ in answers}) > 1
            except Exception as e:  # noqa: BLE001 - the Ray-wrapped SessionLost
                assert isinstance(e, SessionLost) or "SessionLost" in repr(e) or "no state" in str(e), repr(e)
                return True

        async def run() -> list[bool]:
            return await asyncio.gather(*(one(i) for i in range(8)))

        lost = asyncio.run(run())
        assert any(lost), "default routing kept every session on one replica by chance"
    finally:
        serve_cluster.remove("rtctl")


def test_a_replica_that_dies_closes_its_sessions_promptly_and_clients_can_reconnect(
    realtime_app: str, say: Any
) -> None:
    audio = pcm16(say("The replica under this session dies."))

    async def run() -> tuple[int | None, float]:
        async with websockets.connect(ws_url(realtime_app), subprotocols=["binary"]) as ws:  # type: ignore[list-item]
            await ws.send(CONFIG)
            await ws.send(audio[:16000])
            await asyncio.sleep(1.0)
            pids = {
                s["pid"]
                for s in await asyncio.to_thread(lambda: list(replica_stats("rt").values()))
                if s["sessions"]
            }
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            t = time.monotonic()
            try:
                while True:
                    await ws.send(audio[16000:19200])
                    await asyncio.wait_for(ws.recv(), 20)
            except websockets.ConnectionClosed as e:
                return (e.rcvd.code if e.rcvd else None), time.monotonic() - t

    code, took = asyncio.run(run())
    assert code == 1011 and took < 15, (code, took)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            replies = asyncio.run(
                funasr_stream(ws_url(realtime_app), audio, "2pass", pace_s=0.002, timeout_s=30)
            )
            if replies and replies[-1].get("is_final"):
                break
        except Exception:
            time.sleep(0.5)
    else:
        raise AssertionError("no new session after the replica died")


def test_scaling_up_and_down_during_live_sessions_breaks_none(
    serve_cluster: ServeCluster, tiny_models: dict[str, Path], say: Any
) -> None:
    """Sessions stream at real time while the Streaming deployment goes 1 → 2 → 1 replicas:
    new sessions go to the new replica, no live session moves or fails, and the replica chosen
    for the scale-down drains its sessions before it stops."""
    args = funasr_args(tiny_models)
    args["realtime"] = {"streaming_model": str(tiny_models["paraformer-streaming-tiny"]), "threads": 1}
    app = app_config(
        "local-funasr.yaml",
        "rtscale",
        args=args,
        deployments={"Streaming": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25}}},
    )
    serve_cluster.deploy(app)
    audio = np.tile(np.asarray(say("Streaming while the replicas change.")), 20)
    handle = serve.get_deployment_handle("Streaming", app_name="rtscale")

    def streaming_replicas() -> dict[str, int]:
        status = serve.status().applications["rtscale"].deployments["Streaming"]
        return {str(k): v for k, v in status.replica_states.items()}

    def scale(n: int) -> None:
        next(d for d in serve_cluster.apps["rtscale"]["deployments"] if d["name"] == "Streaming")[
            "num_replicas"
        ] = n
        serve_cluster.apply()

    async def live(sid: str, stop: asyncio.Event) -> list[str]:
        h = handle.options(session_id=sid)
        replicas = [(await h.open.remote(sid))["replica"]]
        attach = asyncio.ensure_future(h.attach.remote(sid))
        i = 0
        while not stop.is_set():
            part = audio[i % len(audio) : i % len(audio) + 3200]
            replicas.append((await h.feed.remote(sid, part, False)).replica)
            i += 3200
            await asyncio.sleep(0.2)
        replicas.append((await h.feed.remote(sid, np.zeros(0, np.float32), True)).replica)
        await h.close.remote(sid)
        await attach
        return replicas

    async def run() -> tuple[list[list[str]], dict[str, int]]:
        stop = asyncio.Event()
        first = [asyncio.ensure_future(live(f"a{i}", stop)) for i in range(4)]
        await asyncio.sleep(1)
        scale(2)
        for _ in range(360):  # up to 3 min for the new replica to load its models
            if streaming_replicas().get("RUNNING") == 2:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # the router hears of the new replica
        second = [asyncio.ensure_future(live(f"b{i}", stop)) for i in range(4)]
        await asyncio.sleep(2)
        scale(1)
        for _ in range(300):
            if "STOPPING" in streaming_replicas():
                break
            await asyncio.sleep(0.2)
        during = streaming_replicas()
        await asyncio.sleep(3)  # sessions go on streaming while one replica drains
        stop.set()
        return list(await asyncio.gather(*first, *second)), during

    try:
        sessions, during = asyncio.run(run())
        assert "STOPPING" in during, f"no replica was draining during the sessions: {during}"
        for r in sessions:
            assert len(set(r)) == 1, f"a live session moved: {set(r)}"
        assert {r[0] for r in sessions[:4]} != {r[0] for r in sessions[4:]}, (
            "new sessions went to the new replica"
        )
        deadline = time.monotonic() + 60
        while streaming_replicas() != {"RUNNING": 1} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert streaming_replicas() == {"RUNNING": 1}
    finally:
        serve_cluster.remove("rtscale")
