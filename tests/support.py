"""Helpers the test layers share (plain functions and constants; fixtures stay in conftest)."""

from __future__ import annotations

import asyncio
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
