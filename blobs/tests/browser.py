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


# Runs in every new document before its scripts (Chromium's DevTools protocol): CSP Level 3 §5.4 violation
# events, which the console does not always report, collected for ``page_problems``.
COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    ["CSP", event.effectiveDirective, event.blockedURI, event.sourceFile, event.lineNumber].join(" ")
  );
});
"""


def watch_pages(driver: Any) -> Any:
    """Have every page the driver opens from now on collect its CSP violations (``page_problems``)."""
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COLLECT_VIOLATIONS})
    return driver


def page_problems(driver: Any, *, ignore: tuple[str, ...] = ()) -> list[str]:
    """What went wrong on the current page since the last call: CSP violations, script errors and failed
    loads (Chromium's console at SEVERE). Messages containing one of ``ignore`` are left out (a page
    answered with an error status on purpose logs its own URL)."""
    found = list(driver.execute_script("return window.__cspViolations || [];"))
    found += [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    # Chromium asks every new origin for /favicon.ico on its own; no page of ours links one.
    ignore = (*ignore, "/favicon.ico ")
    return [message for message in found if not any(text in message for text in ignore)]


def document_status(driver: Any) -> int:
    """The HTTP status of the current document (Navigation Timing Level 2, ``responseStatus``)."""
    return int(driver.execute_script("return performance.getEntriesByType('navigation')[0].responseStatus;"))


def wait_for(driver: Any, css: str, timeout: float = 20) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    located = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    return WebDriverWait(driver, timeout).until(located)


def admin_login(driver: Any, base_url: str, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base_url}/admin/login/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # The login page has the site's header too: wait for the index's title.
    WebDriverWait(driver, 20).until(expected_conditions.title_contains("Site administration"))
