"""Response formats and the one place errors are shaped."""

from __future__ import annotations

import json
import pickle

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


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (errors.InvalidRequest, 400),
        (errors.UnsupportedAudio, 415),
        (errors.PayloadTooLarge, 413),
        (errors.ModelNotFound, 404),
        (errors.Overloaded, 429),
        (errors.NotReady, 503),
        (errors.InternalError, 500),
    ],
)
def test_error_shape(cls: type[errors.ServeError], status: int) -> None:
    err = pickle.loads(pickle.dumps(cls("boom happened")))  # crosses actor boundaries
    resp = error_response(err, "req-1")
    assert resp.status_code == status
    assert json.loads(bytes(resp.body)) == {
        "error": {"type": cls.type, "message": "boom happened", "request_id": "req-1"}
    }
    assert ("retry-after" in resp.headers) == (status == 429)


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
