"""Roles and staff status in a real browser (Chromium at 1280 px, blobs/tests/browser.py): what a person
without the right role is told, and what the user and group pages say roles mean.

Pages are saved as PNGs in ``SCREENSHOT_DIR`` (a temporary directory by default) for a person to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from blobs.tests.browser import requires_browser
from blobs.tests.factories import make_user
from erphub import roles

pytestmark = [pytest.mark.django_db(transaction=True), requires_browser]

PASSWORD = "pw-123456!"  # make_user's


def shot(browser, tmp_path: Path, name: str) -> None:
    browser.save_screenshot(str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / f"{name}.png"))


def submit_login(browser, live_server, username: str, password: str = PASSWORD) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()


def test_staff_flag_without_a_role_is_told_why_not_wrong_password(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    make_user("flagged", perms=(), is_staff=True)
    submit_login(browser, live_server, "flagged")
    note = browser.find_element(By.CSS_SELECTOR, ".errornote")
    shot(browser, tmp_path, "admin-login-no-role")
    assert (
        "Your username and password are right, but your account has no role that uses the admin" in note.text
    )
    assert "Auditors" in note.text
    assert "correct username and password" not in note.text
    submit_login(browser, live_server, "flagged", "wrong password")
    assert (
        "Please enter the correct username and password"
        in browser.find_element(By.CSS_SELECTOR, ".errornote").text
    )


def test_a_page_outside_the_role_is_the_styled_403(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    make_user("audrey", perms=(), roles=(roles.AUDITORS,))
    submit_login(browser, live_server, "audrey")
    browser.find_element(By.ID, "user-tools")
    browser.get(f"{live_server.url}{reverse('admin:blobs_blob_changelist')}")
    shot(browser, tmp_path, "admin-403")
    assert browser.find_element(By.TAG_NAME, "h1").text == "You do not have permission to see this page"
    assert browser.find_element(By.ID, "site-name").text == "ERP Hub — Secure Blob Streaming"
    assert "audrey" in browser.find_element(By.ID, "user-tools").text.lower()  # upper case by the CSS
    browser.find_element(By.LINK_TEXT, "Admin home").click()
    assert browser.find_element(By.LINK_TEXT, "Audit events")  # where the role does go


def test_files_page_links_role_members_to_the_admin(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    make_user("mgr", perms=(), roles=(roles.BLOB_MANAGERS,))
    submit_login(browser, live_server, "mgr")
    browser.find_element(By.ID, "user-tools")
    browser.get(f"{live_server.url}{reverse('blobs:my-files')}")
    shot(browser, tmp_path, "my-files-manager")
    browser.find_element(By.CSS_SELECTOR, f"#user-tools a[href='{reverse('admin:index')}']").click()
    assert "Site administration" in browser.title


def test_user_and_group_pages_say_what_roles_and_staff_status_mean(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    make_user("root", perms=(), is_superuser=True)
    someone = make_user("someone", perms=(), roles=(roles.AUDITORS,))
    submit_login(browser, live_server, "root")
    browser.find_element(By.ID, "user-tools")
    browser.get(f"{live_server.url}{reverse('admin:auth_user_change', args=[someone.pk])}")
    staff_help = browser.find_element(By.CSS_SELECTOR, ".field-is_staff .help")
    browser.execute_script("arguments[0].scrollIntoView()", staff_help)
    shot(browser, tmp_path, "admin-user-change")
    assert staff_help.text.startswith("Has no effect here on its own")
    groups_help = browser.find_element(By.CSS_SELECTOR, ".field-groups .help").text
    assert "Auditors (opens the admin): Read, verify and export the audit log" in groups_help

    browser.get(f"{live_server.url}{reverse('admin:auth_group_changelist')}")
    shot(browser, tmp_path, "admin-groups")
    rows = {
        row.find_element(By.CSS_SELECTOR, "th").text: row.find_element(
            By.CSS_SELECTOR, ".field-role_description"
        ).text
        for row in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    }
    assert (
        set(rows) == {role.name for role in roles.ROLES} == set(Group.objects.values_list("name", flat=True))
    )
    assert rows[roles.BLOB_USERS].startswith(
        "Upload files; read and delete their own. Does not open the admin."
    )
