"""The web console in Debian's headless Chromium (Selenium + chromium-driver), against
real daemons. One browser per module; every wait is for a condition on the page or in
the daemon, never for a fixed time."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = None if os.environ.get("_RKLLMD_TEST_NO_BROWSER") else shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)
# Generous: the machine running the suite may be busy; waits end as soon as they can.
WAIT_SECONDS = 120.0

# Every test module of the console needs a browser to drive (and most the real model).
browser_present = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="the console's browser tests need Debian's chromium and chromium-driver "
    "(apt-get install chromium chromium-driver; .ci/run and make setup as root install them)",
)
needs_browser = [pytest.mark.real_model, browser_present]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root (CI containers)
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or ""), options=options)
    driver.set_page_load_timeout(WAIT_SECONDS)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $RKLLMD_CONSOLE_ARTIFACTS, else pytest's temporary dir."""
    chosen = os.environ.get("RKLLMD_CONSOLE_ARTIFACTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("console-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait_for(driver: WebDriver, condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""

    def attempt(_: WebDriver) -> Any:
        try:
            return condition()
        except Exception:  # an element replaced while we looked: look again
            return False

    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.2).until(
        attempt, f"timed out waiting for {what}"
    )


def click(driver: WebDriver, finder: Callable[[], Any], what: str) -> None:
    """Find and click, again if the page re-rendered the element in between (a live
    event can replace a view's elements at any moment)."""

    def attempt() -> bool:
        element = finder()
        if element is None:
            return False
        element.click()
        return True

    wait_for(driver, attempt, what)


def find(driver: WebDriver, css: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, css)


def text_of(driver: WebDriver, css: str) -> str:
    """The element's textContent: hidden views too (WebElement.text is only what shows).
    Found and read in one script: the console re-renders its live parts on every status
    event, and an element found first and read after may be gone by then (stale)."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''"
    return str(driver.execute_script(script, css) or "")


def severe_logs(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
