"""The reference decoder's building blocks: the record being filled in, and dpkt's layer classes
without their automatic payload dispatch (see `reference` for why)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import dpkt
import dpkt.ethernet
import dpkt.icmp
import dpkt.icmp6
import dpkt.ip
import dpkt.ip6
import dpkt.loopback
import dpkt.sll
import dpkt.sll2

from leireye.decode import rules
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
            0,  # sensor: a lone sensor's
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
