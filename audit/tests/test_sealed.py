"""Sealed detail fields: envelope-encrypted with the product's KMS providers, bound to the field name,
covered by the chain as ciphertext; the data key cache never holds its lock across a KMS call."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag

from audit import sealed
from audit.chain import verify_chain
from audit.recording import audit_record
from core.actors import Actor
from kms.base import WrappedKey
from kms.exceptions import KeyUnavailable
from kms.providers.local import LocalKeyProvider
from kms.registry import get_provider

from .factories import chain_rows

pytestmark = pytest.mark.django_db


def test_round_trip_and_binding_to_the_field(counted_wraps):
    box = sealed.seal("filename", "Ärztlicher Befund.pdf")
    again = sealed.seal("filename", "other.pdf")
    assert sealed.is_sealed(box)
    assert "Befund" not in str(box)
    assert sealed.unseal("filename", box) == "Ärztlicher Befund.pdf"
    assert box["$sealed"]["nonce"] != again["$sealed"]["nonce"]
    assert len(counted_wraps) == 1  # one KMS wrap serves many seals
    with pytest.raises(InvalidTag):
        sealed.unseal("owner", box)  # moved to another field


def test_tampered_ciphertext_is_refused():
    box = sealed.seal("filename", "a.txt")
    ct = box["$sealed"]["ct"]
    box["$sealed"]["ct"] = ("B" if ct[0] != "B" else "C") + ct[1:]
    with pytest.raises(InvalidTag):
        sealed.unseal("filename", box)


def test_the_chain_hashes_the_ciphertext():
    audit_record(
        action="t", actor=Actor.system("test"), details={"filename": sealed.seal("filename", "x.pdf")}
    )
    (row,) = chain_rows()
    assert verify_chain([row]).ok
    assert sealed.unseal("filename", row["details"]["filename"]) == "x.pdf"


def test_a_new_provider_configuration_starts_a_new_data_key(settings, counted_wraps):
    sealed.seal("f", 1)
    settings.KMS_PROVIDERS = {**settings.KMS_PROVIDERS}
    sealed.seal("f", 2)
    assert len(counted_wraps) == 2


# --- the data key cache: no KMS call under the process-wide lock ---------------------------------------


class GatedKeyProvider(LocalKeyProvider):
    """A KMS whose wrap takes as long as the test says: ``wrap`` sets ``entered``, then waits for
    ``release``; the local provider does the real work. Like a cloud KMS it has no key check value, so
    ``kms_wrap`` queries no database from the test's threads. (A test double at the external boundary.)"""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.error: Exception | None = None

    def key_check(self, key_ref: str) -> bytes | None:
        return None

    def wrap(self, data_key: bytes, *, context: Mapping[str, str]) -> WrappedKey:
        self.calls += 1
        self.entered.set()
        if not self.release.wait(timeout=WAIT):
            raise TimeoutError("the test never released the gate")
        if self.error is not None:
            raise self.error
        return super().wrap(data_key, context=context)


WAIT = 10  # seconds: a bound on waiting for a thread that should already be done, never a sleep


class Worker(threading.Thread):
    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as exc:  # handed to the test thread, which asserts on it
            self.error = exc

    def finished(self) -> Worker:
        self.join(timeout=WAIT)
        assert not self.is_alive(), "still waiting"
        return self


def started(target: Callable[[], Any]) -> Worker:
    worker = Worker(target)
    worker.start()
    return worker


@pytest.fixture
def gated(settings) -> Iterator[GatedKeyProvider]:
    """The KMS alias ``gated`` (beside the default ``local``), its gate closed."""
    key = base64.b64encode(os.urandom(32)).decode()
    settings.KMS_PROVIDERS = {
        **settings.KMS_PROVIDERS,
        "gated": {"BACKEND": f"{__name__}.GatedKeyProvider", "OPTIONS": {"keys": f"gk-1:{key}"}},
    }
    provider = get_provider("gated")
    assert isinstance(provider, GatedKeyProvider)
    yield provider
    provider.release.set()  # no thread is left waiting at the gate


@pytest.fixture
def waiting_callers(monkeypatch) -> threading.Condition:
    """Counts callers waiting on another caller's wrap (``waiting_callers.count``)."""
    arrived = threading.Condition()
    arrived.count = 0  # type: ignore[attr-defined]

    class CountedFlight(sealed._Flight):
        def wait(self) -> None:
            with arrived:
                arrived.count += 1  # type: ignore[attr-defined]
                arrived.notify_all()
            super().wait()

    monkeypatch.setattr(sealed, "_Flight", CountedFlight)
    return arrived


def test_the_lock_is_free_while_a_kms_call_is_in_flight(gated):
    cached = sealed._data_key("local")
    slow = started(lambda: sealed._data_key("gated"))
    assert gated.entered.wait(WAIT)  # its wrap is in flight, the gate closed
    # Another key's cache hit, a seal, and a reset do not wait for it; nor does anyone taking the lock.
    assert started(lambda: sealed._data_key("local")).finished().result == cached
    assert started(lambda: sealed.seal("filename", "a.pdf")).finished().error is None
    assert sealed._lock.acquire(timeout=WAIT)
    sealed._lock.release()
    gated.release.set()
    assert slow.finished().error is None
    assert slow.result[1]["provider"] == "gated"


def test_callers_that_need_the_same_new_key_share_one_kms_call(gated, waiting_callers):
    leader = started(lambda: sealed._data_key("gated"))
    assert gated.entered.wait(WAIT)
    others = [started(lambda: sealed._data_key("gated")) for _ in range(3)]
    with waiting_callers:
        assert waiting_callers.wait_for(lambda: waiting_callers.count == 3, timeout=WAIT)
    gated.release.set()
    results = {worker.finished().result[1]["wrapped"] for worker in [leader, *others]}
    assert len(results) == 1  # one data key for all of them
    assert gated.calls == 1


def test_a_failed_kms_call_fails_those_waiting_for_it_and_the_next_caller_tries_again(
    gated, waiting_callers
):
    gated.error = KeyUnavailable("the KMS is down", provider="gated")
    leader = started(lambda: sealed._data_key("gated"))
    assert gated.entered.wait(WAIT)
    other = started(lambda: sealed._data_key("gated"))
    with waiting_callers:
        assert waiting_callers.wait_for(lambda: waiting_callers.count == 1, timeout=WAIT)
    gated.release.set()
    assert isinstance(leader.finished().error, KeyUnavailable)
    assert isinstance(other.finished().error, KeyUnavailable)
    assert gated.calls == 1
    gated.error = None
    assert sealed._data_key("gated")[1]["provider"] == "gated"
    assert gated.calls == 2


def test_a_key_wrapped_across_a_reset_is_not_kept(gated):
    caller = started(lambda: sealed._data_key("gated"))
    assert gated.entered.wait(WAIT)
    assert started(sealed.reset).finished().error is None  # a configuration change does not wait either
    gated.release.set()
    key, header = caller.finished().result
    assert gated.calls == 2  # the key wrapped under the old configuration was dropped; a new one made
    assert sealed._data_key("gated") == (key, header)
    assert gated.calls == 2
