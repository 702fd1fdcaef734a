"""Who the client is behind a reverse proxy: forwarding headers, believed from trusted proxies only.

Behind nginx or Caddy every request comes from the proxy's address, and the client's own is in
`X-Forwarded-For`, which each proxy extends with the address it received the request from. But
any client can send that header itself. Believed from an ordinary peer, it lets a client choose
the address that the login limiter counts and the log names (25 failed logins from one place,
each with another `X-Forwarded-For`, never reached the per-address limit), and
`X-Forwarded-Proto: https` makes a plain request pass for https (the WebSocket `Origin` check
compares schemes).

So: from a peer listed in `web.trusted_proxies` (addresses or networks), the client is the
rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (the entries left of it
were written by the client or by proxies we do not know), and `X-Forwarded-Proto` sets the
scheme when it is exactly one of http, https, ws, wss. From anyone else these headers are
ignored, and so are `X-Forwarded-Host`, `X-Real-IP` and `Forwarded` (RFC 7239), which the
sensor never reads: `FORWARDING` lists what the web tier strips from such requests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDING: Final = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip", b"forwarded"}
)
_SCHEMES: Final = frozenset({"http", "https", "ws", "wss"})


def trusted_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """`web.trusted_proxies` as networks (an address is a network of one); ValueError names a bad
    entry."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def parse_address(text: str) -> Address | None:
    """An address as a forwarding header writes it: `1.2.3.4`, `1.2.3.4:5678`, `::1`,
    `[::1]:5678`; IPv4-mapped IPv6 counts as IPv4. None for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def forwarded_client(
    peer: str, forwarded_for: Sequence[str], networks: Sequence[Network]
) -> str | None:
    """The client's address when `peer` is a trusted proxy and `forwarded_for` (the values of
    every `X-Forwarded-For` header, in order) names one; None to keep the peer. An entry that is
    not an address ends the walk: the hop that passed it on is the client as far as we know."""
    here = parse_address(peer)
    if not is_trusted(here, networks):
        return None
    client: Address | None = None
    for entry in reversed(",".join(forwarded_for).split(",")):
        address = parse_address(entry)
        if address is None:
            break
        client = address
        if not is_trusted(address, networks):
            break
    return None if client is None else str(client)


def forwarded_scheme(
    peer: str, forwarded_proto: Sequence[str], networks: Sequence[Network], websocket: bool
) -> str | None:
    """The scheme a trusted proxy says the client used (ws/wss for a WebSocket); None to keep
    the connection's own."""
    if len(forwarded_proto) != 1 or not is_trusted(parse_address(peer), networks):
        return None
    scheme = forwarded_proto[0].strip().lower()
    if scheme not in _SCHEMES:
        return None
    if websocket:
        return scheme.replace("http", "ws")
    return scheme.replace("ws", "http")
