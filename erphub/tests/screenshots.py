"""``make screenshots``: the staff pages in Chromium at 1280 px, as PNG files a maintainer can look through.

Not part of the suite (pytest collects ``test_*.py`` only): the Makefile runs this file by name, and CI runs
it too (.ci/run). The pictures are not compared pixel by pixel, but the run fails if a page errors: a status
other than the one expected, a script error or failed load in the console, a Content-Security-Policy
violation, or a page whose landmark never appears. Every page is shot before the run fails, so the broken
one can be seen.

Files go to ``$SCREENSHOT_DIR`` (the Makefile: ``var/screenshots``, gitignored). To add a page, add a ``Page``
to ``PAGES``: a name (the file's), its path (or a function of the ``Scene``, the data made for the run), the
CSS selector that shows it rendered, and optionally the status it answers with, a ``prepare`` step that
acts on the page before the shot (open a menu, type into a search, start an upload) and an ``after`` step
that undoes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from audit.holds import legal_hold_create
from audit.models import AuditEvent
from blobs.models import Blob
from blobs.services import blob_transfer_ownership, blob_verify
from blobs.storage import blob_store
from blobs.tests.browser import (
    admin_login,
    document_status,
    page_problems,
    start_browser,
    wait_for,
    watch_pages,
)
from blobs.tests.factories import make_blob, make_user, pattern
from core.actors import Actor

pytestmark = [pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"
WIDTH = 1280
HEIGHT = 900
# Tall pages are shot whole, up to this height (a 10,000-row list would make a useless picture).
MAX_HEIGHT = 4000


@dataclass
class Scene:
    """What the pages show: a few people and files, one of them damaged, with some history."""

    boss: Any
    report: Blob
    damaged: Blob
    files: Path  # a scratch directory, for files to upload
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    name: str
    path: str | Callable[[Scene], str]
    ready: str  # a CSS selector present once the page has rendered
    status: int = 200
    prepare: Callable[[Any, Scene], None] | None = None  # (driver, scene), before the shot
    after: Callable[[Any, Scene], None] | None = None  # after it (cancel what prepare started)

    def url(self, scene: Scene) -> str:
        return self.path(scene) if callable(self.path) else self.path


def blob_page(suffix: str, attr: str = "report") -> Callable[[Scene], str]:
    def path(scene: Scene) -> str:
        blob = scene.extra[attr] if attr in scene.extra else getattr(scene, attr)
        return f"/admin/blobs/blob/{blob.pk}/{suffix}"

    return path


def extra_page(key: str, template: str) -> Callable[[Scene], str]:
    return lambda scene: template.format(scene.extra[key])


def search_owner(driver: Any, scene: Scene) -> None:
    """Open the owner's autocomplete and type, so the shot shows the matches."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.CSS_SELECTOR, ".field-owner .select2-selection").click()
    wait_for(driver, ".select2-search__field").send_keys("a")
    # select2 shows "Searching…" until the answer for the typed term is in.
    WebDriverWait(driver, 10).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR, ".select2-results__option.loading-results")
        and d.find_elements(By.CSS_SELECTOR, ".select2-results__option")
    )


# The upload's progress text while its bar is between its ends (null before and after).
PROGRESS_MIDWAY = """
const bar = document.querySelector(".upload-progress progress");
return bar && bar.value > 10 && bar.value < 90 ? bar.value : null;
"""


def throttle_uploads(driver: Any, bytes_per_second: int | None) -> None:
    driver.execute_cdp_cmd("Network.enable", {})
    conditions = {"offline": False, "latency": 0, "downloadThroughput": -1}
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions", {**conditions, "uploadThroughput": bytes_per_second or -1}
    )


def start_upload(driver: Any, scene: Scene) -> None:
    """Send a file over a slow link and stop when the bar is part-way."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    source = scene.files / "site survey.mp4"
    source.write_bytes(pattern(2 * 1024**2, seed=9))
    throttle_uploads(driver, 256 * 1024)
    driver.find_element(By.NAME, "file").send_keys(str(source))
    driver.find_element(By.NAME, "_save").click()
    WebDriverWait(driver, 20, poll_frequency=0.05).until(lambda d: d.execute_script(PROGRESS_MIDWAY))


def cancel_upload(driver: Any, scene: Scene) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, ".upload-progress button").click()
    wait_for(driver, ".upload-progress-error")
    throttle_uploads(driver, None)


PAGES: list[Page] = [
    Page("admin-index", "/admin/", "#content-main"),
    Page("blobs-list", "/admin/blobs/blob/", "#result_list"),
    Page("blobs-list-no-match", "/admin/blobs/blob/?q=no-such-file", ".blob-empty"),
    Page("blobs-list-integrity-failed", "/admin/blobs/blob/?integrity=failed", "#result_list"),
    Page("blob-add", "/admin/blobs/blob/add/", "#blob_form"),
    Page("blob-add-owner-search", "/admin/blobs/blob/add/", "#blob_form", prepare=search_owner),
    Page("blob-add-uploading", "/admin/blobs/blob/add/", "#blob_form", prepare=start_upload,
         after=cancel_upload),
    Page("blob-change", blob_page("change/"), "#blob_form"),
    Page("blob-change-integrity-failed", blob_page("change/", "damaged"), "#blob_form"),
    Page("blob-history", blob_page("history/"), "#change-history"),
    Page("blob-download-failed", blob_page("download/", "damaged"), ".blob-download-failed", status=500),
    Page("blob-history-damaged", blob_page("history/", "damaged"), "#change-history"),
    Page("key-status", "/admin/kms/keyrotation/", "#content-main"),
    Page("audit-log", "/admin/audit/auditevent/", "#result_list"),
    Page("audit-event", extra_page("upload_event", "/admin/audit/auditevent/{}/change/"), "#content-main"),
    Page("legal-holds", "/admin/audit/legalhold/", "#result_list"),
    Page("legal-hold-add", "/admin/audit/legalhold/add/", "#content-main"),
    Page("legal-hold-release", extra_page("hold", "/admin/audit/legalhold/{}/release/"), "#content-main"),
    Page("blob-delete-held", blob_page("delete/", "held"), "#content"),
    Page("groups", "/admin/auth/group/", "#result_list"),
    Page("user-change", extra_page("alice", "/admin/auth/user/{}/change/"), "#user_form"),
    Page("my-files", "/files/", "#content"),
]


def make_scene(files: Path) -> Scene:
    user_model = get_user_model()
    boss = user_model.objects.create_superuser("boss", "boss@example.com", PASSWORD)
    boss.first_name, boss.last_name = "Bea", "Boss"
    boss.save()
    alice = make_user("alice", first_name="Alice", last_name="Archer")
    bob = make_user("bob", first_name="Bob", last_name="Baker")
    report = make_blob(
        alice, pattern(3_500_000), filename="Q3 board pack.pdf", content_type="application/pdf"
    )
    make_blob(bob, pattern(48_000, seed=2), filename="holiday photo.jpg", content_type="image/jpeg")
    make_blob(boss, pattern(700, seed=3), filename="notes.txt", content_type="text/plain")
    damaged = make_blob(alice, pattern(90_000, seed=4), filename="ledger 2025.xlsx")
    # Its object changed in storage after the upload: the next read fails authentication.
    path = Path(blob_store(damaged.storage_alias).storage.location) / damaged.storage_name
    raw = bytearray(path.read_bytes())
    raw[60] ^= 0x80
    path.write_bytes(bytes(raw))
    blob_verify(blob=damaged)
    blob_verify(blob=report)
    blob_transfer_ownership(blob=report, new_owner=bob)
    held = make_blob(bob, pattern(5_000, seed=5), filename="contract (disputed).docx")
    hold = legal_hold_create(
        actor=Actor.system("legal"), reason="Case 2026-114: keep until the court rules",
        target_type="blob", target_id=str(held.pk),
    )
    uploads = AuditEvent.objects.filter(action="blob.upload", target_id=str(report.pk))
    upload_event = uploads.latest("sequence")
    scene = Scene(boss=boss, report=report, damaged=damaged, files=files)
    scene.extra.update(held=held, hold=hold.pk, upload_event=upload_event.pk, alice=alice.pk)
    return scene


def shoot(driver: Any, target: Path) -> None:
    # The whole page at 1280 px (the window cannot grow past the headless screen; the emulated one can).
    height = int(driver.execute_script("return document.documentElement.scrollHeight;"))
    metrics = {"width": WIDTH, "height": min(max(HEIGHT, height), MAX_HEIGHT), "deviceScaleFactor": 1}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "mobile": False})
    try:
        driver.save_screenshot(str(target))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_screenshots(live_server, tmp_path) -> None:
    from selenium.common.exceptions import WebDriverException

    out = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    (tmp_path / "files").mkdir()
    scene = make_scene(tmp_path / "files")
    driver = watch_pages(start_browser(tmp_path / "profile"))
    failures: list[str] = []
    try:
        admin_login(driver, live_server.url, "boss", PASSWORD)
        page_problems(driver)  # start each page with an empty console
        for page in PAGES:
            url = f"{live_server.url}{page.url(scene)}"
            driver.get(url)
            try:
                wait_for(driver, page.ready, timeout=10)
                if page.prepare is not None:
                    page.prepare(driver, scene)
            except WebDriverException as exc:  # reported with the page's name; the other pages go on
                failures.append(f"{page.name}: {page.ready!r} never appeared ({type(exc).__name__})")
            status = document_status(driver)
            if status != page.status:
                failures.append(f"{page.name}: HTTP {status}, expected {page.status}")
            # A page answered with an error status on purpose logs its own load as a failure.
            ignore = (url,) if page.status >= 400 else ()
            failures += [f"{page.name}: {problem}" for problem in page_problems(driver, ignore=ignore)]
            shoot(driver, out / f"{page.name}.png")
            if page.after is not None:
                try:
                    page.after(driver, scene)
                except WebDriverException as exc:
                    failures.append(f"{page.name}: its clean-up failed ({type(exc).__name__})")
    finally:
        driver.quit()
    print(f"\n{len(PAGES)} screenshots in {out} ({timezone.now():%Y-%m-%d %H:%M} UTC)")
    assert failures == [], "\n".join(failures)
