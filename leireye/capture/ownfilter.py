"""The filter the kernel runs: the user's `capture.bpf` with the sensor's own web traffic left out.

Why
---
A capture on the interface that carries the console (`lo` for a local run, `eth0` when
`web.host` is 0.0.0.0) records the sensor's own plaintext HTTP: a JSON login body fits in the
raw bytes kept per packet, so any ANALYST could read an ADMIN's password from a packet's
details, and any VIEWER the start of a `?token=`. Watching the web port also feeds back on
itself (every packet sent to a subscriber is captured and sent again). So, unless
`capture.include_own_traffic` is set, a live capture hands libpcap

    (<capture.bpf>) and not (<own>)                           on most links
    (<capture.bpf>) and not (<own>) and not (vlan and <own>)  on Ethernet

    <own> = tcp and ((src port P and (src host A or ...)) or (dst port P and (dst host A or ...)))

P is the port the supervisor actually bound (so `web.port: 0` works) and the A's are the
addresses it listens on: the bound `web.host`, or every local address when bound to 0.0.0.0 or
`::` (127.0.0.0/8 and fe80::/10 as whole networks, since such a listener answers on all of
them). Only TCP from or to that port on those addresses is left out: the host's own connections
to another server's port P stay visible. The filter runs in the kernel, so the sensor's traffic
never reaches the ring, nor the CPU time of decoding it.

How the parts fit
-----------------
pcap filter `and` and `or` share one precedence and associate to the left, so a trailing
`and not (...)` applies to everything before it; the user's filter is parenthesised anyway and
must balance on its own. libpcap's `vlan` shifts the offsets of every primitive that follows it,
so the VLAN clause comes last, where it shifts nothing of the user's filter; it catches the
sensor's frames when they carry an 802.1Q tag in the packet data (a capture on the parent of a
VLAN interface without tag offload), and exists only on Ethernet links (libpcap refuses `vlan`
elsewhere). Links that carry one IP version only get that version's addresses.

The local addresses of a wildcard listener are read (`ip -json address`) each time a capture
process opens its handle; an address added later is left out only once the capture restarts.
When they cannot be read, or they would make the filter longer than the status block holds,
the sensor's port is left out on every address instead (`tcp port P`), with a warning.

A pcap replay (`capture.pcap`) is not live traffic: its filter is the user's, unchanged.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from leireye.config import CaptureConfig
from leireye.errors import CaptureError
from leireye.ring.status import EFFECTIVE_BPF_BYTES

log = logging.getLogger("leireye.capture")

DLT_EN10MB: Final = 1
_ONE_VERSION: Final = {228: 4, 229: 6}  # DLT_IPV4, DLT_IPV6
_WHOLE_NETWORKS: Final = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("fe80::/10"))


@dataclass(frozen=True)
class WebListener:
    """Where the web server listens: the bound address and port of the supervisor's socket, and
    whether an IPv6 socket also accepts IPv4 (not IPV6_V6ONLY)."""

    host: str
    port: int
    dual_stack: bool = False

    @classmethod
    def of_socket(cls, sock: socket.socket) -> WebListener:
        host, port = sock.getsockname()[:2]
        dual = sock.family == socket.AF_INET6 and not sock.getsockopt(
            socket.IPPROTO_IPV6, socket.IPV6_V6ONLY
        )
        return cls(str(host), int(port), dual)

    @property
    def wildcard(self) -> bool:
        return _address(self.host).is_unspecified


@dataclass(frozen=True)
class OwnTraffic:
    """The sensor's own web traffic: TCP from or to `port` on `addresses` (hosts, or networks
    with a prefix length); no addresses: `port` on any address."""

    port: int
    addresses: tuple[str, ...] = ()


def listener_addresses(listener: WebListener, local: Sequence[str]) -> tuple[str, ...]:
    """The addresses `listener` answers on, given the host's `local` addresses (only used for a
    wildcard listener): sorted, without duplicates, loopback and link-local as whole networks."""
    if not listener.wildcard:
        return (str(_unmapped(_address(listener.host))),)
    versions = {_address(listener.host).version}
    if listener.dual_stack:
        versions.add(4)
    found: set[str] = set()
    for text in local:
        address = _unmapped(_address(text))
        if address.version not in versions:
            continue
        whole = next((n for n in _WHOLE_NETWORKS if address in n), None)
        found.add(str(whole) if whole is not None else str(address))
    return tuple(sorted(found, key=lambda a: (":" in a, a)))


def own_expression(own: OwnTraffic, linktype: int) -> str | None:
    """`<own>` for a link of type `linktype` (DLT); None when none of the addresses can appear
    on such a link."""
    if not own.addresses:
        return f"tcp port {own.port}"
    version = _ONE_VERSION.get(linktype)
    addresses = [a for a in own.addresses if version is None or _version(a) == version]
    if not addresses:
        return None

    def side(direction: str) -> str:
        hosts = " or ".join(f"{direction} {'net' if '/' in a else 'host'} {a}" for a in addresses)
        return f"{direction} port {own.port} and ({hosts})"

    return f"tcp and (({side('src')}) or ({side('dst')}))"


def kernel_filter(user_bpf: str, own: OwnTraffic | None, linktype: int) -> str:
    """The filter to set on a live handle of link type `linktype`: `user_bpf` with `own` left
    out (see the module docstring). CaptureError when the user's parentheses do not balance or
    the result cannot fit the status block."""
    user = user_bpf.strip()
    if own is None:
        composed = user_bpf
    else:
        _check_balanced(user)
        composed = _compose(user, own_expression(own, linktype), linktype)
        if _size(composed) > EFFECTIVE_BPF_BYTES and own.addresses:
            log.warning(
                "leaving out TCP port %d on every address: the filter naming each of the "
                "sensor's %d addresses would be %d bytes, more than %d",
                own.port, len(own.addresses), _size(composed), EFFECTIVE_BPF_BYTES,
            )  # fmt: skip
            composed = _compose(user, own_expression(OwnTraffic(own.port), linktype), linktype)
    if _size(composed) > EFFECTIVE_BPF_BYTES:
        raise CaptureError(
            f"invalid BPF filter: {_size(composed)} bytes with the sensor's own traffic left "
            f"out, more than {EFFECTIVE_BPF_BYTES}"
        )
    return composed


def own_traffic(capture: CaptureConfig, listener: WebListener | None) -> OwnTraffic | None:
    """What a capture with these settings leaves out: None for a replay, with
    `include_own_traffic`, or without a web server. Reads the host's addresses for a wildcard
    listener (the shell around `listener_addresses`)."""
    if capture.pcap is not None or capture.include_own_traffic or listener is None:
        return None
    if not listener.wildcard:
        return OwnTraffic(listener.port, listener_addresses(listener, ()))
    from leireye.capture.interfaces import list_interfaces

    try:
        local = [a["address"] for i in list_interfaces() for a in i["addresses"]]
    except CaptureError as exc:
        log.warning("%s: leaving out TCP port %d on every address", exc, listener.port)
        return OwnTraffic(listener.port)
    return OwnTraffic(listener.port, listener_addresses(listener, local))


def _compose(user: str, own: str | None, linktype: int) -> str:
    if own is None:
        return user
    parts = [f"({user})"] if user else []
    parts.append(f"not ({own})")
    if linktype == DLT_EN10MB:
        parts.append(f"not (vlan and {own})")
    return " and ".join(parts)


def _check_balanced(bpf: str) -> None:
    depth = 0
    for char in bpf:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if depth != 0:
        raise CaptureError(f"invalid BPF filter {bpf!r}: syntax error (unbalanced parentheses)")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text.split("%", 1)[0])  # no IPv6 zone (fe80::1%eth0)


def _unmapped(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address  # ::ffff:a.b.c.d is IPv4 on the wire


def _version(address: str) -> int:
    return ipaddress.ip_network(address).version


def _size(bpf: str) -> int:
    return len(bpf.encode("utf-8", "replace"))
