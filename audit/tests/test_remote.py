"""Client address behind trusted proxies, and request id sanitizing: table tests of the pure rules."""

from __future__ import annotations

import pytest

from audit.remote import client_address, parse_networks, sanitize_request_id

TRUSTED = parse_networks(["10.0.0.0/8", "fd00::/8", "127.0.0.1"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # No proxies configured or an untrusted peer: X-Forwarded-For is ignored (it may be forged).
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),
        ("198.51.100.7", "10.0.0.1, 1.2.3.4", "198.51.100.7"),
        # A trusted peer: walk right to left to the first untrusted hop.
        ("10.0.0.2", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # the left hop is the client's claim
        ("10.0.0.2", "198.51.100.7, 10.0.0.5", "198.51.100.7"),  # two trusted proxies in a row
        ("10.0.0.2", "10.0.0.9, 10.0.0.5", "10.0.0.9"),  # every hop trusted: the leftmost
        ("10.0.0.2", "garbage, 198.51.100.7", "198.51.100.7"),
        ("10.0.0.2", "198.51.100.7, garbage", "10.0.0.2"),  # a garbled nearest hop: stop at the peer
        ("10.0.0.2", "", "10.0.0.2"),
        ("10.0.0.2", "198.51.100.7:4711", "198.51.100.7"),
        ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::1"),
        ("fd00::1", "2001:db8::2", "2001:db8::2"),
        ("::ffff:10.0.0.2", "198.51.100.7", "198.51.100.7"),  # IPv4-mapped peer is the IPv4 address
        ("127.0.0.1", "::ffff:198.51.100.7", "198.51.100.7"),
        ("not-an-ip", "1.2.3.4", None),
        (None, None, None),
    ],
)
def test_client_address(peer, xff, expected):
    assert client_address(peer, xff, TRUSTED) == expected


def test_no_trusted_proxies_means_the_peer():
    assert client_address("10.0.0.2", "198.51.100.7", ()) == "10.0.0.2"


def test_bad_network_is_named():
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/33"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc-123", "abc-123"),
        ("req\r\nSet-Cookie: x=1", "reqSet-Cookie:x=1"),
        ("<script>alert(1)</script>", "scriptalert1/script"),
        ("x" * 200, "x" * 64),
        ("ünïcödé", "ncd"),
        ("\x00\x01", None),
        ("", None),
        (None, None),
    ],
)
def test_request_id_sanitizing(value, expected):
    assert sanitize_request_id(value) == expected
