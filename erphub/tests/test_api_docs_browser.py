"""Swagger UI's "Authorize" dialog in a real browser (Debian's Chromium, blobs/tests/browser.py): the JWT box
comes first, and a token pasted into it authorizes "Try it out" (it answered 401 when the session-cookie box
came first and took the token as a cookie). Issue 17 item 11.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from blobs.tests.browser import requires_browser
from blobs.tests.factories import make_blob, make_user

pytestmark = [pytest.mark.django_db(transaction=True), requires_browser]

LISTING = "#operations-files-secure_files_list"  # GET /secure/files/ (tag "files")


def wait_for(browser: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    located = expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
    return WebDriverWait(browser, 20).until(located)


def test_a_token_pasted_into_the_first_box_authorizes_try_it_out(browser, live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    user = make_user("tina")
    make_blob(user, b"mine", filename="mine.txt")
    credentials = {"username": "tina", "password": "pw-123456!"}
    token = Client().post("/api/token/", credentials, content_type="application/json").json()

    browser.get(f"{live_server.url}/api/docs/")
    wait_for(browser, ".opblock")
    browser.find_element(By.CSS_SELECTOR, "button.authorize").click()
    wait_for(browser, ".auth-container")
    containers = browser.find_elements(By.CSS_SELECTOR, ".auth-container")
    names = [container.find_element(By.TAG_NAME, "h4").text for container in containers]
    assert names[0].startswith("jwtAuth"), names
    assert names[1].startswith("cookieAuth"), names
    assert "nothing to paste here" in containers[1].text

    # What a person does: paste the token into the first box, Authorize, Close.
    containers[0].find_element(By.CSS_SELECTOR, "input").send_keys(token["access"])
    containers[0].find_element(By.CSS_SELECTOR, "button.authorize").click()
    browser.find_element(By.CSS_SELECTOR, "button.btn-done").click()

    # The list of files, tried out: GET /secure/files/ with the token, from the page's own Swagger UI.
    listing = browser.find_element(By.CSS_SELECTOR, LISTING)
    listing.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(browser, f"{LISTING} .try-out__btn").click()
    wait_for(browser, f"{LISTING} .execute").click()
    answered = f"{LISTING} .live-responses-table tbody .response-col_status"
    status = WebDriverWait(browser, 20).until(lambda b: b.find_elements(By.CSS_SELECTOR, answered))
    assert status[0].text.strip() == "200"
    body = listing.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text
    assert "mine.txt" in body
