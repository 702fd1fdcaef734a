"""Internet checksums (RFC 1071) as the packet detail shows them: the value in hex and whether it
was verified.

A checksum is one of three things in the detail: `correct`, `incorrect` (with the value it
should have) or `not checked`, with the reason:

- the stored bytes end before the data it covers does (the ring keeps `raw_bytes` of a frame,
  the capture `snaplen`): nothing to add up;
- it is *partial*: a packet the sensor's own host sent, captured before the network card (or the
  loopback driver) filled its checksum in. The kernel then leaves the sum of the pseudo-header
  alone in the field (checksum offload); that value is recognised and not called incorrect;
- UDP over IPv4 with 0: the sender computed none (RFC 768);
- the packet is the first fragment of a larger one: the sum covers the reassembled whole.
"""

from __future__ import annotations

import struct

Fields = dict[str, object]


def ones_sum(data: bytes) -> int:
    """The 16-bit one's complement sum of `data` (padded with a zero byte to an even length)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """The IPv4 (4-byte addresses) or IPv6 pseudo-header of a TCP, UDP or ICMPv6 checksum."""
    if len(src) == 4:
        return src + dst + struct.pack("!xBH", proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def expected(data: bytes, at: int, pseudo: bytes = b"") -> int:
    """The checksum `data` should carry in its field at offset `at`."""
    blank = data[:at] + b"\0\0" + data[at + 2 :]
    return ~ones_sum(pseudo + blank) & 0xFFFF


def header_fields(value: int, header: bytes, at: int) -> Fields:
    """An IPv4 header checksum (field at offset `at`): the whole header is stored whenever this
    is called."""
    return _verified(value, expected(header, at))


def covered_fields(
    value: int,
    data: bytes,
    at: int,
    cut: bool,
    pseudo: bytes = b"",
    zero_means_none: bool = False,
    fragment: bool = False,
) -> Fields:
    """The checksum at offset `at` of a transport header over `pseudo` + `data` (the header and
    its payload as stored); `cut` when the stored bytes end before the IP payload does,
    `fragment` when the IP packet is a first fragment (the rest comes in later ones)."""
    if fragment:
        return _not_checked(value, "a first fragment: the rest of what it covers comes later")
    if zero_means_none and value == 0:
        return _not_checked(value, "zero: the sender computed none (UDP over IPv4)")
    should = None if cut else expected(data, at, pseudo)
    if value != should and pseudo and value == ones_sum(pseudo):
        return _not_checked(value, "partial: left to checksum offload (a packet this host sent)")
    if should is None:
        return _not_checked(value, "the stored bytes end before the data it covers")
    return _verified(value, should)


def _verified(value: int, should: int) -> Fields:
    fields: Fields = {"checksum": f"0x{value:04x}"}
    # 0x0000 and 0xffff are the same number in one's complement (-0 and +0).
    if value == should or {value, should} == {0, 0xFFFF}:
        fields["checksum_status"] = "correct"
    else:
        fields["checksum_status"] = "incorrect"
        fields["checksum_note"] = f"should be 0x{should:04x}"
    return fields


def _not_checked(value: int, why: str) -> Fields:
    return {"checksum": f"0x{value:04x}", "checksum_status": "not checked", "checksum_note": why}
