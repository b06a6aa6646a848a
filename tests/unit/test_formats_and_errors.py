"""Response formats and the one place errors are shaped."""

from __future__ import annotations

import importlib
import json
import pickle
import pkgutil

import pytest

from serve_app import errors
from serve_app.api.errors import error_response
from serve_app.contracts import Transcript, TranscriptSegment, Word
from serve_app.formats import parse_format, render
from serve_app.pipeline import as_serve_error

T = Transcript(
    language="en",
    duration_s=65.5,
    segments=[
        TranscriptSegment(0.25, 2.5, " Hello there.", [Word(0.25, 0.9, "Hello"), Word(1.0, 2.4, "there.")]),
        TranscriptSegment(3.0, 3.5, "  "),
        TranscriptSegment(61.0, 65.125, "General Kenobi."),
    ],
)


def test_json_and_text() -> None:
    assert render(T, "json", False) == {"text": "Hello there. General Kenobi."}
    assert render(T, "text", False) == "Hello there. General Kenobi.\n"


def test_srt_and_vtt_skip_empty_segments_and_format_times() -> None:
    assert render(T, "srt", False) == (
        "1\n00:00:00,250 --> 00:00:02,500\nHello there.\n\n2\n00:01:01,000 --> 00:01:05,125\nGeneral Kenobi.\n"
    )
    vtt = render(T, "vtt", False)
    assert isinstance(vtt, str) and vtt.startswith("WEBVTT\n\n00:00:00.250 --> 00:00:02.500\nHello there.\n")


def test_verbose_json_words_only_when_asked() -> None:
    body = render(T, "verbose_json", True)
    assert isinstance(body, dict)
    assert body["duration"] == 65.5 and len(body["segments"]) == 3
    assert body["words"][1] == {"word": "there.", "start": 1.0, "end": 2.4}
    assert "words" not in render(T, "verbose_json", False)  # type: ignore[operator]


def test_zh_text_joins_without_spaces() -> None:
    t = Transcript("zh", 2.0, [TranscriptSegment(0, 1, "你好"), TranscriptSegment(1, 2, "世界")])
    assert t.text == "你好世界"


def test_bad_format_is_400() -> None:
    with pytest.raises(errors.InvalidRequest) as e:
        parse_format("xml")
    assert e.value.status_code == 400


# The answer every error class gives: (HTTP status, ``error.type``, has ``Retry-After``). A new
# ``ServeError`` anywhere under ``serve_app`` fails test_every_error_class_is_listed until it is
# added here, with the answer it is meant to give.
EXPECTED: dict[str, tuple[int, str, bool]] = {
    "ServeError": (500, "server_error", False),
    "InvalidRequest": (400, "invalid_request_error", False),
    "InvalidCursor": (400, "invalid_request_error", False),
    "UploadMissing": (400, "upload_missing", False),
    "Unauthorized": (401, "invalid_api_key", False),
    "Forbidden": (403, "forbidden", False),
    "NotFound": (404, "not_found", False),
    "ModelNotFound": (404, "model_not_found", False),
    "JobNotFound": (404, "not_found", False),
    "FileNotFound": (404, "not_found", False),
    "HistoryNotFound": (404, "not_found", False),
    "FileChanged": (409, "file_changed", False),
    "SessionLost": (410, "session_lost", False),
    "PayloadTooLarge": (413, "payload_too_large", False),
    "PayloadTooLargeForJob": (413, "payload_too_large", False),
    "UnsupportedAudio": (415, "unsupported_audio", False),
    "Overloaded": (429, "overloaded", True),
    "QuotaExceeded": (429, "quota_exceeded", True),
    "TooManyStreams": (429, "overloaded", True),
    "SocketLimitReached": (429, "too_many_sockets", True),
    "OwnerSocketLimitReached": (429, "too_many_sockets_for_owner", True),
    "BufferFull": (429, "buffer_full", True),
    "TooFast": (429, "too_fast", False),
    "ModelUnavailable": (500, "model_unavailable", False),
    "InternalError": (500, "server_error", False),
    "NotReady": (503, "not_ready", False),
}


def error_classes() -> list[type[errors.ServeError]]:
    """Every ``ServeError`` subclass defined under ``serve_app`` (each module imported)."""
    import serve_app

    for info in pkgutil.walk_packages(serve_app.__path__, "serve_app."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)
    found, todo = [], [errors.ServeError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("serve_app."):
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_is_listed() -> None:
    names = {c.__name__ for c in error_classes()}
    assert names == set(EXPECTED), f"unlisted: {names - set(EXPECTED)}; gone: {set(EXPECTED) - names}"


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_error_shape(cls: type[errors.ServeError]) -> None:
    status, type_, retry = EXPECTED[cls.__name__]
    err = pickle.loads(pickle.dumps(cls("boom happened")))  # crosses actor boundaries
    assert type(err) is cls and err.message == "boom happened"
    resp = error_response(err, "req-1")
    assert resp.status_code == status
    assert json.loads(bytes(resp.body)) == {
        "error": {"type": type_, "message": "boom happened", "request_id": "req-1"}
    }
    assert resp.headers["x-request-id"] == "req-1"
    assert ("retry-after" in resp.headers) == retry, dict(resp.headers)


def test_unexpected_errors_hide_internals() -> None:
    err = as_serve_error(RuntimeError("secret stack detail /srv/app.py line 3"))
    assert isinstance(err, errors.InternalError) and "secret" not in err.message


def test_ray_wrapped_errors_unwrap() -> None:
    from ray.exceptions import RayTaskError
    from ray.serve.exceptions import BackPressureError

    wrapped = RayTaskError("decode", "Traceback...", errors.UnsupportedAudio("the file has no audio stream"))
    err = as_serve_error(wrapped.as_instanceof_cause())
    assert type(err) is errors.UnsupportedAudio and err.message == "the file has no audio stream"
    assert isinstance(
        as_serve_error(BackPressureError(num_queued_requests=5, max_queued_requests=5)), errors.Overloaded
    )
