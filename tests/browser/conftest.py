"""Browser tests of the web console: Debian's chromium driven by Selenium (headless, through
/usr/bin/chromedriver; nothing is downloaded) against apps deployed on the session's local
Serve (``serve_cluster``, ``local_app`` in tests/conftest.py).

Without chromium, its driver or selenium they fail with the reason (``make system-test-deps``
and ``make install`` provide them); ``-m "not browser"`` leaves them out on purpose. ``FUNASR_SCREENSHOTS=<dir>`` (``make screenshots``)
makes the tests save the console's pages there as small PNGs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.browser.support import WINDOW

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
CHROMEDRIVER = "/usr/bin/chromedriver"


def _missing() -> str | None:
    if CHROMIUM is None or not os.path.exists(CHROMEDRIVER):
        return "chromium and chromium-driver are not installed (make system-test-deps installs them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make install: it is in the dev extras)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True)
def _browser_installed() -> None:
    """A browser test without a browser fails: a skipped check proves nothing."""
    reason = _missing()
    if reason:
        pytest.fail(reason)


class ChromeFactory(Protocol):
    def __call__(self, *args: str) -> Any: ...


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def chrome(downloads: Path) -> Iterator[ChromeFactory]:
    """Factory: a headless chromium with extra command-line flags; quit after the module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers: list[Any] = []

    def start(*args: str) -> Any:
        opts = webdriver.ChromeOptions()
        opts.binary_location = str(CHROMIUM)
        for arg in (
            "--headless=new",
            "--no-sandbox",  # root in a container
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--disable-extensions",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--lang=en-US",
            *args,
        ):
            opts.add_argument(arg)
        opts.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        driver.set_window_size(*WINDOW)
        drivers.append(driver)
        return driver

    yield start
    for d in drivers:
        d.quit()
