"""Sealed detail fields: envelope-encrypted with the product's KMS providers, bound to the field name,
covered by the chain as ciphertext."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from audit import sealed
from audit.actors import Actor
from audit.chain import verify_chain
from audit.recording import audit_record

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
