"""The console on a server with API keys, in a browser: the page loads without a key, the
first 401 opens the key dialog, a refused key asks again, and the accepted one is sent as a
Bearer token from then on, kept in sessionStorage only. No Ray: the console's router and the
real key middleware around stub API routes, served by uvicorn in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from selenium.webdriver.common.by import By

from serve_app.api import console
from serve_app.api.auth import ApiKeyMiddleware
from serve_app.api.errors import install_error_handlers
from serve_app.keys import KeyRing, new_key
from tests.browser.conftest import ChromeFactory
from tests.browser.support import console_errors, wait_for
from tools.local_serve import free_port

KEY, ENTRY = new_key("console-test")


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    import uvicorn

    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(ApiKeyMiddleware, keys=KeyRing((ENTRY,)))
    app.include_router(console.router)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}

    @app.get("/v1/status")
    async def status(request: Request) -> dict[str, Any]:
        return {"object": "status", "who": request.state.owner}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def submit_key(browser: Any, key: str) -> None:
    field = browser.find_element(By.ID, "key-input")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-dialog button[value=ok]").click()


def test_the_console_asks_for_a_key_and_sends_it(chrome: ChromeFactory, keyed_server: str) -> None:
    browser = chrome()
    browser.get(f"{keyed_server}/")  # the redirect and the page are open without a key
    dialog = browser.find_element(By.ID, "key-dialog")
    wait_for(lambda: dialog.get_attribute("open") is not None, 15, "the key dialog opens on the 401")

    submit_key(browser, "not-the-key")
    note = dialog.find_element(By.CSS_SELECTOR, "[data-role=note]")
    wait_for(
        lambda: (
            dialog.get_attribute("open") is not None and note.get_attribute("data-i18n") == "key.rejected"
        ),
        15,
        lambda: note.text,
    )

    submit_key(browser, KEY)
    wait_for(
        lambda: (
            [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#opt-model option")] == ["stub-model"]
        ),
        15,
        "models listed with the key",
    )
    assert dialog.get_attribute("open") is None
    stored = browser.execute_script(
        "return [sessionStorage.getItem('funasr-serve.api-key'), JSON.stringify(localStorage)]"
    )
    assert stored[0] == KEY and KEY not in stored[1], stored

    browser.find_element(By.CSS_SELECTOR, "header nav a[href='#status']").click()
    wait_for(
        lambda: "console-test" in browser.find_element(By.ID, "s-body").text,
        15,
        "status with the key's label",
    )
    assert not console_errors(browser), console_errors(browser)
