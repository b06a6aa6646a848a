"""Live transcription in a browser: Chromium's fake capture device plays a WAV as the
microphone, the console's AudioWorklet sends 16 kHz PCM over FunASR's protocol (2pass) to the
streaming path of deploy/local-funasr.yaml (random-weight streaming Paraformer: the words are
noise, so the test checks that partials come, that a corrected sentence replaces them, and
that Stop ends the stream cleanly)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import ChromeFactory
from tests.browser.support import console_errors, open_console, screenshot, wait_for
from tests.support import funasr_args
from tools.audio import encode_wav
from tools.local_serve import LocalServe, app_config


@pytest.fixture(scope="module")
def live_app(serve_cluster: LocalServe, tiny_models: dict[str, Path]) -> Iterator[str]:
    args = funasr_args(tiny_models)
    args["realtime"] = {"streaming_model": str(tiny_models["paraformer-streaming-tiny"]), "threads": 1}
    url = serve_cluster.deploy(app_config("local-funasr.yaml", "console_rt", args=args))
    try:
        yield url
    finally:
        serve_cluster.remove("console_rt")


@pytest.fixture(scope="module")
def mic_wav(say: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speech with pauses (the streaming VAD ends an utterance in each), looped by Chromium."""
    silence = np.zeros(int(16000 * 1.2), np.float32)
    audio = np.concatenate([silence[:8000], say("Please call me back tomorrow morning."), silence])
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    path.write_bytes(encode_wav(audio))
    return path


@pytest.fixture(scope="module")
def browser(chrome: ChromeFactory, mic_wav: Path) -> Any:
    return chrome(
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav}",
    )


def test_live_partials_then_a_final_sentence(browser: Any, live_app: str) -> None:
    open_console(browser, live_app, "live")
    assert not browser.find_element(By.ID, "l-insecure").is_displayed()  # 127.0.0.1 is secure
    browser.find_element(By.ID, "l-start").click()
    status = browser.find_element(By.ID, "l-status")
    partial = browser.find_element(By.ID, "l-partial")
    wait_for(lambda: partial.text.strip(), 60, lambda: f"no partial; status: {status.text}")
    level = float(browser.find_element(By.ID, "l-level").get_attribute("value"))
    finals = wait_for(
        lambda: [f for f in browser.find_elements(By.CSS_SELECTOR, "#l-transcript .final") if f.text.strip()],
        60,
        lambda: f"no final; status: {status.text}; partial: {partial.text!r}",
    )
    replaced = [f.get_attribute("data-replaced") for f in finals]
    assert any(r and r.strip() for r in replaced), ("no final replaced a partial", replaced)
    # One partial line at a time: a final takes its place, the next utterance starts afresh.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#l-transcript .partial")) == 1
    level = browser.find_element(By.ID, "l-level")
    wait_for(lambda: float(level.get_attribute("value")) > 0, 10, "the level meter moves")
    screenshot(browser, "live")

    browser.find_element(By.ID, "l-stop").click()
    wait_for(
        lambda: browser.find_element(By.ID, "live").get_attribute("data-running") == "false",
        30,
        lambda: status.text,
    )
    assert status.get_attribute("data-kind") != "error", status.text
    assert browser.find_element(By.ID, "l-start").is_enabled()
    assert not console_errors(browser), console_errors(browser)
