"""Helpers the test layers share (plain functions and constants; fixtures stay in conftest)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx

SENTENCES = [
    "Please call me back tomorrow morning.",
    "The weather is very cold this winter.",
]


def assert_error(resp: httpx.Response, status: int, type_: str) -> dict[str, str]:
    """The response is our shaped error with this status and type, and leaks no traceback."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    err = body["error"]
    assert set(err) == {"type", "message", "request_id"} and err["type"] == type_, body
    assert err["request_id"] and "Traceback" not in resp.text
    return dict(err)


def funasr_args(tiny_models: dict[str, Path], **limits: float) -> dict[str, Any]:
    """``args:`` for the FunASR path with the random-weight test models."""
    return {
        "asr": {
            "engine": "funasr",
            "model": str(tiny_models["paraformer-tiny"]),
            "served_names": ["paraformer-tiny"],
            "language": "zh",
        },
        "postprocess": {"punc_model": str(tiny_models["ct-punc-tiny"]), "itn": True, "itn_language": "zh"},
        "realtime": {"streaming_model": str(tiny_models["paraformer-streaming-tiny"]), "threads": 1},
        "limits": limits or {},
    }


def post_concurrently(url: str, audio: bytes, n: int, timeout_s: float = 300) -> list[httpx.Response]:
    """``n`` transcription requests for ``audio`` sent to ``url`` at once."""

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=timeout_s) as c:
            return await asyncio.gather(
                *(
                    c.post(f"{url}/v1/audio/transcriptions", files={"file": ("s.wav", audio)})
                    for _ in range(n)
                )
            )

    return asyncio.run(burst())


def ws_url(http_url: str, path: str = "/") -> str:
    """The WebSocket URL of ``path`` in the app at ``http_url`` (FunASR's protocol is at ``/``:
    under a test app's route prefix that is ``/<app>/``)."""
    return http_url.replace("http://", "ws://", 1).rstrip("/") + path


async def funasr_stream(
    url: str,
    pcm16: bytes,
    mode: str = "2pass",
    end: str = "is_end",
    pace_s: float = 0.0,
    rate: int = 16000,
    frame_bytes: int = 1920,
    wav_name: str = "demo",
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Stream ``pcm16`` as FunASR's official client does: the configuration, 60 ms binary
    frames (``pace_s`` apart), then the end message of either client generation
    (``end="is_end"``: wait for the acknowledgement; ``end="classic"``: ``{"is_speaking":
    false}`` and read for 2 s more, as that client does before it closes). Returns every reply."""
    import json

    import websockets

    config = {
        "mode": mode,
        "chunk_size": [5, 10, 5],
        "chunk_interval": 10,
        "encoder_chunk_look_back": 4,
        "decoder_chunk_look_back": 0,
        "audio_fs": rate,
        "wav_name": wav_name,
        "wav_format": "pcm",
        "is_speaking": True,
        "hotwords": "",
        "itn": True,
    }
    replies: list[dict[str, Any]] = []
    async with websockets.connect(url, subprotocols=["binary"], ping_interval=None, open_timeout=30) as ws:  # type: ignore[list-item]

        async def read(deadline_s: float, until_end: bool) -> None:
            loop = asyncio.get_running_loop()
            stop = loop.time() + deadline_s
            while loop.time() < stop:
                try:
                    msg = await asyncio.wait_for(ws.recv(), timeout=max(0.01, stop - loop.time()))
                except TimeoutError:
                    return
                replies.append(json.loads(msg))
                if until_end and replies[-1].get("is_end"):
                    return

        reader = asyncio.create_task(read(timeout_s, until_end=False))
        await ws.send(json.dumps(config))
        for i in range(0, len(pcm16), frame_bytes):
            await ws.send(pcm16[i : i + frame_bytes])
            await asyncio.sleep(pace_s)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if end == "classic":
            await ws.send(json.dumps({"is_speaking": False}))
            await read(2.0, until_end=False)
        else:
            await ws.send(json.dumps({"is_speaking": False, "is_end": True}))
            await read(timeout_s, until_end=True)
    return replies


def pcm16(samples: Any) -> bytes:
    import numpy as np

    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
