"""The packet record: one fixed-size row per captured frame.

The capture process decodes every frame into one row of `RECORD_DTYPE`; the ring stores the rows;
the stats process and the web workers read them as numpy arrays and filter them vectorised. The
layout is part of the ring's on-disk (shared-memory) format: changing a field, its order or its
size means bumping `LAYOUT_VERSION` in `leireye.ring.layout`.

Addresses are 128-bit numbers split in two big-endian halves (`*_hi`, `*_lo`) so that a CIDR test
is two masked comparisons over whole columns. IPv4 addresses are stored IPv4-mapped
(`::ffff:a.b.c.d`: `hi == 0`, `lo == 0xFFFF_0000_0000 | v4`); `ip_version` tells them apart from a
real IPv6 address of that form. For ARP, `src`/`dst` hold the sender and target protocol addresses
(with `F_HAS_ADDR` set and `ip_version == 0`).

`src_port`/`dst_port` are ports only when `F_HAS_PORTS` is set. An ICMP or ICMPv6 message that
carries an identifier (`rules.ICMP_ID_TYPES`: echo request/reply, and for ICMP timestamp,
information and address mask request/reply) has `F_HAS_ICMP_ID` instead, and both fields hold
that identifier, the same value twice (so that a reply's fields read like its request's). A
reader that wants ports tests `F_HAS_PORTS`; one that wants the ICMP identifier tests
`F_HAS_ICMP_ID`; the two are never set together.

`sensor` is 0 on a sensor; at a fleet central (`leireye central`) it indexes the central's sensor
table (`leireye.fleet.model.SensorTable`), so one ring holds every sensor's packets.

Enumerations are stored as small integers; their numeric values are part of the layout: append new
members, never renumber.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Final

import numpy as np

INFO_BYTES: Final = 178
"""Room for the UTF-8 `info` text; longer text is cut on a character boundary."""

RECORD_DTYPE: Final = np.dtype(
    [
        ("seq", "<u8"),  # packet id; owned by the ring, written last (torn-read check)
        ("ts_ns", "<i8"),  # capture time, ns since the Unix epoch (UTC)
        ("src_hi", "<u8"),
        ("src_lo", "<u8"),
        ("dst_hi", "<u8"),
        ("dst_lo", "<u8"),
        ("wire_len", "<u4"),  # length on the wire
        ("cap_len", "<u4"),  # captured length (<= snaplen)
        ("linktype", "<u2"),  # pcap DLT_* of the frame
        ("ethertype", "<u2"),  # innermost ethertype (after VLAN tags); 0 when none
        ("vlan", "<u2"),  # outermost VLAN id; NO_VLAN when untagged
        ("src_port", "<u2"),  # ports when F_HAS_PORTS; the ICMP identifier when F_HAS_ICMP_ID
        ("dst_port", "<u2"),  # (the same identifier)
        ("tcp_flags", "<u2"),  # TcpFlag bits
        ("ip_version", "u1"),  # 0, 4 or 6
        ("ip_proto", "u1"),  # IP protocol number (after IPv6 extension headers)
        ("icmp_type", "u1"),  # valid when F_HAS_ICMP
        ("icmp_code", "u1"),
        ("proto", "u1"),  # Proto
        ("app", "u1"),  # App
        ("flags", "u1"),  # F_* bits
        ("error", "u1"),  # DecodeError
        ("sensor", "<u2"),  # index of the fleet sensor that captured it (0 on a lone sensor)
        ("info", f"S{INFO_BYTES}"),  # UTF-8, NUL-padded
    ]
)
assert RECORD_DTYPE.itemsize == 256, RECORD_DTYPE.itemsize

NO_VLAN: Final = 0xFFFF

# `flags` bits
F_HAS_ADDR: Final = 0x01  # src/dst hold addresses (IP, or ARP protocol addresses)
F_HAS_PORTS: Final = 0x02  # src_port/dst_port are valid (TCP, UDP, SCTP, ...)
F_HAS_ICMP: Final = 0x04  # icmp_type/icmp_code are valid
F_TRUNCATED: Final = 0x08  # the frame ended before a header the decoder expected
F_MALFORMED: Final = 0x10  # a header was present but invalid
F_HAS_ICMP_ID: Final = 0x20  # src_port == dst_port == the ICMP identifier (not ports)


class Proto(enum.IntEnum):
    """The protocol label of a packet: its transport, or the network layer when none applies."""

    OTHER = 0
    TCP = 1
    UDP = 2
    ICMP = 3
    ICMPV6 = 4
    ARP = 5
    IPV4 = 6  # IPv4 carrying something other than TCP/UDP/ICMP
    IPV6 = 7  # IPv6 carrying something other than TCP/UDP/ICMPv6
    SCTP = 8

    @property
    def label(self) -> str:
        return _PROTO_LABELS[self]


_PROTO_LABELS: Final = {
    Proto.OTHER: "OTHER",
    Proto.TCP: "TCP",
    Proto.UDP: "UDP",
    Proto.ICMP: "ICMP",
    Proto.ICMPV6: "ICMPv6",
    Proto.ARP: "ARP",
    Proto.IPV4: "IPv4",
    Proto.IPV6: "IPv6",
    Proto.SCTP: "SCTP",
}
PROTO_LABELS: Final = tuple(_PROTO_LABELS[p] for p in Proto)
"""Label by numeric value: `PROTO_LABELS[record["proto"]]`."""


class App(enum.IntEnum):
    """The application protocol, found by content where the decoder can, else by well-known port."""

    NONE = 0
    DNS = 1
    MDNS = 2
    LLMNR = 3
    NBNS = 4
    HTTP = 5
    TLS = 6
    SSH = 7
    DHCP = 8
    DHCPV6 = 9
    NTP = 10
    SNMP = 11
    SYSLOG = 12
    QUIC = 13
    SSDP = 14
    SMTP = 15
    IMAP = 16
    POP3 = 17
    FTP = 18
    TELNET = 19
    SMB = 20
    LDAP = 21
    KERBEROS = 22
    RDP = 23
    BGP = 24
    MQTT = 25
    TFTP = 26
    RADIUS = 27
    SIP = 28

    @property
    def label(self) -> str:
        return _APP_LABEL_OVERRIDES.get(self, self.name)


_APP_LABEL_OVERRIDES: Final = {App.NONE: "", App.MDNS: "mDNS", App.DHCPV6: "DHCPv6"}
APP_LABELS: Final = tuple(a.label for a in App)
"""Label by numeric value: `APP_LABELS[record["app"]]` ("" for none)."""


class LinkType(enum.IntEnum):
    """The pcap link types (DLT_* / LINKTYPE_*) the decoder understands."""

    NULL = 0  # BSD loopback: 4-byte host-order address family
    EN10MB = 1  # Ethernet
    RAW_OLD = 12  # raw IP, OpenBSD numbering of DLT_RAW
    RAW = 101  # raw IP (LINKTYPE_RAW)
    LOOP = 108  # OpenBSD loopback: 4-byte network-order address family
    LINUX_SLL = 113  # Linux cooked capture v1
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276  # Linux cooked capture v2 (what "any" gives on newer libpcap)


class DecodeError(enum.IntEnum):
    """Why a record is incomplete. Each non-zero kind is counted by the capture process."""

    NONE = 0
    TRUNCATED = 1  # the frame ended inside a header
    MALFORMED = 2  # a header was invalid (bad version, bad length field, ...)
    UNSUPPORTED_LINKTYPE = 3  # the link type is not one of LinkType
    APP_PARSE = 4  # the application-layer dissector refused the payload
    INTERNAL = 5  # an unexpected exception in the decoder, caught per packet


class TcpFlag(enum.IntFlag):
    FIN = 0x001
    SYN = 0x002
    RST = 0x004
    PSH = 0x008
    ACK = 0x010
    URG = 0x020
    ECE = 0x040
    CWR = 0x080
    NS = 0x100


TCP_FLAG_NAMES: Final = tuple(f.name or "" for f in TcpFlag)


def tcp_flag_names(bits: int) -> list[str]:
    """`0x18` -> `["PSH", "ACK"]`, in wire bit order."""
    return [f.name or "" for f in TcpFlag if bits & f]


IPV4_MAPPED_LO: Final = 0xFFFF_0000_0000


def halves_to_ip(hi: int, lo: int, ip_version: int) -> str:
    """The text form of a stored address; `ip_version` 4 (or ARP's 0 with a mapped value) gives
    dotted quad."""
    if ip_version != 6 and hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((int(hi) << 64) | int(lo)))


def encode_info(text: str) -> bytes:
    """`text` as UTF-8 cut to INFO_BYTES on a character boundary."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= INFO_BYTES:
        return data
    return data[:INFO_BYTES].decode("utf-8", errors="ignore").encode("utf-8")
