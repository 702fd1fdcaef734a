"""Which `Host` headers the sensor answers: the guard against DNS rebinding.

A page on evil.example whose DNS name the attacker then points at the sensor's address (its
loopback, or an address on the victim's network) is, to the victim's browser, same-origin with
the sensor: it can read `/health`, try passwords on the login, open the WebSocket, from inside a
network the attacker cannot reach. Its requests still say `Host: evil.example`, because a
browser sends the name in its address bar; so a sensor that answers only to its own names
closes the hole. The rules, in order:

- no `Host` header (an HTTP/1.0 script): allowed, a browser always sends one;
- `web.allowed_hosts` contains "*": anything is allowed;
- not a valid `host[:port]`: refused;
- an IP address (IPv4, or IPv6 in brackets): allowed; a rebinding page has a name, never an
  address, so an address in `Host` was typed by the user;
- `localhost` and names under `.localhost`: allowed (browsers resolve them to loopback
  themselves, never through DNS);
- the sensor's own names (the bound `web.host` when it is a name, the machine's hostname and
  fully qualified name) and the names in `web.allowed_hosts`, where ".example.org" means that
  name and every name under it: allowed;
- anything else: refused.

Names compare in lower case, without a trailing dot; the port is not compared.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

_NAME: Final = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_PORT: Final = re.compile(r"[0-9]{0,5}")


def host_name(header: str) -> str | None:
    """The host in a `Host` header: a lower-case name without its trailing dot, or an IP
    address in its compressed form (IPv6 without brackets); None when the header is not a valid
    `host[:port]`."""
    text = header.lower()
    if text.startswith("["):
        address, bracket, port = text[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and _PORT.fullmatch(port[1:]))):
            return None
        try:
            return str(ipaddress.IPv6Address(address))
        except ValueError:
            return None
    name, colon, port = text.partition(":")
    if colon and not _PORT.fullmatch(port):
        return None
    name = name.removesuffix(".")
    return name if _NAME.fullmatch(name) else None


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    names: frozenset[str]
    domains: tuple[str, ...]  # ".example.org": that name and every name under it
    any_host: bool = False

    @classmethod
    def build(cls, allowed: Iterable[str], own: Iterable[str]) -> HostPolicy:
        """From `web.allowed_hosts` and the sensor's own names (entries that are not valid names
        are skipped: the configuration refuses them before this is built)."""
        allowed = tuple(allowed)
        names: set[str] = set()
        domains: list[str] = []
        for entry in (*allowed, *own):
            if entry == "*":
                continue
            domain = entry.startswith(".")
            name = host_name(entry.removeprefix(".")) if entry.strip() else None
            if name is None:
                continue
            if domain:
                domains.append(name)
            else:
                names.add(name)
        return cls(frozenset(names), tuple(domains), any_host="*" in allowed)

    def allows(self, header: str | None) -> bool:
        if header is None or self.any_host:
            return True
        host = host_name(header)
        if host is None:
            return False
        if is_address(host) or host == "localhost" or host.endswith(".localhost"):
            return True
        if host in self.names:
            return True
        return any(host == domain or host.endswith("." + domain) for domain in self.domains)
