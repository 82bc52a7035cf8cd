"""A held blob in the admin, in a real browser (Chromium at 1280 px): the delete page and the bulk delete
action refuse, say why and what to do, and delete nothing.

Pages are saved as PNGs in ``SCREENSHOT_DIR`` (a temporary directory by default) for a person to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.urls import reverse

from audit.holds import legal_hold_create
from blobs.models import Blob
from blobs.tests.browser import requires_browser
from blobs.tests.factories import make_blob, make_user
from core.actors import Actor

pytestmark = [pytest.mark.django_db(transaction=True), requires_browser]


def shot(browser, tmp_path: Path, name: str) -> None:
    browser.save_screenshot(str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / f"{name}.png"))


def test_held_blob_delete_and_bulk_delete_refuse_in_the_browser(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    make_user("mgr", perms=(), roles=("Blob managers",))
    owner = make_user("owner")
    held = make_blob(owner, b"evidence", filename="contract 2026.pdf")
    free = make_blob(owner, b"other", filename="notes.txt")
    hold = legal_hold_create(
        actor=Actor.system("legal"), reason="case 12", target_type="blob", target_id=str(held.pk)
    )

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("mgr")
    browser.find_element(By.NAME, "password").send_keys("pw-123456!")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    browser.find_element(By.ID, "user-tools")

    browser.get(f"{live_server.url}{reverse('admin:blobs_blob_delete', args=[held.pk])}")
    shot(browser, tmp_path, "blob-delete-held")
    note = browser.find_element(By.CSS_SELECTOR, "#content .errornote").text
    assert "“contract 2026.pdf” is under a legal hold and cannot be deleted" in note
    listed = browser.find_element(By.ID, "deleted-objects").text
    assert f"contract 2026.pdf — under legal hold #{hold.pk}" in listed
    assert "case 12" not in listed  # a Blob manager may not read holds: not their reasons either
    assert not browser.find_elements(By.CSS_SELECTOR, "input[type=submit]")  # nothing to confirm

    browser.get(f"{live_server.url}{reverse('admin:blobs_blob_changelist')}")
    for box in browser.find_elements(By.CSS_SELECTOR, "input.action-select"):
        box.click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("delete_selected")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    note = browser.find_element(By.CSS_SELECTOR, "#content .errornote")
    shot(browser, tmp_path, "blob-bulk-delete-held")
    assert note.text.startswith("Nothing was deleted: some of the selected files are under a legal hold.")
    assert not browser.find_elements(By.CSS_SELECTOR, "#content form input[value=delete_selected]")
    assert set(Blob.objects.values_list("pk", flat=True)) == {held.pk, free.pk}
