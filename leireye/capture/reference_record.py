"""The reference decoder's building blocks: the record being filled in, and dpkt's layer classes
without their automatic payload dispatch (see `reference` for why)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import dpkt
import dpkt.ethernet
import dpkt.icmp
import dpkt.icmp6
import dpkt.ip
import dpkt.ip6
import dpkt.loopback
import dpkt.sll
import dpkt.sll2

from leireye.record import (
    F_MALFORMED,
    F_TRUNCATED,
    IPV4_MAPPED_LO,
    NO_VLAN,
    App,
    DecodeError,
    Proto,
    encode_info,
)

from . import rules


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


class Record:
    """The fields of one record while it is being filled in."""

    def __init__(self, ts_ns: int, wire_len: int, cap_len: int, linktype: int) -> None:
        self.ts_ns = ts_ns
        self.wire_len = wire_len & 0xFFFF_FFFF
        self.cap_len = cap_len
        self.linktype = linktype & 0xFFFF
        self.ethertype = 0
        self.vlan = NO_VLAN
        self.src = (0, 0)
        self.dst = (0, 0)
        self.sport = self.dport = self.tcp_flags = 0
        self.ip_version = self.ip_proto = self.icmp_type = self.icmp_code = 0
        self.proto = Proto.OTHER
        self.app = App.NONE
        self.flags = 0
        self.error = DecodeError.NONE
        self.info = ""

    def fail(self, error: DecodeError, layer: str) -> None:
        self.error = error
        if error == DecodeError.TRUNCATED:
            self.flags |= F_TRUNCATED
        elif error == DecodeError.MALFORMED:
            self.flags |= F_MALFORMED
        self.info = rules.error_text(layer, error)

    def as_tuple(self) -> tuple[object, ...]:
        return (
            0,
            self.ts_ns,
            *self.src,
            *self.dst,
            self.wire_len,
            self.cap_len,
            self.linktype,
            self.ethertype,
            self.vlan,
            self.sport,
            self.dport,
            self.tcp_flags,
            self.ip_version,
            self.ip_proto,
            self.icmp_type,
            self.icmp_code,
            self.proto,
            self.app,
            self.flags,
            self.error,
            encode_info(self.info),
        )


P = TypeVar("P")


def header(r: Record, cls: Callable[[bytes], P], buf: bytes, at: int, layer: str) -> P | None:
    """`cls(buf)`, or None with the error recorded: `at` is where `buf` starts in the frame."""
    try:
        return cls(buf)
    except dpkt.NeedData:
        need = at + cls.__hdr_len__  # type: ignore[attr-defined]
        r.fail(DecodeError.TRUNCATED if need > r.cap_len else DecodeError.MALFORMED, layer)
    except dpkt.UnpackError:
        r.fail(DecodeError.MALFORMED, layer)
    return None


def fits(r: Record, buf: bytes, at: int, size: int, layer: str) -> bool:
    if size <= len(buf):
        return True
    r.fail(DecodeError.TRUNCATED if at + size > r.cap_len else DecodeError.MALFORMED, layer)
    return False


def mapped(addr: bytes) -> tuple[int, int]:
    return 0, IPV4_MAPPED_LO | int.from_bytes(addr, "big")
