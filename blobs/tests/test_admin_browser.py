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
    assert (
        browser.find_element(By.LINK_TEXT, "quarterly report.pdf")
        .get_attribute("href")
        .endswith(f"/secure/files/{blob.pk}/stream")
    )
    browser.save_screenshot(str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / "my-files.png"))

    browser.get(f"{live_server.url}/admin/blobs/blob/{blob.pk}/change/")
    browser.save_screenshot(str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / "admin-change.png"))
    link = browser.find_element(By.LINK_TEXT, "Download").get_attribute("href")
    assert link.endswith(f"/admin/blobs/blob/{blob.pk}/download/")  # saved whatever the type (issue 17)
    session = browser.get_cookie("sessionid")["value"]
    request = urllib.request.Request(link, headers={"Cookie": f"sessionid={session}", "Range": "bytes=1000-"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 206
        assert response.read() == data[1000:]


# --- issue 17: the admin a busy person understands at a glance --------------------------------------------

PASSWORD = "correct horse battery"


def _boss_in_the_admin(browser, live_server):
    from blobs.tests.browser import admin_login, watch_pages

    boss = get_user_model().objects.create_superuser("boss", "boss@example.com", PASSWORD)
    watch_pages(browser)
    admin_login(browser, live_server.url, "boss", PASSWORD)
    return boss


def _downloads_to(browser, directory: Path) -> None:
    directory.mkdir()
    behavior = {"behavior": "allow", "downloadPath": str(directory)}
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", behavior)


def _wait_for_file(path: Path) -> bytes:
    from selenium.webdriver.support.ui import WebDriverWait

    # Chromium writes <name>.crdownload and renames it when the download is complete.
    WebDriverWait(None, 20, poll_frequency=0.1).until(lambda _: path.exists())
    return path.read_bytes()


# The progress text while the bar is between its ends (null before and after).
PROGRESS_MIDWAY = """
const bar = document.querySelector(".upload-progress progress");
return bar && bar.value > 0 && bar.value < 100 ? document.querySelector(".upload-progress").innerText : null;
"""


def _throttle_uploads(browser, bytes_per_second: int | None) -> None:
    browser.execute_cdp_cmd("Network.enable", {})
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
    browser.execute_cdp_cmd(
        "Network.emulateNetworkConditions", {**conditions, "uploadThroughput": bytes_per_second or -1}
    )


def test_download_saves_the_file_even_one_named_pdf_that_is_not(browser, live_server, tmp_path):

    from blobs.tests.browser import page_problems, wait_for
    from blobs.tests.factories import make_blob

    boss = _boss_in_the_admin(browser, live_server)
    data = pattern(200_000)  # not a PDF: the browser's viewer said "Failed to load PDF document"
    blob = make_blob(boss, data, filename="invoice.pdf", content_type="application/pdf")
    photo = make_blob(boss, pattern(5000, seed=3), filename="photo.png", content_type="image/png")
    saved = tmp_path / "downloads"
    _downloads_to(browser, saved)

    for item in (blob, photo):
        change = f"{live_server.url}/admin/blobs/blob/{item.pk}/change/"
        browser.get(change)
        wait_for(browser, ".field-download a.blob-download").click()
        assert _wait_for_file(saved / item.filename) == (data if item is blob else pattern(5000, seed=3))
        assert browser.current_url == change  # saved, not opened in the tab
    assert page_problems(browser) == []


def test_a_file_that_fails_to_decrypt_shows_a_readable_page_linking_its_audit_event(browser, live_server):
    from selenium.webdriver.common.by import By

    from audit.models import AuditEvent
    from blobs.storage import blob_store
    from blobs.tests.browser import document_status, page_problems, wait_for
    from blobs.tests.factories import make_blob

    boss = _boss_in_the_admin(browser, live_server)
    blob = make_blob(boss, pattern(100_000), filename="ledger.xlsx")
    path = Path(blob_store(blob.storage_alias).storage.location) / blob.storage_name
    raw = bytearray(path.read_bytes())
    raw[60] ^= 0x80  # inside the first segment: found before the response starts
    path.write_bytes(bytes(raw))

    browser.get(f"{live_server.url}/admin/blobs/blob/")
    wait_for(browser, "#result_list a.blob-download").click()
    page = wait_for(browser, ".blob-download-failed")
    assert document_status(browser) == 500
    assert "Download failed: ledger.xlsx" in browser.title
    assert "failed its integrity check" in page.text
    assert "Restore the object from the latest backup" in page.text
    assert '"detail"' not in browser.page_source  # a page, not the API's JSON
    event = AuditEvent.objects.get(action="blob.download.start", outcome="error")
    page.find_element(By.CSS_SELECTOR, "a.blob-event-link").click()
    wait_for(browser, "#auditevent_form, #content-main")
    assert browser.current_url.endswith(f"/admin/audit/auditevent/{event.pk}/change/")
    # The list now tells this file apart from the good ones.
    browser.get(f"{live_server.url}/admin/blobs/blob/")
    assert wait_for(browser, "#result_list .field-status").text == "integrity failed"
    url = f"{live_server.url}/admin/blobs/blob/{blob.pk}/download/"
    assert page_problems(browser, ignore=(url,)) == []


def test_the_list_reads_at_a_glance_and_the_add_form_picks_an_owner_and_shows_progress(
    browser, live_server, tmp_path, settings
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from blobs.tests.browser import page_problems, wait_for
    from blobs.tests.factories import make_user

    settings.BLOBS = {**settings.BLOBS, "SEGMENT_SIZE": 65536, "MAX_UPLOAD_BYTES": 3 * 1024**2}
    _boss_in_the_admin(browser, live_server)
    bob = make_user("bob", first_name="Robert", last_name="Baker")

    browser.get(f"{live_server.url}/admin/blobs/blob/")
    empty = wait_for(browser, ".blob-empty")
    assert "No files yet" in empty.text
    assert "up to 3.0 MB" in empty.text
    empty.find_element(By.LINK_TEXT, "Upload a file").click()
    form = wait_for(browser, "#blob_form")
    assert "Up to 3.0 MB." in form.text

    # Too large: refused in the page, before a byte is sent.
    big = tmp_path / "too big.bin"
    big.write_bytes(b"\0" * (3 * 1024**2 + 1))
    browser.find_element(By.NAME, "file").send_keys(str(big))
    browser.find_element(By.NAME, "_save").click()
    error = wait_for(browser, ".upload-progress-error")
    assert error.text == "“too big.bin” is 3.0 MB; files can be at most 3.0 MB."
    assert not Blob.objects.exists()

    # The owner is found by name.
    browser.find_element(By.CSS_SELECTOR, ".field-owner .select2-selection").click()
    wait_for(browser, ".select2-search__field").send_keys("robert")
    WebDriverWait(browser, 10).until(
        lambda d: (
            [o.text for o in d.find_elements(By.CSS_SELECTOR, ".select2-results__option")]
            == ["bob — Robert Baker"]
        )
    )
    browser.find_element(By.CSS_SELECTOR, ".select2-results__option").click()

    # A slow link (Chromium's network emulation): the bar moves while the body goes out.
    data = pattern(1024**2)
    source = tmp_path / "minutes.txt"
    source.write_bytes(data)
    _throttle_uploads(browser, 256 * 1024)
    file_input = browser.find_element(By.NAME, "file")
    file_input.clear()
    file_input.send_keys(str(source))
    browser.find_element(By.NAME, "_save").click()
    seen = WebDriverWait(browser, 20, poll_frequency=0.05).until(lambda d: d.execute_script(PROGRESS_MIDWAY))
    assert "Uploading “minutes.txt”:" in seen
    assert "of 1.0 MB" in seen
    _throttle_uploads(browser, None)
    message = wait_for(browser, ".messagelist .success")
    assert "was added successfully" in message.text
    blob = Blob.objects.get()
    assert blob.owner == bob
    assert blob.sha256 == hashlib.sha256(data).hexdigest()

    row = wait_for(browser, "#result_list tbody tr")
    assert row.find_element(By.CSS_SELECTOR, ".field-human_size").text == "1.0 MB"
    assert row.find_element(By.CSS_SELECTOR, ".field-status").text == "ready"
    assert row.find_element(By.CSS_SELECTOR, ".field-created").text.endswith(" UTC")
    key = row.find_element(By.CSS_SELECTOR, ".field-key")
    assert browser.execute_script("return getComputedStyle(arguments[0]).whiteSpace", key) == "nowrap"
    assert browser.execute_script("return arguments[0].firstChild.getClientRects().length", key) == 1
    assert row.find_element(By.LINK_TEXT, "Download")
    assert page_problems(browser) == []


def test_history_shows_what_happened_to_the_file(browser, live_server):
    from selenium.webdriver.common.by import By

    from blobs.services import blob_verify
    from blobs.tests.browser import page_problems, wait_for
    from blobs.tests.factories import make_blob, make_user

    boss = _boss_in_the_admin(browser, live_server)
    blob = make_blob(make_user("alice"), pattern(4000), filename="plan.docx")
    blob_verify(blob=blob)
    browser.get(f"{live_server.url}/admin/blobs/blob/{blob.pk}/download/")  # saved: the tab stays put
    browser.get(f"{live_server.url}/admin/blobs/blob/{blob.pk}/change/")
    browser.find_element(By.LINK_TEXT, "HISTORY").click()
    table = wait_for(browser, "#change-history")
    what = [cell.text for cell in table.find_elements(By.CSS_SELECTOR, "tbody td:nth-child(2)")]
    assert "Uploaded" in what
    assert "Integrity check run" in what
    assert "Download started" in what
    assert "doesn’t have a change history" not in browser.page_source
    assert boss.username in table.text
    assert page_problems(browser) == []


def test_an_upload_the_form_refuses_shows_why_in_the_page(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    from blobs.tests.browser import page_problems, wait_for
    from blobs.tests.factories import stored_files

    _boss_in_the_admin(browser, live_server)
    browser.get(f"{live_server.url}/admin/blobs/blob/add/")
    wait_for(browser, "#blob_form")
    # An owner that no longer exists (deleted while the form was open): the server sends the form back.
    browser.execute_script(
        "const select = document.querySelector('select[name=owner]');"
        "select.replaceChildren(new Option('gone', '999999', true, true));"
    )
    source = tmp_path / "memo.txt"
    source.write_bytes(b"memo")
    browser.find_element(By.NAME, "file").send_keys(str(source))
    browser.find_element(By.NAME, "_save").click()
    error = wait_for(browser, ".upload-progress-error")
    assert "Select a valid choice" in error.text
    assert browser.current_url.endswith("/admin/blobs/blob/add/")  # still on the form, to try again
    assert browser.find_element(By.NAME, "_save").is_enabled()
    assert not Blob.objects.exists()
    assert stored_files() == []
    assert page_problems(browser) == []
