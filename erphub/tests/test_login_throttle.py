"""Failed logins are throttled on every login path, per username and address, in the shared cache."""

from __future__ import annotations

import pytest
import redis
from django.core.cache import caches
from django.test import Client
from django.urls import reverse

from blobs.tests.factories import make_user
from erphub import login_throttle, roles

pytestmark = pytest.mark.django_db

PASSWORD = "pw-123456!"


@pytest.fixture(autouse=True)
def three_strikes(settings):
    settings.LOGIN_THROTTLE = {"FAILURES": 3, "WINDOW_SECONDS": 120}


@pytest.fixture
def dave():
    return make_user("dave", perms=(), roles=(roles.AUDITORS,))


def token(client: Client, password: str, address: str = "10.0.0.1"):
    return client.post(
        reverse("token-obtain"),
        {"username": "dave", "password": password},
        content_type="application/json",
        REMOTE_ADDR=address,
    )


def test_api_logins_are_locked_after_repeated_failures_even_with_the_right_password(dave):
    client = Client()
    for _ in range(3):
        assert token(client, "wrong").status_code == 401
    locked = token(client, PASSWORD)
    assert locked.status_code == 429
    assert locked.json()["code"] == "throttled"
    assert locked["Retry-After"] == "120"
    # Another address is not locked out by someone else's guessing.
    assert token(client, PASSWORD, address="10.0.0.2").status_code == 200


def test_a_success_before_the_limit_resets_the_count(dave):
    client = Client()
    for _ in range(2):
        token(client, "wrong")
    assert token(client, PASSWORD).status_code == 200
    for _ in range(2):
        token(client, "wrong")
    assert token(client, PASSWORD).status_code == 200


@pytest.mark.parametrize("login_url", ["/accounts/login/", "/admin/login/"])
def test_session_login_forms_share_the_lock(dave, login_url):
    client = Client(REMOTE_ADDR="10.0.0.9")
    for _ in range(3):
        client.post(login_url, {"username": "dave", "password": "wrong"}, REMOTE_ADDR="10.0.0.9")
    refused = client.post(login_url, {"username": "dave", "password": PASSWORD}, REMOTE_ADDR="10.0.0.9")
    assert refused.status_code == 200  # the form again, with the usual "incorrect" message
    assert "_auth_user_id" not in client.session
    # The API sees the same lock: the counter is shared by every login path.
    assert token(Client(), PASSWORD, address="10.0.0.9").status_code == 429


def test_usernames_are_not_stored_in_the_cache_in_clear(dave):
    key = login_throttle._key("dave", "10.0.0.1")
    assert "dave" not in key
    assert key == login_throttle._key("DAVE", "10.0.0.1")  # case does not buy more attempts


def test_with_redis_the_counter_is_shared_between_processes(dave, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/11",
        }
    }
    caches["default"].clear()
    try:
        for _ in range(3):
            token(Client(), "wrong")
        # Another process (here: a plain Redis client) sees the same counter.
        raw = redis.Redis.from_url("redis://127.0.0.1:6379/11")
        try:
            keys = [k for k in raw.keys("*") if b"login-attempts" in k]
            assert len(keys) == 1
            assert int(raw.get(keys[0])) == 3
            assert 0 < raw.ttl(keys[0]) <= 120
        finally:
            raw.close()
        assert token(Client(), PASSWORD).status_code == 429
    finally:
        caches["default"].clear()
        caches["default"].close()


def test_behind_a_trusted_proxy_the_real_client_address_counts(dave, settings):
    settings.AUDIT = {**settings.AUDIT, "TRUSTED_PROXIES": ["10.9.0.0/16"]}

    def via_proxy(password: str, client: str):
        return Client().post(
            reverse("token-obtain"),
            {"username": "dave", "password": password},
            content_type="application/json",
            REMOTE_ADDR="10.9.0.5",
            HTTP_X_FORWARDED_FOR=client,
        )

    for _ in range(3):
        assert via_proxy("wrong", "203.0.113.7").status_code == 401
    assert via_proxy(PASSWORD, "203.0.113.7").status_code == 429
    # Another client behind the same balancer is not locked out by the first one's guessing.
    assert via_proxy(PASSWORD, "198.51.100.2").status_code == 200
    # An untrusted peer cannot pick its address with a forged header.
    for _ in range(3):
        token(Client(), "wrong", address="192.0.2.1")
    forged = Client().post(
        reverse("token-obtain"),
        {"username": "dave", "password": PASSWORD},
        content_type="application/json",
        REMOTE_ADDR="192.0.2.1",
        HTTP_X_FORWARDED_FOR="198.51.100.99",
    )
    assert forged.status_code == 429


def test_the_attempt_is_counted_before_the_password_is_checked(dave, monkeypatch):
    """What makes a burst of concurrent guesses useless: each request takes its number before the slow
    password hash, so only the first FAILURES of them ever reach it."""
    from django.contrib.auth.backends import ModelBackend

    seen: list[int] = []
    real = ModelBackend.authenticate

    def spy(self, request, username=None, password=None, **kw):
        seen.append(login_throttle.attempts(username="dave", address="10.0.0.1"))
        return real(self, request, username=username, password=password, **kw)

    monkeypatch.setattr(ModelBackend, "authenticate", spy)
    for _ in range(5):
        token(Client(), "wrong")
    assert seen == [1, 2, 3]  # the 4th and 5th never reached the password check


@pytest.mark.parametrize(
    ("other", "locked"),
    [("2001:db8:0:0:ffff::9", True), ("2001:db8:0:1::1", False), ("10.0.0.1", False)],
)
def test_ipv6_clients_are_counted_per_64(dave, other, locked):
    for _ in range(3):
        token(Client(), "wrong", address="2001:db8::1")
    assert (token(Client(), PASSWORD, address=other).status_code == 429) is locked


def test_a_username_that_is_not_text_is_a_400(dave):
    response = Client().post(
        reverse("token-obtain"), '{"username": "\\ud800", "password": "x"}', content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("username:")
