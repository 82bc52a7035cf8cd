"""The pages' Content-Security-Policy in a real browser (Debian's Chromium, blobs/tests/browser.py): the admin
(login, index, a change list, a change form), the owner's /files/, the login page and Swagger UI work under it
with no violation, and the policy is in force on each (an inline script is refused). Issue 15 item 10.

Violations are collected in the page as CSP Level 3 §5.4 ``securitypolicyviolation`` events, by a listener
installed before any of the page's own scripts runs, and from Chromium's console log.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import path

from blobs.tests.browser import requires_browser
from blobs.tests.factories import make_blob

pytestmark = [pytest.mark.django_db(transaction=True), requires_browser]

# Runs in every new document before its scripts (Chromium's DevTools protocol), so no violation is missed.
COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    [event.effectiveDirective, event.blockedURI, event.sourceFile, event.lineNumber].join(" ")
  );
});
"""

# A script injected into the page as markup would be: inline, so the policy must refuse it.
INLINE_PROBE = """
window.__inlineRan = false;
const probe = document.createElement("script");
probe.textContent = "window.__inlineRan = true;";
document.body.appendChild(probe);
return window.__inlineRan;
"""


def collecting_browser(browser: Any) -> Any:
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COLLECT_VIOLATIONS})
    return browser


def violations(browser: Any) -> list[str]:
    in_page = browser.execute_script("return window.__cspViolations || [];")
    console = [entry["message"] for entry in browser.get_log("browser")]
    console = [message for message in console if "Content Security Policy" in message]
    return [*in_page, *console]


def assert_policy_holds_without_violations(browser: Any, page: str) -> None:
    assert violations(browser) == [], page
    # The policy is in force (a page without one would run the probe): an inline script is refused...
    assert browser.execute_script(INLINE_PROBE) is False, page
    # ...and reported, which shows the listener above hears violations on this page.
    assert any(v.startswith("script-src-elem inline") for v in violations(browser)), page


def wait_for(browser: Any, css: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    located = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    return WebDriverWait(browser, 20).until(located)


def wait_for_title(browser: Any, text: str) -> None:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 20).until(expected_conditions.title_contains(text))


def test_admin_and_pages_work_under_the_policy_with_no_violation(browser, live_server):
    from selenium.webdriver.common.by import By

    browser = collecting_browser(browser)
    boss = get_user_model().objects.create_superuser("boss", "boss@example.com", "correct horse battery")
    blob = make_blob(boss, b"quarterly figures", filename="q3.csv", content_type="text/csv")

    browser.get(f"{live_server.url}/accounts/login/")
    wait_for(browser, "input[name=username]")
    assert_policy_holds_without_violations(browser, "/accounts/login/")

    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    # The login page has the site's header (#site-name) too: waiting for it could return before the POST
    # navigated (a CI run asserted on the login page's title). Wait for the index's own title.
    wait_for_title(browser, "Site administration")
    # The admin's own scripts ran: theme.js sets the colour theme on the root element as the page loads.
    assert browser.execute_script("return document.documentElement.dataset.theme") == "auto"
    assert_policy_holds_without_violations(browser, "/admin/")

    browser.get(f"{live_server.url}/admin/blobs/blob/")
    wait_for(browser, "#result_list")
    assert "q3.csv" in browser.page_source
    # actions.js ran: ticking "select all" ticks the row and updates the counter it keeps.
    browser.find_element(By.ID, "action-toggle").click()
    assert browser.find_element(By.CSS_SELECTOR, "input.action-select").is_selected()
    assert "1 of 1 selected" in browser.find_element(By.CSS_SELECTOR, ".action-counter").text
    assert_policy_holds_without_violations(browser, "/admin/blobs/blob/")

    browser.get(f"{live_server.url}/admin/blobs/blob/{blob.pk}/change/")
    wait_for(browser, "#content-main")
    assert_policy_holds_without_violations(browser, "change form")

    browser.get(f"{live_server.url}/files/")
    wait_for(browser, "#result_list")
    assert_policy_holds_without_violations(browser, "/files/")


# "Try it out" on POST /secure/files/ with the browser's session, through the init script's request
# interceptor (which adds the CSRF token from the page's data block), and once without it.
TRY_UPLOAD = """
const [intercept, done] = [arguments[0], arguments[arguments.length - 1]];
const request = {method: "POST", credentials: "same-origin", headers: {"Content-Type": "text/plain"}};
if (intercept) ui.getConfigs().requestInterceptor(request);
fetch("/secure/files/?filename=tried.txt", {...request, body: "tried"}).then((r) => done(r.status));
"""


def test_swagger_ui_works_under_the_policy_with_no_violation(browser, live_server):
    from selenium.webdriver.common.by import By

    get_user_model().objects.create_superuser("boss", "boss@example.com", "correct horse battery")
    browser = collecting_browser(browser)
    browser.get(f"{live_server.url}/accounts/login/")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("correct horse battery")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(browser, "#result_list")  # landed on /files/

    browser.get(f"{live_server.url}/api/docs/")
    # Operations appear only once the static init script has run and the schema has been fetched and drawn.
    wait_for(browser, ".opblock")
    assert "/secure/files/{blob_id}/stream" in browser.page_source
    assert_policy_holds_without_violations(browser, "/api/docs/")
    assert browser.execute_async_script(TRY_UPLOAD, False) == 403  # Django's CSRF check: no token
    assert browser.execute_async_script(TRY_UPLOAD, True) == 201


def stock_docs_urls() -> list[Any]:
    from drf_spectacular.views import SpectacularSwaggerView

    from erphub.urls import urlpatterns

    return [path("stock-docs/", SpectacularSwaggerView.as_view(url_name="api-schema")), *urlpatterns]


urlpatterns = stock_docs_urls()  # ROOT_URLCONF of the test below


def test_drf_spectaculars_stock_page_would_break_it(browser, live_server, settings):
    # The control: the page drf-spectacular ships (inline init script and <style>) is refused under the same
    # policy and the collection above reports it, so "no violation" above means something.
    settings.ROOT_URLCONF = __name__
    browser = collecting_browser(browser)
    browser.get(f"{live_server.url}/stock-docs/")
    wait_for(browser, "#swagger-ui")
    found = violations(browser)
    assert any(v.startswith("script-src-elem inline") for v in found), found
    assert any(v.startswith("style-src-elem inline") for v in found), found
    assert browser.find_elements("css selector", ".opblock") == []  # Swagger UI never started
