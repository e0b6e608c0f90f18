"""The console in a real Chromium against a real daemon serving SmolLM2, pulling from
the Hub stand-in: state, load/unload, chat with stop, pull, delete, the API view."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.helpers import MODEL_ID, DaemonProcess, model_source, place_model, short_tempdir
from tests.http.console.conftest import click, find, needs_browser, severe_logs, text_of, wait_for
from tests.store.hubstub import Fault, HubStub

pytestmark = needs_browser

RKLLMCTL = Path(sys.executable).with_name("rkllmctl")
PULLED_REPO = "test-org/Tiny-GGUF"
PULLED_FILE = "Tiny.Q4_1.gguf"


@pytest.fixture(scope="module")
def hub() -> Iterator[HubStub]:
    stub = HubStub().start()
    repo = stub.add_repo(PULLED_REPO, {PULLED_FILE: model_source(), "README.md": b"# Tiny\n"})
    # Slow enough that the page shows the progress bar moving (about 5 s).
    repo.faults[PULLED_FILE] = Fault(rate=20 * 1024 * 1024)
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def daemon(hub: HubStub) -> Iterator[DaemonProcess]:
    models = short_tempdir() / "models"
    models.mkdir()
    place_model(models)
    env = {
        "RKLLMD_HUB__ENDPOINT": hub.url,
        "RKLLMD_HUB__MIN_FREE_BYTES": "0",
        "RKLLMD_LLAMACPP__PARALLEL": "1",
    }
    process = DaemonProcess(models, args=["--load", "smollm2"], env=env).wait_ready()
    yield process
    process.stop()
    shutil.rmtree(models.parent, ignore_errors=True)


def rkllmctl(daemon: DaemonProcess, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RKLLMD_")}
    done = subprocess.run(
        [str(RKLLMCTL), "--socket", str(daemon.socket), "--json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def open_view(browser: WebDriver, daemon: DaemonProcess, view: str) -> None:
    browser.get(f"{daemon.http_url}/ui/#{view}")
    browser.refresh()  # from another view of the page, get() only changes the hash
    wait_for(browser, lambda: text_of(browser, "#state-value"), "the first status event")


def model_row(browser: WebDriver, needle: str) -> Any:
    for row in browser.find_elements(By.CSS_SELECTOR, "#model-table tbody tr"):
        if needle.lower() in (row.get_attribute("data-id") or "").lower():
            return row
    return None


def test_state_view_shows_the_resident_model_without_console_errors(
    browser: WebDriver, daemon: DaemonProcess, artifacts: Path
) -> None:
    browser.get(f"{daemon.http_url}/")
    wait_for(browser, lambda: text_of(browser, "#state-model") == MODEL_ID, "the resident model")
    assert text_of(browser, "#state-value") == "ready"
    assert browser.find_element(By.ID, "banner").is_displayed() is False
    browser.save_screenshot(str(artifacts / "state.png"))
    assert severe_logs(browser) == []


def test_unload_and_load_from_the_page_change_rkllmctl_status(
    browser: WebDriver, daemon: DaemonProcess, artifacts: Path
) -> None:
    open_view(browser, daemon, "models")
    click(browser, lambda: model_row(browser, MODEL_ID), "the model's row")
    click(browser, lambda: find(browser, "#unload-button"), "the unload button")
    wait_for(browser, lambda: rkllmctl(daemon, "status")["state"] == "idle", "the unload")
    wait_for(browser, lambda: "● loaded" not in model_row(browser, MODEL_ID).text, "the row")
    wait_for(browser, lambda: text_of(browser, "#toast") == "Unloaded", "the page's answer")

    find(browser, "#load-form input[name=ctx]").send_keys("1024")
    find(browser, "#load-button").click()
    wait_for(browser, lambda: rkllmctl(daemon, "status")["state"] == "ready", "the load")
    status = rkllmctl(daemon, "status")
    assert status["model"] == MODEL_ID
    assert status["options"]["ctx_size"] == 1024
    wait_for(browser, lambda: "● loaded" in model_row(browser, MODEL_ID).text, "the loaded flag")
    browser.save_screenshot(str(artifacts / "models.png"))
    assert severe_logs(browser) == []


def set_chat_settings(browser: WebDriver, daemon: DaemonProcess, **settings: str) -> None:
    saved = {"settings": settings, "messages": []}
    browser.execute_script("localStorage.setItem('rkllmd.chat', arguments[0])", json.dumps(saved))
    open_view(browser, daemon, "chat")


def send(browser: WebDriver, text: str) -> None:
    wait_for(browser, lambda: find(browser, "#chat-input").is_enabled(), "the chat box")
    find(browser, "#chat-input").send_keys(text)
    find(browser, "#chat-send").click()


def last_reply(browser: WebDriver) -> str:
    """Found and read in one script (an element read after it was found may be stale)."""
    script = (
        "const r = document.querySelectorAll('#chat-log .msg.assistant');"
        "return r.length ? r[r.length - 1].textContent : ''"
    )
    return str(browser.execute_script(script) or "")


def test_chat_streams_and_stop_aborts_the_generation(
    browser: WebDriver, daemon: DaemonProcess, artifacts: Path
) -> None:
    set_chat_settings(browser, daemon, max_tokens="8", temperature="0")
    assert not browser.find_elements(By.ID, "chat-images")  # SmolLM2 cannot see
    send(browser, "Say hello")
    wait_for(browser, lambda: "completion tokens" in last_reply(browser), "the reply's counts")
    reply = last_reply(browser)
    assert "8 completion tokens" in reply and "tok/s" in reply and "prompt" in reply

    aborted = rkllmctl(daemon, "status")["counters"]["aborted"]
    set_chat_settings(browser, daemon, max_tokens="4000", temperature="0")
    send(browser, "Write a very long story about a dragon and a board.")
    # Text streamed in before the end: the reply shows words and the Stop button is live.
    wait_for(
        browser,
        lambda: len(last_reply(browser).split()) > 3 and find(browser, "#chat-stop").is_enabled(),
        "streamed text",
    )
    browser.save_screenshot(str(artifacts / "chat-streaming.png"))
    find(browser, "#chat-stop").click()
    wait_for(browser, lambda: "stopped" in last_reply(browser), "the stopped reply")
    wait_for(
        browser,
        lambda: rkllmctl(daemon, "status")["counters"]["aborted"] > aborted,
        "the daemon's aborted counter",
    )
    wait_for(browser, lambda: rkllmctl(daemon, "status")["state"] == "ready", "the slot back")
    # The conversation stays in the browser: a reload shows it again.
    browser.refresh()
    wait_for(browser, lambda: "stopped" in last_reply(browser), "the kept conversation")
    browser.save_screenshot(str(artifacts / "chat.png"))


def test_pull_shows_progress_and_the_model_appears(
    browser: WebDriver, daemon: DaemonProcess, artifacts: Path
) -> None:
    open_view(browser, daemon, "pull")
    find(browser, "#pull-repo").send_keys("test-org/no-such-repo")
    find(browser, "#pull-start").click()
    wait_for(browser, lambda: text_of(browser, "#pull-error"), "the error of a missing repo")
    assert "not_found" in text_of(browser, "#pull-error") or "404" in text_of(
        browser, "#pull-error"
    )
    find(browser, "#pull-repo").clear()
    find(browser, "#pull-repo").send_keys(PULLED_REPO)
    find(browser, "#pull-include").send_keys("*.gguf")
    find(browser, "#pull-start").click()
    wait_for(
        browser,
        lambda: (
            "MB of" in text_of(browser, "#pull-facts") and "/s" in text_of(browser, "#pull-facts")
        ),
        "progress with bytes and rate",
    )
    value = float(find(browser, "#pull-bar").get_attribute("value") or 0)
    assert 0 <= value < 1
    browser.save_screenshot(str(artifacts / "pull.png"))
    wait_for(browser, lambda: text_of(browser, "#pull-outcome"), "the pull's end")
    assert text_of(browser, "#pull-error") == ""
    ids = [m["id"] for m in rkllmctl(daemon, "ls")]
    assert any("tiny" in i.lower() for i in ids), ids
    browser.get(f"{daemon.http_url}/ui/#models")
    wait_for(browser, lambda: model_row(browser, "tiny"), "the pulled model in the list")
    # Read inside a wait: the table re-renders on live events (a row read once may be stale).
    wait_for(browser, lambda: PULLED_REPO in model_row(browser, "tiny").text, "the repo named")


def test_delete_asks_for_confirmation_naming_the_file(
    browser: WebDriver, daemon: DaemonProcess, artifacts: Path
) -> None:
    open_view(browser, daemon, "models")
    click(browser, lambda: model_row(browser, "tiny"), "the pulled model")
    click(browser, lambda: find(browser, "#delete-button"), "the delete button")
    dialog_open = "return document.getElementById('confirm-dialog').open"
    wait_for(browser, lambda: browser.execute_script(dialog_open), "the confirmation")
    assert PULLED_FILE in text_of(browser, "#confirm-files")
    browser.save_screenshot(str(artifacts / "delete-confirm.png"))
    find(browser, "#confirm-cancel").click()
    wait_for(browser, lambda: not browser.execute_script(dialog_open), "the dialog to close")
    assert any("tiny" in m["id"].lower() for m in rkllmctl(daemon, "ls"))

    find(browser, "#delete-button").click()
    wait_for(browser, lambda: browser.execute_script(dialog_open), "the confirmation again")
    find(browser, "#confirm-ok").click()
    wait_for(browser, lambda: model_row(browser, "tiny") is None, "the row to go")
    assert not any("tiny" in m["id"].lower() for m in rkllmctl(daemon, "ls"))
    assert model_row(browser, MODEL_ID) is not None
    assert severe_logs(browser) == []


def test_api_view_shows_bodies_with_every_ref_resolved(
    browser: WebDriver, daemon: DaemonProcess, artifacts: Path
) -> None:
    open_view(browser, daemon, "api")
    wait_for(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#api-list details"), "routes")
    schemas: list[str] = browser.execute_script(
        "return [...document.querySelectorAll('#api-list pre.schema')].map(p => p.textContent)"
    )
    assert len(schemas) > 20
    assert not [s for s in schemas if "$ref" in s]
    find(browser, "#api-filter").send_keys("chat/completions")
    first = wait_for(browser, lambda: find(browser, "#api-list details summary"), "the filter")
    first.click()
    assert "messages" in text_of(browser, "#api-list pre.schema")
    browser.save_screenshot(str(artifacts / "api.png"))
