"""The rollout admin in a real browser (Debian's Chromium through chromedriver): a Rollout operator logs in,
is refused a three-decimal percentage, reviews the cohort preview, saves, moves a stage, explains a user.

Skipped where Chromium is not installed, except in CI (REQUIRE_BROWSER=1), which installs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audit.models import AuditEvent
from blobs.tests.browser import requires_browser
from erphub import roles
from flags import services
from flags.models import SECURE_BLOB_STREAMING, Flag
from flags.tests.factories import make_user

pytestmark = [
    pytest.mark.django_db(transaction=True),
    requires_browser,
]


def screenshot(browser, tmp_path: Path, name: str) -> None:
    browser.save_screenshot(str(Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / name))


def test_an_operator_moves_the_rollout_in_the_browser(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    services.flag_cache_reset()
    make_user("olga", groups=(roles.ROLLOUT_OPERATORS,))
    for _ in range(20):
        make_user()
    flag = Flag.objects.get(name=SECURE_BLOB_STREAMING)
    wait = WebDriverWait(browser, 20)

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("olga")
    browser.find_element(By.NAME, "password").send_keys("pw-123456!")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(expected_conditions.title_contains("Site administration"))

    browser.get(f"{live_server.url}/admin/flags/flag/")
    assert "100.00 %" in browser.page_source
    screenshot(browser, tmp_path, "flags-changelist.png")
    browser.find_element(By.LINK_TEXT, SECURE_BLOB_STREAMING).click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "flag-form")))

    def submit(percentage: str, reason: str, button: str) -> None:
        field = browser.find_element(By.NAME, "percentage")
        field.clear()
        field.send_keys(percentage)
        reason_field = browser.find_element(By.NAME, "reason")
        reason_field.clear()
        reason_field.send_keys(reason)
        browser.find_element(By.ID, button).click()

    # Three decimals: refused with a message, nothing saved.
    submit("12.345", "too precise", "review-button")
    error = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".errorlist")))
    assert "no more than 2 decimal places" in error.text

    # 25 % (a move back down from 100 %): the review shows the cohort, then the operator confirms.
    submit("25", "back to 25 % while we investigate", "review-button")
    preview = wait.until(expected_conditions.presence_of_element_located((By.ID, "cohort-preview")))
    assert "active users would be enabled" in preview.text
    screenshot(browser, tmp_path, "flags-review.png")
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 10_000  # not yet
    browser.find_element(By.ID, "confirm-save").click()
    message = wait.until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success"))
    )
    assert "Saved:" in message.text
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 2_500

    # One click to the next stage (50 %), with its mandatory reason.
    browser.find_element(By.ID, "stage-50").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "cohort-preview")))
    browser.find_element(By.NAME, "reason").send_keys("25 % was clean for two days")
    browser.find_element(By.ID, "apply").click()
    message = wait.until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success"))
    )
    assert "Moved to 50 %" in message.text
    assert browser.find_element(By.ID, "flag-percentage").text == "50.00 %"
    assert "25 % was clean for two days" in browser.find_element(By.ID, "flag-history").text

    # Explain: why is olga in or out?
    browser.find_element(By.ID, "explain").click()
    browser.find_element(By.NAME, "user").send_keys("olga")
    browser.find_element(By.CSS_SELECTOR, "#explain-form input[type=submit]").click()
    verdict = wait.until(expected_conditions.presence_of_element_located((By.ID, "verdict")))
    assert verdict.text.startswith("olga is ")
    assert "bucket" in browser.find_element(By.ID, "explain-steps").text
    screenshot(browser, tmp_path, "flags-explain.png")

    flag.refresh_from_db()
    assert flag.rollout_basis_points == 5_000
    actions = list(AuditEvent.objects.filter(target_id=SECURE_BLOB_STREAMING).values_list("action", "actor"))
    assert ("flag.update", "olga") in actions
    assert ("flag.stage", "olga") in actions
