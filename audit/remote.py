"""Who is on the other end of a request: the client address behind trusted proxies, and request ids.

Pure (no Django) so that the rules are table-tested. ``X-Forwarded-For`` is believed only from a peer
inside ``TRUSTED_PROXIES`` and only as far as the chain of trusted hops goes, walking from the right (the
hop nearest to us) to the left: anything left of the first untrusted hop may be forged by the client.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

REQUEST_ID_MAX_LENGTH = 64
_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:@/+=-]")


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) from settings; a malformed entry raises ValueError naming it."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (use CIDR notation, e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def parse_address(value: str) -> Address | None:
    """An address as it may appear in REMOTE_ADDR or one X-Forwarded-For hop; None if it is not one.

    Accepts ``[v6]`` and ``[v6]:port`` and ``v4:port`` (some proxies append ports); IPv4-mapped IPv6 is
    reported as the IPv4 address so that one client is always written the same way.
    """
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The client's address as text, or None if even the peer's address is unusable."""
    current = parse_address(peer or "")
    if current is None:
        return None
    if not forwarded_for or not _trusted(current, trusted):
        return str(current)
    for hop in reversed(forwarded_for.split(",")):
        address = parse_address(hop)
        if address is None:
            break  # a garbled hop: stop at the last address a trusted proxy vouched for
        current = address
        if not _trusted(address, trusted):
            break
    return str(current)


def sanitize_request_id(value: str | None) -> str | None:
    """The caller's request id made safe to store, log and echo: unsafe characters removed, length capped.
    None when nothing usable is left (the caller then generates one)."""
    if not value:
        return None
    cleaned = _REQUEST_ID_UNSAFE.sub("", value)[:REQUEST_ID_MAX_LENGTH]
    return cleaned or None


def new_request_id() -> str:
    return uuid.uuid4().hex
