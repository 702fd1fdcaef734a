"""Records as the tests build them: an address as the halves a record stores."""

from __future__ import annotations

import ipaddress

from leireye.record import IPV4_MAPPED_LO


def ip_to_halves(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, int]:
    """An address as the `(hi, lo)` pair stored in a record (IPv4 stored IPv4-mapped)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return 0, IPV4_MAPPED_LO | int(ip)
    value = int(ip)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF
