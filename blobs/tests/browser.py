"""A real browser for the admin's tests: Debian's Chromium through chromedriver, headless, loopback only.

Tests that use the ``browser`` fixture (root conftest) mark themselves ``requires_browser``: skipped where
Chromium is not installed, except in CI (``REQUIRE_BROWSER=1``), which installs it and must not skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

requires_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and os.environ.get("REQUIRE_BROWSER") != "1",
    reason="Debian's chromium and chromium-driver are not installed",
)


def start_browser(profile: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "/usr/bin/chromium"
    # The flags this machine needs: no sandbox as root, and no background traffic off loopback.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    # The console (driver.get_log("browser")): where Chromium reports Content-Security-Policy violations.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        service=Service(executable_path=CHROMEDRIVER or "/usr/bin/chromedriver"), options=options
    )
    driver.implicitly_wait(5)
    return driver
