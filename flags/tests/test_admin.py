"""The rollout admin for Rollout operators: exact permissions, percentages, review with cohort preview,
stages with reasons and skip confirmation, optimistic locking, explain, history, reshuffle, retirement."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from erphub import roles
from flags import services
from flags.bucketing import in_rollout
from flags.models import SECURE_BLOB_STREAMING
from flags.tests.factories import make_flag, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_snapshot():
    services.flag_cache_reset()


@pytest.fixture
def operator():
    return make_user("olga", groups=(roles.ROLLOUT_OPERATORS,))


@pytest.fixture
def client(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def flag():
    return make_flag("new_thing", rollout_basis_points=0)


def change_url(flag) -> str:
    return reverse("admin:flags_flag_change", args=[flag.pk])


def form_data(flag, **overrides) -> dict:
    flag.refresh_from_db()
    data = {
        "version": flag.version,
        "description": flag.description,
        "percentage": f"{flag.rollout_basis_points / 100:.2f}",
        "internal_group": flag.internal_group_id or "",
        "beta_group": flag.beta_group_id or "",
        "allow_users": "",
        "deny_users": "",
        "reason": "per the rollout plan",
    }
    for name in ("enabled", "kill_switch", "beta_enabled"):
        if getattr(flag, name):
            data[name] = "on"
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def review_then_save(client, flag, **overrides):
    """Submit once (the review page), then confirm with the token it issued."""
    first = client.post(change_url(flag), form_data(flag, **overrides))
    assert first.status_code == 200, first.content[:500]
    token = re.search(rb'name="confirm" value="([0-9a-f]+)"', first.content)
    assert token, first.content.decode()[:3000]
    data = form_data(flag, **overrides)
    data["confirm"] = token.group(1).decode()
    return first, client.post(change_url(flag), data, follow=True)


def test_the_role_has_exactly_view_and_change_flag():
    group = Group.objects.get(name=roles.ROLLOUT_OPERATORS)
    perms = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
    assert perms == {"flags.view_flag", "flags.change_flag"}


def test_the_list_shows_state_percentage_and_stage(client, flag):
    make_flag("half", rollout_basis_points=5_000, beta_enabled=True)
    make_flag("dark", enabled=False, rollout_basis_points=1_234)
    page = client.get(reverse("admin:flags_flag_changelist")).content.decode()
    assert SECURE_BLOB_STREAMING in page
    assert "50.00 %" in page
    assert "12.34 %" in page
    assert "100.00 %" in page
    assert ">Off<" in page
    assert ">On<" in page
    assert "Add flag" not in page  # flags come with migrations


def test_a_change_is_reviewed_with_a_cohort_preview_before_it_is_saved(client, flag, operator):
    users = [operator, *(make_user() for _ in range(30))]
    first, saved = review_then_save(client, flag, percentage="40.00")
    expected = sum(in_rollout(flag.salt, u.pk, 4_000) for u in users)
    active = 30 + 1  # and the operator
    page = first.content.decode()
    assert f"{expected} of {active} active users would be enabled" in page, re.findall(
        r"\d+ of \d+ active[^<]*", page
    )
    assert "Confirm and save" in first.content.decode()
    assert "Saved:" in saved.content.decode()
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 4_000
    event = AuditEvent.objects.get(action="flag.update")
    assert event.actor == "olga"
    assert event.details["reason"] == "per the rollout plan"
    assert event.details["changes"]["rollout_basis_points"] == {"old": 0, "new": 4_000}


def test_the_review_alone_saves_nothing(client, flag):
    client.post(change_url(flag), form_data(flag, percentage="40.00"))
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 0
    assert not AuditEvent.objects.filter(action__startswith="flag.").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("12.345", "no more than 2 decimal places"),
        ("100.01", "less than or equal to 100"),
        ("-1", "greater than or equal to 0"),
        ("lots", "Enter a number"),
    ],
)
def test_bad_percentages_are_refused_with_a_message(client, flag, value, message):
    response = client.post(change_url(flag), form_data(flag, percentage=value))
    assert response.status_code == 200
    assert message in response.content.decode()
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 0


def test_a_reason_is_mandatory(client, flag):
    response = client.post(change_url(flag), form_data(flag, percentage="10", reason=""))
    assert "This field is required" in response.content.decode()


def test_percentages_with_two_decimals_are_kept_exactly(client, flag):
    review_then_save(client, flag, percentage="12.34")
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 1_234


def test_a_stage_skip_in_the_form_asks_for_confirmation(client, flag):
    # Internal (enabled, 0 %) straight to 100 %: skips Beta, 25 % and 50 %.
    first, saved = review_then_save(client, flag, percentage="100", beta_enabled="on")
    assert "This change skips stages: Beta, 25 %, 50 %" in first.content.decode()
    assert "confirm the skip" in saved.content.decode()
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 0
    first, saved = review_then_save(client, flag, percentage="100", beta_enabled="on", confirm_skip="on")
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 10_000


def test_the_second_of_two_concurrent_saves_gets_a_message_and_overwrites_nothing(operator, flag):
    other = make_user("bob", groups=(roles.ROLLOUT_OPERATORS,))
    alice_client, bob_client = Client(), Client()
    alice_client.force_login(operator)
    bob_client.force_login(other)
    stale = form_data(flag)  # both opened the page at this version
    review_then_save(bob_client, flag, percentage="25.00")
    data = {**stale, "percentage": "5.00"}
    first = alice_client.post(change_url(flag), data)
    token = re.search(rb'name="confirm" value="([0-9a-f]+)"', first.content).group(1).decode()
    done = alice_client.post(change_url(flag), {**data, "confirm": token}, follow=True)
    page = done.content.decode()
    assert "Bob changed new_thing" in page
    assert "nothing was saved" in page
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 2_500
    assert AuditEvent.objects.filter(action="flag.update").count() == 1


def test_one_click_stage_with_preview_and_mandatory_reason(client, flag):
    url = reverse("admin:flags_flag_stage", args=[flag.pk, "beta"])
    page = client.get(url).content.decode()
    assert "active users would be enabled" in page
    assert client.post(url, {"version": flag.version, "reason": ""}).status_code == 200
    flag.refresh_from_db()
    assert not flag.beta_enabled
    done = client.post(url, {"version": flag.version, "reason": "internal stage was clean"}, follow=True)
    assert "Moved to Beta" in done.content.decode()
    flag.refresh_from_db()
    assert flag.beta_enabled
    event = AuditEvent.objects.get(action="flag.stage")
    assert event.details["stage"] == "beta"


def test_a_stage_skip_asks_for_confirmation(client, flag):
    url = reverse("admin:flags_flag_stage", args=[flag.pk, "100"])
    page = client.get(url).content.decode()
    assert "This move skips stages: Beta, 25 %, 50 %" in page
    refused = client.post(url, {"version": flag.version, "reason": "yolo"})
    assert "confirm the skip" in refused.content.decode()
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 0
    client.post(url, {"version": flag.version, "reason": "incident fix", "confirm_skip": "on"})
    flag.refresh_from_db()
    assert flag.rollout_basis_points == 10_000


def test_explain_says_why_step_by_step(client, flag):
    vip = make_user("vip")
    flag.allow_users.add(vip)
    page = client.get(reverse("admin:flags_flag_explain", args=[flag.pk]), {"user": "vip"}).content.decode()
    assert "vip is IN (allow)" in page
    assert "deny list" in page
    assert "allow list" in page
    page = client.get(reverse("admin:flags_flag_explain", args=[flag.pk]), {"user": "ghost"}).content.decode()
    assert "No user named" in page


def test_history_comes_from_the_audit_log(client, flag):
    review_then_save(client, flag, percentage="1.00")
    page = client.get(change_url(flag)).content.decode()
    assert "flag.update" in page
    assert "per the rollout plan" in page
    assert "rollout_basis_points: 0 → 100" in page
    full = client.get(reverse("admin:flags_flag_history", args=[flag.pk])).content.decode()
    assert "flag.update" in full


def test_kill_switch_and_reshuffle_are_audited(client, flag):
    client.post(reverse("admin:flags_flag_kill", args=[flag.pk]), {"version": flag.version, "reason": "5xx"})
    flag.refresh_from_db()
    assert flag.kill_switch
    old_salt = flag.salt
    client.post(
        reverse("admin:flags_flag_reshuffle", args=[flag.pk]), {"version": flag.version, "reason": "skewed"}
    )
    flag.refresh_from_db()
    assert flag.salt != old_salt
    assert set(AuditEvent.objects.values_list("action", flat=True)) >= {"flag.kill_switch", "flag.reshuffle"}


def test_retire_only_when_eligible(client, settings):
    settings.FLAGS = {**settings.FLAGS, "RETIRE_AFTER_DAYS": 7}
    young = make_flag("young", rollout_basis_points=10_000, beta_enabled=True, changed_at=timezone.now())
    assert 'id="retire"' not in client.get(change_url(young)).content.decode()
    client.post(
        reverse("admin:flags_flag_retire", args=[young.pk]), {"version": young.version, "reason": "x"}
    )
    young.refresh_from_db()
    assert not young.retired
    old = make_flag(
        "old", rollout_basis_points=10_000, beta_enabled=True, changed_at=timezone.now() - timedelta(days=8)
    )
    assert 'id="retire"' in client.get(change_url(old)).content.decode()
    client.post(
        reverse("admin:flags_flag_retire", args=[old.pk]), {"version": old.version, "reason": "stable"}
    )
    old.refresh_from_db()
    assert old.retired
    assert "no longer changes" in client.get(change_url(old)).content.decode()


def test_other_staff_roles_cannot_change_flags(flag):
    auditor = make_user(groups=(roles.AUDITORS,))
    client = Client()
    client.force_login(auditor)
    assert client.get(change_url(flag)).status_code == 403
    assert client.post(reverse("admin:flags_flag_kill", args=[flag.pk]), {"reason": "x"}).status_code == 403
    flag.refresh_from_db()
    assert not flag.kill_switch
