"""The console against a daemon with keys: it asks for a key, keeps it in the tab's
session storage (never in a URL), shows a wrong key's error, and management needs
the admin key as the HTTP routes do."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.helpers import MODEL_ID, DaemonProcess, place_model, short_tempdir
from tests.http.console.conftest import click, find, needs_browser, text_of, wait_for

pytestmark = needs_browser

API_KEY = "user-key-123"
ADMIN_KEY = "admin-key-456"
DIALOG_OPEN = "return document.getElementById('key-dialog').open"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    models = short_tempdir() / "models"
    models.mkdir()
    place_model(models)
    env = {"RKLLMD_HTTP__API_KEY": API_KEY, "RKLLMD_HTTP__ADMIN_KEY": ADMIN_KEY}
    process = DaemonProcess(models, args=["--load", "smollm2"], env=env).wait_ready()
    yield process
    process.stop()
    shutil.rmtree(models.parent, ignore_errors=True)


def give_key(browser: WebDriver, key: str) -> None:
    wait_for(browser, lambda: browser.execute_script(DIALOG_OPEN), "the key dialog")
    find(browser, "#key-input").send_keys(key)
    find(browser, "#key-submit").click()


def test_page_asks_for_the_key_and_shows_a_wrong_one(
    browser: WebDriver, daemon: DaemonProcess, artifacts: Path
) -> None:
    browser.get(f"{daemon.http_url}/ui/")
    wait_for(browser, lambda: browser.execute_script(DIALOG_OPEN), "the key dialog")
    assert text_of(browser, "#state-model") == ""  # nothing shown without a key
    give_key(browser, "wrong-key")
    wait_for(browser, lambda: "refused" in text_of(browser, "#key-error"), "the key's error")
    assert "invalid API key" in text_of(browser, "#key-error")
    browser.save_screenshot(str(artifacts / "key-refused.png"))

    find(browser, "#key-input").send_keys(ADMIN_KEY)
    find(browser, "#key-submit").click()
    wait_for(browser, lambda: text_of(browser, "#state-model") == MODEL_ID, "the state")
    wait_for(browser, lambda: text_of(browser, "#key-badge") == "admin key", "the key's badge")
    assert not browser.execute_script(DIALOG_OPEN)  # no stale refusal reopened it
    stored = browser.execute_script("return sessionStorage.getItem('rkllmd.key')")
    assert stored == ADMIN_KEY
    assert ADMIN_KEY not in browser.current_url
    assert browser.execute_script("return localStorage.length") == 0 or ADMIN_KEY not in str(
        browser.execute_script("return JSON.stringify(localStorage)")
    )


def test_the_api_key_may_not_manage(browser: WebDriver, daemon: DaemonProcess) -> None:
    browser.get(f"{daemon.http_url}/ui/#models")
    browser.refresh()
    wait_for(browser, lambda: find(browser, "#key-forget").is_displayed(), "the forget button")
    find(browser, "#key-forget").click()
    give_key(browser, API_KEY)
    wait_for(browser, lambda: "no management" in text_of(browser, "#key-badge"), "the badge")
    row = f"#model-table tr[data-id='{MODEL_ID}']"
    click(browser, lambda: find(browser, row), "the model's row")
    click(browser, lambda: find(browser, "#unload-button"), "the unload button")
    wait_for(browser, lambda: "admin key" in text_of(browser, "#toast"), "the refusal")
    assert "permission_denied" in text_of(browser, "#toast")
    assert daemon.call("status")["state"] == "ready"
