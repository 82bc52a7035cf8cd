"""The audit admin in a real browser (Chromium, 1280 px wide, blobs/tests/browser.py): the log and the
legal holds are readable and say what they mean.

Each test saves its pages as PNGs in ``SCREENSHOT_DIR`` (a temporary directory by default) for a person to
look at; the assertions are about what a person would check: nothing scrolls sideways, the outcome and the
target are on screen, sealed values are shown in clear to an auditor, help texts are text.
"""

from __future__ import annotations

import json
import os
from datetime import UTC
from pathlib import Path

import pytest
from django.urls import reverse

from audit.holds import legal_hold_create
from audit.models import AuditEvent, LegalHold
from blobs.exceptions import BlobHeld
from blobs.models import Blob
from blobs.services import blob_delete
from blobs.tests.browser import requires_browser
from blobs.tests.factories import make_blob, make_user
from core.actors import Actor

pytestmark = [pytest.mark.django_db(transaction=True), requires_browser]

PASSWORD = "pw-123456!"  # make_user's


def shot(browser, tmp_path: Path, name: str) -> None:
    browser.save_screenshot(str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / f"{name}.png"))


def log_in(browser, live_server, username: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    browser.find_element(By.ID, "user-tools")  # waits (implicitly) for the next page


def fits_the_window(browser) -> bool:
    """Neither the page nor the admin's result table (which scrolls in its own box) scrolls sideways."""
    return browser.execute_script(
        "const boxes = [document.documentElement, ...document.querySelectorAll('.results')];"
        "return boxes.every(box => box.scrollWidth <= box.clientWidth);"
    )


def on_screen(browser, element) -> bool:
    return browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.width > 0 && r.left >= 0 && r.right <= document.documentElement.clientWidth;",
        element,
    )


@pytest.fixture
def auditor():
    return make_user("audrey", perms=(), roles=("Auditors",))


@pytest.fixture
def busy_log():
    """Events as the product writes them: uploads (sealed names), a held delete refused (denied), long
    usernames and ids."""
    owner = make_user("owner-with-a-rather-long-username@example.com")
    blobs = [make_blob(owner, filename=f"Quarterly report {n} — confidential draft.pdf") for n in range(3)]
    legal_hold_create(
        actor=Actor.system("legal"), reason="case 12", target_type="blob", target_id=str(blobs[0].pk)
    )
    with pytest.raises(BlobHeld):
        blob_delete(blob=blobs[0], actor=Actor.for_user(owner))
    return blobs


def test_the_audit_list_fits_1280_px_with_outcome_and_target_visible(
    browser, live_server, tmp_path, auditor, busy_log
):
    from selenium.webdriver.common.by import By

    log_in(browser, live_server, "audrey")
    browser.get(f"{live_server.url}{reverse('admin:audit_auditevent_changelist')}")
    shot(browser, tmp_path, "audit-list")
    assert browser.execute_script("return window.innerWidth") == 1280
    assert fits_the_window(browser)
    denied = browser.find_element(By.XPATH, "//tr[td[contains(@class, 'field-outcome')][. = 'Denied']]")
    assert on_screen(browser, denied.find_element(By.CSS_SELECTOR, ".field-outcome"))
    target = denied.find_element(By.CSS_SELECTOR, ".field-target")
    assert on_screen(browser, target)
    assert target.text.split() == ["blob", f"{str(busy_log[0].pk)[:8]}…"]
    assert target.find_element(By.TAG_NAME, "span").get_attribute("title") == str(busy_log[0].pk)
    assert on_screen(browser, denied.find_element(By.CSS_SELECTOR, ".field-who"))


def test_an_event_page_shows_its_number_time_and_sealed_values_in_clear(
    browser, live_server, tmp_path, auditor, busy_log
):
    from selenium.webdriver.common.by import By

    upload = AuditEvent.objects.get(action="blob.upload", target_id=str(busy_log[1].pk))
    assert "$sealed" in json.dumps(upload.details)  # stored sealed
    log_in(browser, live_server, "audrey")
    browser.get(f"{live_server.url}{reverse('admin:audit_auditevent_change', args=[upload.pk])}")
    shot(browser, tmp_path, "audit-event")
    assert fits_the_window(browser)
    number = browser.find_element(By.CSS_SELECTOR, ".fieldBox.field-sequence .readonly")
    assert number.text == str(upload.sequence)
    stamp = browser.find_element(By.CSS_SELECTOR, ".fieldBox.field-exact_time .readonly").text
    assert stamp == upload.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    details_box = browser.find_element(By.CSS_SELECTOR, ".audit-details-json")
    browser.execute_script("arguments[0].scrollIntoView()", details_box)
    shot(browser, tmp_path, "audit-event-details")
    details = details_box.text
    assert "Quarterly report 1 — confidential draft.pdf" in details
    assert "$sealed" not in details
    # The help text is text, not a swallowed <name> tag.
    help_texts = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, ".field-actor .help"))
    assert "system:<name>" in help_texts
    opened = AuditEvent.objects.get(action="audit.unseal")
    assert opened.actor == "audrey"
    assert opened.target_id == str(upload.sequence)
    assert opened.details == {"fields": ["filename"]}


def test_the_two_logs_have_different_names_on_the_admin_index(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    make_user("root", perms=(), is_superuser=True)
    log_in(browser, live_server, "root")
    shot(browser, tmp_path, "admin-index-superuser")
    captions = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#content-main .module caption")]
    assert [c.lower() for c in captions].count("audit log") == 1, captions
    assert any(c.lower() == "configuration history" for c in captions), captions


def test_legal_hold_form_and_release_in_the_browser(browser, live_server, tmp_path, auditor, busy_log):
    from selenium.webdriver.common.by import By

    log_in(browser, live_server, "audrey")
    browser.get(f"{live_server.url}{reverse('admin:audit_legalhold_add')}")
    assert "a blob's id" in browser.find_element(By.CSS_SELECTOR, ".field-target_id .help").text
    browser.find_element(By.NAME, "reason").send_keys("case 13")
    browser.find_element(By.NAME, "target_type").send_keys("blob")
    browser.find_element(By.NAME, "target_id").send_keys("no-such-file")
    browser.find_element(By.NAME, "_save").click()
    error = browser.find_element(By.CSS_SELECTOR, ".field-target_id .errorlist")
    shot(browser, tmp_path, "legal-hold-add-error")
    assert "No file has the id 'no-such-file'" in error.text
    assert "audit_legal_hold" not in browser.page_source
    assert LegalHold.objects.count() == 1  # busy_log's

    hold = LegalHold.objects.get()
    browser.get(f"{live_server.url}{reverse('admin:audit_legalhold_changelist')}")
    shot(browser, tmp_path, "legal-holds")
    assert fits_the_window(browser)
    browser.find_element(By.LINK_TEXT, "Release…").click()
    browser.find_element(By.NAME, "reason").send_keys("case 12 closed")
    shot(browser, tmp_path, "legal-hold-release")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    message = browser.find_element(By.CSS_SELECTOR, ".messagelist .success")
    assert message.text == f"Legal hold #{hold.pk} released."
    assert "Released" in browser.find_element(By.CSS_SELECTOR, "#result_list .field-status").text
    assert AuditEvent.objects.filter(action="audit.legal_hold_release", actor="audrey").count() == 1
    blob_delete(blob=Blob.objects.get(pk=busy_log[0].pk))  # nothing keeps it now
    assert not Blob.objects.filter(pk=busy_log[0].pk).exists()
