"""What a realtime socket may hold, without Ray: the Ingress replica's socket registry (caps in
all and per owner, the bytes budget that never leaks), OpenAI client events as typed models
(every malformed field an ``error`` that names it), and both protocols on the real app with
Starlette's test client and a stand-in Streaming handle: sockets beyond the cap closed 1013,
an offline stream past its cap closed 1009, the replica's budget closing the socket that would
pass it with 1013, and everything released when sockets end."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from serve_app.api import ApiContext, create_app
from serve_app.api.protocol import TranscriptionOptions
from serve_app.api.realtime.events import (
    AudioAppend,
    ClientError,
    SessionUpdate,
    TranscriptionSessionUpdate,
    parse_client_event,
)
from serve_app.config import RealtimeArgs
from serve_app.errors import BufferFull, InvalidRequest, OwnerSocketLimitReached, SocketLimitReached
from serve_app.realtime.capacity import SocketRegistry
from tests.unit.stand_ins import api_context

# ------------------------------------------------------------------ the registry


def test_the_total_cap_counts_every_socket_and_a_freed_slot_is_taken_again() -> None:
    reg = SocketRegistry(max_sockets=2, max_buffered_bytes=None)
    a, b = reg.acquire(), reg.acquire("alice")
    with pytest.raises(SocketLimitReached) as e:
        reg.acquire("bob")
    assert e.value.cap == "total" and "2 live realtime sockets" in e.value.message, e.value.message
    assert not isinstance(e.value, OwnerSocketLimitReached)
    a.close()
    a.close()  # idempotent: frees one slot, once
    assert reg.sockets == 1
    c = reg.acquire("bob")
    b.close()
    c.close()
    assert reg.sockets == 0 and reg.owned("alice") == reg.owned("bob") == 0


def test_the_per_owner_cap_says_it_is_the_owners() -> None:
    reg = SocketRegistry(max_sockets=10, max_buffered_bytes=None)
    held = [reg.acquire("alice", per_owner_limit=2) for _ in range(2)]
    with pytest.raises(OwnerSocketLimitReached) as e:
        reg.acquire("alice", per_owner_limit=2)
    assert e.value.cap == "owner" and e.value.type == "too_many_sockets_for_owner", e.value
    assert isinstance(e.value, SocketLimitReached)  # a route that knows only the total cap still closes 1013
    reg.acquire("bob", per_owner_limit=2).close()  # another owner is not counted against alice
    reg.acquire(None, per_owner_limit=2).close()  # no owner (no API keys): only the total cap
    held[0].close()
    reg.acquire("alice", per_owner_limit=2)
    assert reg.owned("alice") == 2 and reg.sockets == 2


def test_the_bytes_budget_refuses_before_taking_and_a_closed_slot_gives_everything_back() -> None:
    reg = SocketRegistry(max_sockets=None, max_buffered_bytes=1000)
    a, b = reg.acquire(), reg.acquire()
    a.reserve(600)
    with pytest.raises(BufferFull, match="try again later"):
        b.reserve(500)
    assert reg.buffered_bytes == 600 and b.held == 0
    b.reserve(400)
    a.release(10_000)  # never more than it holds
    assert reg.buffered_bytes == 400 and a.held == 0
    a.reserve(300)
    with b:
        pass  # leaving the block closes the slot: its 400 bytes come back
    assert reg.buffered_bytes == 300 and reg.sockets == 1
    assert a.peak == 600  # what decides whether its end trims the heap (after_socket)
    a.close()
    assert reg.buffered_bytes == 0 and reg.sockets == 0
    with pytest.raises(BufferFull):
        a.reserve(1)  # a closed slot takes nothing


# ------------------------------------------------------------------ OpenAI client events


@pytest.mark.parametrize(
    ("event", "param"),
    [
        ({"type": "session.update", "session": "transcription"}, "session"),
        (
            {"type": "session.update", "session": {"audio": {"input": {"format": 24000}}}},
            "session.audio.input.format",
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": "x"}}}},
            },
            "session.audio.input.format.rate",
        ),
        ({"type": "session.update", "session": {"audio": []}}, "session.audio"),
        ({"type": "transcription_session.update", "session": 5}, "session"),
        (
            {"type": "transcription_session.update", "session": {"input_audio_transcription": "en"}},
            "session.input_audio_transcription",
        ),
        (
            {"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}},
            "session.audio.input.format",
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 12345}}}},
            },
            "session.audio.input.format.rate",
        ),
        ({"type": "session.update", "session": {"type": "realtime"}}, "session.type"),
        (
            {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "none"}}}}},
            "session.audio.input.turn_detection.type",
        ),
        (
            {"type": "transcription_session.update", "session": {"input_audio_format": "g711_ulaw"}},
            "session.input_audio_format",
        ),
        (
            {"type": "transcription_session.update", "session": {"turn_detection": {}}},
            "session.turn_detection.type",
        ),
        ({"type": "input_audio_buffer.append", "audio": 12}, "audio"),
        ({"type": "input_audio_buffer.append", "audio": ["AAAA"]}, "audio"),
        ({"type": "input_audio_buffer.append", "audio": "%%%notbase64"}, "audio"),
        ({"type": "input_audio_buffer.commit", "event_id": 7}, "event_id"),
        ({"type": "response.create"}, "type"),
        ({"audio": "AAAA"}, "type"),
    ],
)
def test_a_malformed_event_is_an_error_that_names_the_field(event: dict[str, Any], param: str) -> None:
    with pytest.raises(ClientError) as e:
        parse_client_event(event)
    assert e.value.param == param, (e.value.param, e.value.message)
    assert "Session" not in e.value.message and "AudioFormat" not in e.value.message, e.value.message


@pytest.mark.parametrize("event", [[], "session.update", 3, None])
def test_an_event_that_is_not_an_object_is_an_error(event: object) -> None:
    with pytest.raises(ClientError) as e:
        parse_client_event(event)
    assert e.value.code == "invalid_event" and "JSON object" in e.value.message, e.value.message


def test_valid_events_parse_as_today() -> None:
    ga = parse_client_event(
        {
            "type": "session.update",
            "event_id": "e1",
            "session": {
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}},
                "include": ["item.input_audio_transcription.logprobs"],  # unknown keys are ignored
            },
        }
    )
    assert isinstance(ga, SessionUpdate) and ga.session and ga.session.audio and ga.session.audio.input
    audio_in = ga.session.audio.input
    assert audio_in.format and audio_in.format.rate == 24000
    assert (
        "turn_detection" in audio_in.model_fields_set and audio_in.turn_detection is None
    )  # null, not absent
    beta = parse_client_event(
        {"type": "transcription_session.update", "session": {"input_audio_format": "pcm16"}}
    )
    assert isinstance(beta, TranscriptionSessionUpdate) and beta.session
    assert "turn_detection" not in beta.session.model_fields_set
    append = parse_client_event(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x02").decode()}
    )
    assert isinstance(append, AudioAppend) and append.audio == b"\x01\x02"
    assert parse_client_event({"type": "input_audio_buffer.append"}).audio == b""  # type: ignore[union-attr]


# ------------------------------------------------------------------ the routes


class FakeStreaming:
    """A Streaming handle stand-in: sessions open, audio is taken, nothing is recognised."""

    def options(self, **_: Any) -> FakeStreaming:
        return self

    def __getattr__(self, name: str) -> Any:
        return SimpleNamespace(remote=getattr(self, f"_{name}"))

    async def _open(self, sid: str) -> dict[str, Any]:
        return {"replica": "fake", "online_asr": True}

    async def _attach(self, sid: str) -> None:
        await asyncio.Event().wait()

    async def _feed(self, sid: str, samples: Any, final: bool) -> Any:
        return SimpleNamespace(replica="fake", partial="", events=[])

    async def _close(self, sid: str) -> None:
        return None


Factory = Callable[..., tuple[TestClient, ApiContext]]
WS = "ws://localhost"
"""Sockets are dialled by a loopback name (the server answers only the names it serves)."""


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Factory]:
    with ExitStack() as stack:

        def make(**realtime: Any) -> tuple[TestClient, ApiContext]:
            # No stage but Streaming is called: no stream here reaches its end.
            ctx = api_context(
                tmp_path,
                streaming=FakeStreaming(),
                realtime=RealtimeArgs(idle_timeout_s=5, **realtime),  # a hung socket fails fast
                keep_history=False,
            )
            # One portal (event loop) for every socket of the test, as one replica has.
            return stack.enter_context(TestClient(create_app(ctx))), ctx

        yield make


OFFLINE = json.dumps({"mode": "offline", "wav_name": "w", "audio_fs": 16000, "is_speaking": True})
SECOND = b"\x00\x01" * 16000


def closed(ws: WebSocketTestSession) -> tuple[int, str]:
    """The code and reason the server closed ``ws`` with (replies before it are skipped)."""
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return int(message["code"]), str(message.get("reason") or "")


def funasr(client: TestClient, stack: ExitStack) -> WebSocketTestSession:
    ws = stack.enter_context(client.websocket_connect(WS + "/", subprotocols=["binary"]))
    ws.send_text(OFFLINE)
    ws.send_bytes(SECOND)
    return ws


def wait_for(check: Callable[[], bool]) -> None:
    import time

    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_sockets_beyond_the_cap_are_closed_1013_offline_ones_counted(make_app: Factory) -> None:
    client, ctx = make_app(max_sockets=2)
    with ExitStack() as stack:
        funasr(client, stack)
        openai_ws = stack.enter_context(client.websocket_connect(WS + "/v1/realtime"))
        assert openai_ws.receive_json()["type"] == "session.created"
        wait_for(lambda: ctx.sockets.sockets == 2)
        with client.websocket_connect(WS + "/v1/realtime/funasr", subprotocols=["binary"]) as third:
            code, reason = closed(third)
        assert code == 1013 and "2 live realtime sockets" in reason, (code, reason)
        with client.websocket_connect(WS + "/v1/realtime") as fourth:
            error = fourth.receive_json()
            assert error["type"] == "error" and error["error"]["code"] == "too_many_sockets", error
            assert closed(fourth)[0] == 1013
        openai_ws.close()
        wait_for(lambda: ctx.sockets.sockets == 1)
        funasr(client, stack)  # the freed slot is taken again
        wait_for(lambda: ctx.sockets.sockets == 2)
    wait_for(lambda: ctx.sockets.sockets == 0 and ctx.sockets.buffered_bytes == 0)


def test_an_offline_stream_past_its_cap_is_closed_1009_before_it_is_kept(make_app: Factory) -> None:
    client, ctx = make_app(max_offline_audio_s=2.5)
    with client.websocket_connect(WS + "/", subprotocols=["binary"]) as ws:
        ws.send_text(OFFLINE)
        for _ in range(3):
            ws.send_bytes(SECOND)
        code, reason = closed(ws)
    assert code == 1009 and "may last 2.5 s" in reason, (code, reason)
    wait_for(lambda: ctx.sockets.sockets == 0 and ctx.sockets.buffered_bytes == 0)


def test_the_replicas_budget_closes_the_socket_that_would_pass_it_with_1013(make_app: Factory) -> None:
    # 1 MiB: three 10 s blocks of 16-bit audio (320 kB each) fit, a fourth does not.
    client, ctx = make_app(max_buffered_mb=1)
    with ExitStack() as stack:
        first = funasr(client, stack)
        for _ in range(14):  # 15 s: two blocks
            first.send_bytes(SECOND)
        wait_for(lambda: ctx.sockets.buffered_bytes == 640_000)
        second = funasr(client, stack)
        for _ in range(14):  # its second block would pass the budget
            second.send_bytes(SECOND)
        code, reason = closed(second)
        assert code == 1013 and "1 MB of realtime audio" in reason, (code, reason)
        wait_for(lambda: ctx.sockets.buffered_bytes == 640_000)  # the refused socket's block is back
        # A 2pass socket pays for its buffer from the same budget (and the first goes on).
        first.send_bytes(SECOND)
        with client.websocket_connect(WS + "/v1/realtime") as openai_ws:
            openai_ws.receive_json()
            audio = base64.b64encode(b"\x00\x00" * 24000).decode()
            openai_ws.send_json({"type": "input_audio_buffer.append", "audio": audio})
            wait_for(lambda: ctx.sockets.buffered_bytes == 960_000)
            openai_ws.send_json({"type": "input_audio_buffer.append", "audio": audio * 11})
            error = openai_ws.receive_json()
            assert error["type"] == "error" and error["error"]["code"] == "buffer_full", error
            assert closed(openai_ws)[0] == 1013
    wait_for(lambda: ctx.sockets.sockets == 0 and ctx.sockets.buffered_bytes == 0)


def test_malformed_openai_events_leave_the_session_usable(make_app: Factory) -> None:
    client, ctx = make_app()
    bad: list[tuple[Any, str | None]] = [
        ({"type": "session.update", "session": "x"}, "session"),
        (
            {"type": "session.update", "session": {"audio": {"input": {"format": 16000}}}},
            "session.audio.input.format",
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": "fast"}}}},
            },
            "session.audio.input.format.rate",
        ),
        ({"type": "input_audio_buffer.append", "audio": 5}, "audio"),
        ({"type": "input_audio_buffer.append", "audio": "!!"}, "audio"),
        (["not", "an", "object"], None),
    ]
    with client.websocket_connect(WS + "/v1/realtime") as ws:
        assert ws.receive_json()["type"] == "session.created"
        for event, param in bad:
            ws.send_text(json.dumps(event))
            got = ws.receive_json()
            assert got["type"] == "error" and got["error"]["param"] == param, (event, got)
            assert "Traceback" not in got["error"]["message"]
        ws.send_json(
            {
                "type": "session.update",
                "event_id": "ok",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                },
            }
        )
        updated = ws.receive_json()
        assert updated["type"] == "session.updated", updated
        assert updated["session"]["audio"]["input"]["format"]["rate"] == 16000
        ws.send_json({"type": "input_audio_buffer.append", "audio": base64.b64encode(SECOND).decode()})
        ws.send_json({"type": "input_audio_buffer.clear"})
        assert ws.receive_json()["type"] == "input_audio_buffer.cleared"
        wait_for(lambda: ctx.sockets.buffered_bytes == 0)  # cleared audio gives its block back
    wait_for(lambda: ctx.sockets.sockets == 0)


def test_realtime_takes_the_languages_the_http_form_takes(make_app: Factory) -> None:
    client, ctx = make_app()
    form = TranscriptionOptions.parse({"language": "EN"}, ctx.served, ctx.limits)
    assert form.language == "en", form
    with pytest.raises(InvalidRequest) as http_refusal:
        TranscriptionOptions.parse({"language": "fr"}, ctx.served, ctx.limits)
    with client.websocket_connect(WS + "/v1/realtime") as ws:
        assert ws.receive_json()["type"] == "session.created"
        ws.send_json(
            {"type": "session.update", "session": {"audio": {"input": {"transcription": {"language": "EN"}}}}}
        )
        updated = ws.receive_json()
        assert updated["type"] == "session.updated", updated
        assert updated["session"]["audio"]["input"]["transcription"]["language"] == "en", updated
        ws.send_json(
            {
                "type": "transcription_session.update",
                "session": {"input_audio_transcription": {"language": "fr"}},
            }
        )
        error = ws.receive_json()["error"]
        assert error["param"] == "session.input_audio_transcription.language", error
        said = http_refusal.value.message.removeprefix("language: ")
        assert error["message"].endswith(said), (error["message"], said)
        too_long = "x" * (ctx.limits.max_prompt_chars + 1)
        ws.send_json(
            {
                "type": "session.update",
                "session": {"audio": {"input": {"transcription": {"prompt": too_long}}}},
            }
        )
        error = ws.receive_json()["error"]
        assert error["param"] == "session.audio.input.transcription.prompt", error
        ws.send_json({"type": "transcription_session.update", "session": {}})
        beta = ws.receive_json()
        assert beta["type"] == "transcription_session.updated", beta
        assert beta["session"]["input_audio_transcription"]["language"] == "en", (
            beta
        )  # refusals changed nothing


def test_a_refused_funasr_socket_has_a_reason_a_client_can_read(make_app: Factory) -> None:
    client, ctx = make_app(max_sockets=1)
    with client.websocket_connect(WS + "/", subprotocols=["binary"]) as first:
        first.send_text(OFFLINE)
        wait_for(lambda: ctx.sockets.sockets == 1)
        with (
            client.websocket_connect(WS + "/", subprotocols=["binary"]) as ws,
            pytest.raises(WebSocketDisconnect) as e,
        ):
            ws.receive_text()
    assert e.value.code == 1013 and "try again later" in e.value.reason, e.value
