"""Helpers of the browser tests (plain functions; fixtures stay in conftest)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHOTS = os.environ.get("FUNASR_SCREENSHOTS")
"""Where ``screenshot`` writes (``make screenshots``: docs/screenshots); unset: nowhere."""
WINDOW = (1100, 820)


def wait_for(what: Callable[[], Any], timeout_s: float, describe: Callable[[], str] | str = "") -> Any:
    """Poll ``what`` until it returns something truthy; fail with ``describe`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            value = what()
        except Exception as e:  # noqa: BLE001 - a stale element, a page still loading
            value, last = None, e
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            detail = describe() if callable(describe) else describe
            raise AssertionError(f"timed out after {timeout_s:.0f} s: {detail} (last error: {last!r})")
        time.sleep(0.2)


def console_errors(driver: Any) -> list[str]:
    """Severe browser console messages since the last call: a CSP violation, an uncaught error,
    a module that failed to load. Answers with an error status are not errors of the page
    (``HEAD /v1/uploads/{sha}`` is 404 for content the server lacks)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "Failed to load resource: the server responded" not in e["message"]
    ]


def open_console(driver: Any, app_url: str, panel: str = "transcribe") -> None:
    driver.get(f"{app_url}/ui/#{panel}")
    wait_for(
        lambda: driver.execute_script("return document.body.dataset.ready === 'true'"), 20, "console ready"
    )


def screenshot(driver: Any, name: str, dark: bool = False) -> None:
    """With FUNASR_SCREENSHOTS set: the page as ``<dir>/<name>.png``, a palette PNG (tens of kB)."""
    if not SHOTS:
        return
    out = Path(SHOTS)
    out.mkdir(parents=True, exist_ok=True)
    scheme = [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": scheme})
    driver.execute_script("document.activeElement?.blur(); window.scrollTo(0, 0)")  # no focus ring
    time.sleep(0.3)
    png = driver.get_screenshot_as_png()
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    path = out / f"{name}.png"
    try:
        import io

        from PIL import Image

        img = Image.open(io.BytesIO(png)).convert("RGB")
        img.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    except ImportError:
        path.write_bytes(png)
