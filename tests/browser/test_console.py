"""The console in a browser against deploy/local.yaml (Whisper tiny.en, real speech): the
redirect from ``/``, a dropped file transcribed with its segments, played from a segment and
exported as SRT, the history, a 5-file batch job followed to its end, the status page, and the
language switch. One browser for the module; with FUNASR_SCREENSHOTS set, each page is saved."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import ChromeFactory
from tests.browser.support import console_errors, open_console, screenshot, wait_for
from tests.support import SENTENCES
from tools.audio import encode_wav


@pytest.fixture(scope="module")
def browser(chrome: ChromeFactory) -> Any:
    return chrome()


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z]+", text.lower()))


def test_root_redirects_to_the_console(browser: Any, local_app: str) -> None:
    browser.get(f"{local_app}/")
    wait_for(lambda: browser.current_url.endswith("/local/ui/"), 20, lambda: browser.current_url)
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready"), 20, "console ready")
    models = wait_for(
        lambda: [
            o.text for o in browser.find_elements(By.CSS_SELECTOR, "#opt-model option") if o.text != "–"
        ],
        20,
        "models listed",
    )
    assert "whisper-1" in models, models
    assert not console_errors(browser), console_errors(browser)


def test_transcribe_a_file_play_a_segment_and_export_srt(
    browser: Any, local_app: str, beckett_wav: Path, downloads: Path
) -> None:
    open_console(browser, local_app, "transcribe")
    browser.find_element(By.ID, "t-files").send_keys(str(beckett_wav))
    card = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#t-results .card"), 10, "a card")
    state = lambda: card.get_attribute("data-state")  # noqa: E731
    wait_for(lambda: state() in ("done", "failed"), 120, lambda: f"state {state()}: {card.text}")
    assert state() == "done", card.text
    text = card.find_element(By.CSS_SELECTOR, ".transcript").text
    assert "fail better" in words(text), text
    segments = card.find_elements(By.CSS_SELECTOR, "button.segment")
    assert len(segments) >= 1 and all(s.find_element(By.CSS_SELECTOR, ".time").text for s in segments)
    screenshot(browser, "transcribe")

    last = max(segments, key=lambda s: float(s.get_attribute("data-start")))
    start = float(last.get_attribute("data-start"))
    last.click()
    position = "return document.querySelector('#t-results .card audio').currentTime"
    at = wait_for(
        lambda: (t := browser.execute_script(position)) is not None and (t > 0 or start == 0) and [t],
        10,
        "the audio moved to the segment",
    )[0]
    assert abs(at - start) < 1.5, (at, start)

    card.find_element(By.CSS_SELECTOR, "button.export[data-format=srt]").click()
    srt = wait_for(
        lambda: (downloads / "beckett.srt").exists() and (downloads / "beckett.srt"), 15, "beckett.srt"
    )
    body = srt.read_text()
    assert body.startswith("1\n00:00:") and " --> " in body and "better" in body.lower(), body
    assert not console_errors(browser), console_errors(browser)


def test_history_lists_the_transcription(browser: Any, local_app: str) -> None:
    open_console(browser, local_app, "history")
    entry = wait_for(
        lambda: next(
            (e for e in browser.find_elements(By.CSS_SELECTOR, "#h-entries .entry") if "beckett" in e.text),
            None,
        ),
        20,
        lambda: browser.find_element(By.ID, "history").text,
    )
    assert "fail better" in words(entry.text), entry.text
    browser.find_element(By.ID, "h-q").send_keys("better")
    browser.find_element(By.CSS_SELECTOR, "#h-search button[type=submit]").click()
    wait_for(lambda: "beckett" in browser.find_element(By.ID, "h-entries").text, 10, "search result")
    screenshot(browser, "history")


def test_batch_of_five_files(browser: Any, local_app: str, say: Any, tmp_path: Path) -> None:
    paths = []
    for i in range(5):
        path = tmp_path / f"call-{i + 1}.wav"
        path.write_bytes(encode_wav(say(SENTENCES[i % len(SENTENCES)])))
        paths.append(str(path))
    open_console(browser, local_app, "batch")
    browser.find_element(By.ID, "b-files").send_keys("\n".join(paths))
    wait_for(lambda: browser.find_element(By.ID, "b-start").is_enabled(), 10, "start enabled")
    assert "5" in browser.find_element(By.ID, "b-selection").text
    browser.find_element(By.ID, "b-start").click()
    job = wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, "#b-job .job"),
        60,
        lambda: browser.find_element(By.ID, "batch").text,
    )
    seen = set()

    def ended() -> bool:
        seen.add(job.get_attribute("data-state"))
        return job.get_attribute("data-state") in ("completed", "failed", "cancelled")

    wait_for(ended, 240, lambda: job.text)
    assert job.get_attribute("data-state") == "completed", job.text
    files = job.find_element(By.CSS_SELECTOR, "dd.files")
    assert files.get_attribute("data-done") == "5" == files.get_attribute("data-total"), files.text
    # Read in one go: the table is re-rendered as progress comes (elements go stale).
    rows_js = "return [...document.querySelectorAll('#b-job tbody tr')].map(r => [r.dataset.state, r.cells[0].textContent])"
    rows = wait_for(
        lambda: len(r := browser.execute_script(rows_js)) == 5 and all(s == "done" for s, _ in r) and r,
        10,
        lambda: job.text,
    )
    assert sorted(name for _, name in rows) == sorted(Path(p).name for p in paths), rows
    assert float(job.find_element(By.TAG_NAME, "progress").get_attribute("value")) == 1.0
    assert seen & {"queued", "running", "completed"}, seen
    screenshot(browser, "batch")
    assert not console_errors(browser), console_errors(browser)


def figure(root: Any, name: str) -> Any:
    """The status page's element showing figure ``name`` under ``root``."""
    return root.find_element(By.CSS_SELECTOR, f"[data-figure={name}]")


def value(node: Any) -> float | None:
    """A figure's raw value (``data-value``; "" when unknown)."""
    raw = node.get_attribute("data-value")
    return None if raw == "" else float(raw)


def test_status_page(browser: Any, local_app: str) -> None:
    open_console(browser, local_app, "status")
    wait_for(
        lambda: browser.find_element(By.ID, "s-body").get_attribute("data-loaded") == "true",
        20,
        lambda: browser.find_element(By.ID, "status").text,
    )
    # The page shows what /v1/status says. The figures move between the page's fetch and this
    # one (windows slide, a minute may roll over): stable ones compare exactly, moving ones
    # within a margin; each shown text is its data-value formatted.
    status = httpx.get(f"{local_app}/v1/status", timeout=30).json()
    load = status["load"]
    body = browser.find_element(By.ID, "s-body")
    rows = {
        r.get_attribute("data-stage"): r for r in body.find_elements(By.CSS_SELECTOR, "#s-stages tbody tr")
    }
    assert list(rows) == [s["stage"] for s in load["stages"]], (list(rows), load["stages"])
    assert {"Ingress", "Decode", "VAD", "ASR", "Postprocess"} <= set(rows), list(rows)
    for s in load["stages"]:
        row = rows[s["stage"]]
        replicas = figure(row, "replicas")
        assert value(replicas) == s["running"], (s, replicas.text)
        for state, n in s["replicas"].items():
            assert f"{state} {n}" in replicas.text, (s, replicas.text)
        busy = figure(row, "busy_share")
        if s["busy_share"] is None:
            assert value(busy) is None and busy.text == "–", (s, busy.text)
        else:
            assert value(busy) == pytest.approx(s["busy_share"], abs=0.1), (s, busy.text)
            assert busy.text == f"{round((value(busy) or 0) * 100)} %", busy.text
        queued = figure(row, "queued_audio_s")
        assert (value(queued) is None) == (s["queued_audio_s"] is None), (s, queued.text)
        if s["queued_audio_s"] is not None:
            assert value(queued) == pytest.approx(s["queued_audio_s"], abs=5), (s, queued.text)
        cpu = figure(row, "cpu_per_audio_s")
        if (shown := value(cpu)) is not None and s["cpu_per_audio_s"] is not None:
            assert 0.5 <= shown / max(1e-9, s["cpu_per_audio_s"]) <= 2, (s, cpu.text)
            assert cpu.text == f"{shown:.3f}", cpu.text
    for stage in ("Decode", "VAD", "ASR", "Postprocess"):  # every offline stage meters its load
        assert value(figure(rows[stage], "busy_share")) is not None, rows[stage].text

    summary = body.find_element(By.ID, "s-summary")
    if status["today"] is not None:
        assert value(figure(summary, "audio_hours")) == pytest.approx(
            status["today"]["audio_hours"], abs=1e-3
        )
    tp = load["throughput"]
    assert tp is not None and tp["total_audio_s"] > 0, tp  # this module transcribed minutes ago
    plot = body.find_element(By.ID, "s-plot")
    bars = [float(b.get_attribute("data-value")) for b in plot.find_elements(By.CSS_SELECTOR, "rect.bar")]
    assert len(bars) == len(tp["audio_s"]) == 15, (bars, tp)
    assert sum(bars) == pytest.approx(value(figure(summary, "throughput_total")), abs=0.01), bars
    if plot.get_attribute("data-start") == tp["start"]:  # the same 15 minutes
        assert bars[:-1] == tp["audio_s"][:-1], (bars, tp)
    else:  # a minute rolled over between the two fetches
        assert bars[1:-1] == tp["audio_s"][:-2], (bars, tp)

    items = body.find_elements(By.CSS_SELECTOR, "#s-findings li")
    kinds = [li.get_attribute("data-kind") for li in items]
    assert kinds == ([f["kind"] for f in load["saturated"]] or ["none"]), (kinds, load["saturated"])
    # Everything else is still there, under "All fields".
    rest = body.find_element(By.CSS_SELECTOR, "details.all-fields")
    terms = [dt.get_attribute("textContent") for dt in rest.find_elements(By.CSS_SELECTOR, "dl.facts > dt")]
    assert terms == [k.replace("_", " ") for k in status if k != "load"], (terms, list(status))
    screenshot(browser, "status", dark=True)
    assert not console_errors(browser), console_errors(browser)


def test_language_switch(browser: Any, local_app: str, beckett_wav: Path) -> None:
    open_console(browser, local_app, "transcribe")
    browser.find_element(By.ID, "t-files").send_keys(str(beckett_wav))
    card = wait_for(lambda: browser.find_element(By.CSS_SELECTOR, "#t-results .card"), 10, "a card")
    wait_for(lambda: card.get_attribute("data-state") == "done", 120, lambda: card.text)
    Select(browser.find_element(By.ID, "ui-lang")).select_by_value("zh")
    nav = browser.find_element(By.CSS_SELECTOR, "header nav a[href='#transcribe']")
    assert nav.text == "转写", nav.text
    assert browser.execute_script("return document.documentElement.lang") == "zh-CN"
    # Messages shown before the switch follow it (the card of the file transcribed above).
    done = browser.find_elements(By.CSS_SELECTOR, "#t-results .card[data-state=done] .status")
    assert done, browser.find_element(By.ID, "t-results").get_attribute("innerHTML")[:2000]
    for status in done:
        assert status.text.startswith("完成"), status.text
    screenshot(browser, "transcribe-zh")
    Select(browser.find_element(By.ID, "ui-lang")).select_by_value("en")
    assert nav.text == "Transcribe"
