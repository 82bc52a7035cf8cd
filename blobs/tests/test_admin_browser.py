"""The admin in a real browser (Debian's Chromium through chromedriver): log in, upload, download.

Skipped where Chromium is not installed, except in CI (REQUIRE_BROWSER=1), which installs it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from blobs.models import Blob
from blobs.tests.browser import requires_browser
from blobs.tests.factories import pattern

pytestmark = [
    pytest.mark.django_db(transaction=True),
    requires_browser,
]


def test_staff_uploads_and_downloads_through_the_admin(browser, live_server, tmp_path, settings):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    settings.BLOBS = {**settings.BLOBS, "SEGMENT_SIZE": 65536}
    get_user_model().objects.create_superuser("boss", "boss@example.com", "correct horse battery")
    data = pattern(300_000)
    source = tmp_path / "quarterly report.pdf"
    source.write_bytes(data)

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 20).until(expected_conditions.title_contains("Site administration"))

    browser.get(f"{live_server.url}/admin/blobs/blob/add/")
    browser.find_element(By.NAME, "file").send_keys(str(source))
    browser.find_element(By.NAME, "_save").click()
    # The click returns before the next page has loaded: wait for the admin's success message.
    message = WebDriverWait(browser, 20).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success"))
    )
    assert "was added successfully" in message.text
    browser.save_screenshot(str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / "admin-changelist.png"))

    blob = Blob.objects.get()
    assert blob.state == Blob.State.READY
    assert blob.filename == "quarterly report.pdf"
    assert blob.owner.username == "boss"
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    assert "quarterly report.pdf" in browser.page_source
    assert "293.0" in browser.page_source  # human size (293.0 KB) in the list

    browser.get(f"{live_server.url}/files/")  # the owner's own page lists it too
    assert browser.find_element(By.LINK_TEXT, "quarterly report.pdf").get_attribute("href").endswith(
        f"/secure/files/{blob.pk}/stream"
    )
    browser.save_screenshot(str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / "my-files.png"))

    browser.get(f"{live_server.url}/admin/blobs/blob/{blob.pk}/change/")
    browser.save_screenshot(str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / "admin-change.png"))
    link = browser.find_element(By.LINK_TEXT, "Download").get_attribute("href")
    assert link.endswith(f"/secure/files/{blob.pk}/stream")
    session = browser.get_cookie("sessionid")["value"]
    request = urllib.request.Request(link, headers={"Cookie": f"sessionid={session}", "Range": "bytes=1000-"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 206
        assert response.read() == data[1000:]
