"""A real headless Chromium for tests, driven by Selenium through Debian's chromedriver.

``chromium_driver(tmp_path)`` is a context manager giving a Selenium ``WebDriver``; tests call
``pytest.skip(skip_reason())`` first when it is not None. Nothing is downloaded: the driver is
``/usr/bin/chromedriver`` (Selenium Manager is kept offline) and Chromium's own background
traffic (component updates, sync, background networking) is turned off: no network is needed.

    from tests.browser import LabelPage, chromium_driver, skip_reason
    if skip_reason():
        pytest.skip(skip_reason())
    with LabelServer(site_dir) as server, chromium_driver(tmp_path) as driver:
        page = LabelPage(driver, server.url)     # `maskwatch label`'s page, driven like a person
        page.press("1")                           # files the crop on show as the first label
        assert page.shown()["file"] ...
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1000,900")


def skip_reason() -> Optional[str]:
    """Why browser tests cannot run here, or None."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} missing (apt-get install -y chromium chromium-driver)"
    return None  # selenium itself is in the test extra: its absence is an error, not a skip


@contextmanager
def chromium_driver(tmp_path: Path, timeout_s: float = 10.0) -> Iterator[Any]:
    """A headless Chromium WebDriver with its profile in ``tmp_path``; quit on exit.

    ``timeout_s`` bounds page loads and script runs, so a hung page fails the test, not the suite.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = Path(tmp_path) / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    options.add_argument(f"--user-data-dir={profile}")
    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never try to download a driver
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    finally:
        if offline is None:
            del os.environ["SE_OFFLINE"]
        else:
            os.environ["SE_OFFLINE"] = offline
    try:
        driver.set_page_load_timeout(timeout_s)
        driver.set_script_timeout(timeout_s)
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, cond: Callable[[Any], Any], timeout_s: float = 10.0) -> Any:
    """Poll ``cond(driver)`` until truthy (Selenium's WebDriverWait); TimeoutException otherwise."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(cond)


class LabelPage:
    """The ``maskwatch label`` page (agent/tools/label_page.html) in a driver, used as a person would.

    Each key press or click is one action; the page counts finished actions in
    ``document.body.dataset.actions``, and :meth:`press` / :meth:`click` return once theirs is done
    (the files have moved on disk by then).
    """

    def __init__(self, driver: Any, url: str, timeout_s: float = 10.0) -> None:
        self.driver = driver
        self.timeout_s = timeout_s
        driver.get(url)
        self._ready()

    def _ready(self) -> None:
        wait_for(self.driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1", self.timeout_s)
        self.actions = 0

    def _done(self) -> None:
        self.actions += 1
        want = str(self.actions)
        wait_for(self.driver, lambda d: d.execute_script("return document.body.dataset.actions") == want,
                 self.timeout_s)

    def press(self, key: str) -> None:
        """Type one key on the page (1-4: file the crop on show, u: undo) and wait for its answer."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(key).perform()
        self._done()

    def click(self, label: str) -> None:
        """Click the button of ``label`` and wait for its answer."""
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.ID, f"label-{label}").click()
        self._done()

    def reload(self) -> None:
        self.driver.refresh()
        self._ready()

    def shown(self) -> Dict[str, Any]:
        """What the page shows: ``file``, ``guess`` (text), ``loaded`` (the image's natural width;
        -1 while loading), ``done`` (the "nothing left" note is visible), ``counts`` per folder,
        ``message``."""
        return self.driver.execute_script(
            "const $ = (id) => document.getElementById(id), img = $('crop');"
            "return {file: $('file').textContent, guess: $('guess').textContent,"
            " loaded: img.complete ? img.naturalWidth : -1, done: !$('done').hidden, message: $('message').textContent,"
            " counts: Object.fromEntries([...document.querySelectorAll('#counts span')]"
            "   .map(s => [s.id.slice('count-'.length), Number(s.dataset.count)]))};")

    def wait_loaded(self) -> None:
        """Until the crop on show has loaded."""
        wait_for(self.driver, lambda d: self.shown()["loaded"] > 0, self.timeout_s)


__all__ = ["CHROMEDRIVER", "CHROMIUM", "LabelPage", "chromium_driver", "skip_reason", "wait_for"]
