"""The chat's image picker, on a daemon whose resident model can see (the fast tier's
fake backend sees when a projector sits next to the model file)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.helpers import MODEL_ID, DaemonProcess, place_model, short_tempdir
from tests.http.console.conftest import browser_present, find, text_of, wait_for

pytestmark = browser_present


@pytest.fixture(scope="module")
def seeing_daemon() -> Iterator[DaemonProcess]:
    models = short_tempdir() / "models"
    models.mkdir()
    place_model(models)
    (models / "mmproj-f16.gguf").write_bytes(b"GGUF" + bytes(64))  # the fake's projector
    env = {"_RKLLMD_TEST_BACKEND": "fake"}
    process = DaemonProcess(models, args=["--load", MODEL_ID], env=env).wait_ready()
    yield process
    process.stop()
    shutil.rmtree(models.parent, ignore_errors=True)


def test_a_model_that_sees_gets_an_image_picker(
    browser: WebDriver, seeing_daemon: DaemonProcess, artifacts: Path
) -> None:
    image = seeing_daemon.dir / "red.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(image)
    browser.get(f"{seeing_daemon.http_url}/ui/#chat")
    browser.execute_script("localStorage.clear()")
    browser.refresh()
    picker = wait_for(browser, lambda: find(browser, "#chat-images"), "the image picker")
    picker.send_keys(str(image))
    wait_for(
        browser,
        lambda: browser.execute_script(
            "return document.getElementById('chat-images').files.length"
        ),
        "the picked file",
    )
    find(browser, "#chat-input").send_keys("What colour is this?")
    find(browser, "#chat-send").click()
    wait_for(
        browser,
        lambda: browser.find_elements(By.CSS_SELECTOR, ".msg.user .thumbs img"),
        "the thumbnail",
    )

    def answered() -> str:
        replies = browser.find_elements(By.CSS_SELECTOR, "#chat-log .msg.assistant")
        if not replies or find(browser, "#chat-stop").is_enabled():
            return ""
        return replies[-1].get_attribute("textContent") or ""

    reply = wait_for(browser, answered, "the reply")
    browser.save_screenshot(str(artifacts / "chat-image.png"))
    # The request carried the image: the daemon decoded it and the model answered.
    assert "completion tokens" in reply, reply
    assert "invalid_image" not in reply and "invalid_params" not in reply
    assert text_of(browser, "#state-model") == MODEL_ID
