"""dpkt's header tables without its automatic payload dispatch, and what dpkt raises on input it
cannot read: shared by the packet-detail dissector (`detail`) and the reference decoder.

dpkt's own classes guess the next layer from a type field and decode it eagerly, swallowing
failures into raw bytes; the decoders here walk the layers themselves, so each class below
reads one header and leaves its payload as bytes.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Final

import dpkt
import dpkt.ethernet
import dpkt.icmp
import dpkt.icmp6
import dpkt.ip
import dpkt.ip6
import dpkt.loopback
import dpkt.sll
import dpkt.sll2
import dpkt.ssl

DPKT_ESCAPES: Final = (
    dpkt.Error,
    dpkt.ssl.SSL3Exception,
    IndexError,
    KeyError,
    AttributeError,
    TypeError,
    ValueError,  # UnicodeDecodeError is one
    struct.error,
)
"""What dpkt 1.9.8 raises, by contract or not, on payloads it cannot read."""


class Ethernet(dpkt.Packet):  # type: ignore[misc]
    """dpkt's Ethernet header table alone (its class peels tags and guesses MPLS payloads)."""

    __hdr__ = dpkt.ethernet.Ethernet.__hdr__


class SLL(dpkt.sll.SLL):  # type: ignore[misc]
    """Linux cooked v1, payload left as bytes."""

    _typesw: ClassVar[dict[int, Any]] = {}


class SLL2(dpkt.sll2.SLL2):  # type: ignore[misc]
    """Linux cooked v2, payload left as bytes."""

    _typesw: ClassVar[dict[int, Any]] = {}


class NullFamily(dpkt.Packet):  # type: ignore[misc]
    """The DLT_NULL family word, read little-endian (the order is the writer's)."""

    __hdr__ = dpkt.loopback.Loopback.__hdr__
    __byte_order__ = "<"


class LoopFamily(dpkt.Packet):  # type: ignore[misc]
    """The DLT_LOOP family word, network order."""

    __hdr__ = dpkt.loopback.Loopback.__hdr__
    __byte_order__ = ">"


class IPv4(dpkt.ip.IP):  # type: ignore[misc]
    """dpkt's IPv4 (options, length slicing), payload left as bytes."""

    _protosw: ClassVar[dict[int, Any]] = {}


class IPv6(dpkt.ip6.IP6):  # type: ignore[misc]
    """dpkt's IPv6 fixed header only: the extension headers are walked by the decoder."""

    def unpack(self, buf: bytes) -> None:
        dpkt.Packet.unpack(self, buf)


class ExtHeader(dpkt.Packet):  # type: ignore[misc]
    """Next header and length of an IPv6 options, routing or AH header."""

    __hdr__ = (("nxt", "B", 0), ("len", "B", 0))


class ICMP(dpkt.icmp.ICMP):  # type: ignore[misc]
    """ICMP type and code; the quoted packet is not decoded."""

    _typesw: ClassVar[dict[int, Any]] = {}


class ICMP6(dpkt.icmp6.ICMP6):  # type: ignore[misc]
    """ICMPv6 type and code; the quoted packet is not decoded."""

    _typesw: ClassVar[dict[int, Any]] = {}
