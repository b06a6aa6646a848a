"""The transcription form as a typed model: every field bounded, language and model checked
against what is served, one 400 that names the field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.datastructures import FormData

from serve_app.api.protocol import TranscriptionOptions
from serve_app.config import FunasrArgs, LimitsArgs, PipelineArgs, WhisperArgs
from serve_app.contracts import Priority, ServedModel
from serve_app.engines import supported_languages
from serve_app.errors import InvalidRequest, ModelNotFound
from serve_app.model_paths import resolve

WHISPER_EN = ServedModel(names=["whisper-1", "whisper-tiny.en"], language="en", languages=["en"])
LIMITS = LimitsArgs(max_prompt_chars=50)


def parse(**fields: object) -> TranscriptionOptions:
    return TranscriptionOptions.parse(dict(fields), WHISPER_EN, LIMITS)


def test_defaults_and_pipeline_options() -> None:
    opts = parse()
    assert (opts.model, opts.language, opts.response_format, opts.words) == (None, None, "json", False)
    p = parse(language="EN", prompt="Beckett", punctuation="false", itn="1").pipeline_options(Priority.BATCH)
    assert p.asr.language == "en" and p.asr.hotwords == "Beckett" and p.priority is Priority.BATCH
    assert p.post.punctuation is False and p.post.itn is True


def test_unsupported_language_names_what_is_allowed() -> None:
    with pytest.raises(
        InvalidRequest, match=r"language: 'fr' is not a language this model transcribes; allowed: en"
    ):
        parse(language="fr")


def test_overlong_fields_are_400() -> None:
    with pytest.raises(InvalidRequest, match=r"language: String should have at most 16 characters"):
        parse(language="x" * 5000)
    with pytest.raises(InvalidRequest, match=r"prompt: at most 50 characters; got 51"):
        parse(prompt="p" * 51)
    with pytest.raises(InvalidRequest, match=r"model: String should have at most 256 characters"):
        parse(model="m" * 300)


def test_several_problems_in_one_message() -> None:
    with pytest.raises(InvalidRequest) as e:
        parse(language="xx", response_format="xml", punctuation="maybe")
    msg = e.value.message
    assert "language:" in msg and "response_format:" in msg and "punctuation:" in msg, msg


def test_unknown_model_is_404() -> None:
    with pytest.raises(ModelNotFound, match="available: whisper-1, whisper-tiny.en"):
        parse(model="gpt-9")


def test_words_need_verbose_json_and_stream_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="verbose_json"):
        parse(timestamp_granularities=["word"])
    assert parse(timestamp_granularities=["word"], response_format="verbose_json").words
    with pytest.raises(InvalidRequest, match="realtime"):
        parse(stream="true")


def test_from_form_reads_repeated_granularities_and_refuses_files() -> None:
    form = FormData(
        [
            ("timestamp_granularities[]", "word"),
            ("timestamp_granularities[]", "segment"),
            ("response_format", "verbose_json"),
        ]
    )
    assert TranscriptionOptions.from_form(form, WHISPER_EN, LIMITS).timestamp_granularities == [
        "word",
        "segment",
    ]
    from starlette.datastructures import UploadFile

    with pytest.raises(InvalidRequest, match="language must be a text field"):
        TranscriptionOptions.from_form(FormData([("language", UploadFile(file=None))]), WHISPER_EN, LIMITS)  # type: ignore[arg-type]


def test_supported_languages_follow_the_model(tmp_path: Path) -> None:
    assert supported_languages(WhisperArgs(), resolve("embedded:whisper-tiny.en")) == ["en"]
    multi = tmp_path / "whisper-base"
    multi.mkdir()
    (multi / "vocabulary.txt").write_text("t\n" * 51865)
    langs = supported_languages(WhisperArgs(model=str(multi)), multi)
    assert {"en", "zh", "fr"} <= set(langs) and len(langs) > 90
    para = tmp_path / "para"
    para.mkdir()
    (para / "config.yaml").write_text("model: Paraformer\n")
    assert supported_languages(FunasrArgs(model=str(para)), para) == ["zh", "en"]
    (para / "config.yaml").write_text("model: SenseVoiceSmall\n")
    assert "yue" in supported_languages(FunasrArgs(model=str(para)), para)
    assert supported_languages(FunasrArgs(languages=["zh"]), para) == ["zh"]


def test_asr_args_are_a_union_by_engine() -> None:
    assert isinstance(PipelineArgs.model_validate({"asr": {"engine": "funasr"}}).asr, FunasrArgs)
    assert isinstance(PipelineArgs.model_validate({"asr": {}}).asr, WhisperArgs)
    with pytest.raises(ValueError, match="beam_size"):
        PipelineArgs.model_validate({"asr": {"engine": "funasr", "beam_size": 5}})
    with pytest.raises(ValueError, match="not in asr.languages"):
        PipelineArgs.model_validate({"asr": {"engine": "funasr", "language": "ja", "languages": ["zh"]}})
