"""Frames cut at every offset: nothing raises, both paths agree, and a frame cut inside its
headers is marked TRUNCATED."""

from __future__ import annotations

import base64
import struct

import dpkt
import pytest

from leireye.record import F_TRUNCATED, DecodeError, LinkType
from tests.decode_compare import decode_both
from tests.traffic import frames as fb
from tests.traffic.mix import MixBuilder

HOSTILE_MPLS = base64.b64decode("AIgAAAAAAQAAAAAAiEcAAP///43/JA==")


def _dns_with_https_record() -> bytes:
    msg = dpkt.dns.DNS(id=9, op=0x8180, qd=[dpkt.dns.DNS.Q(name="example.org", type=65)])
    msg.an = [
        dpkt.dns.DNS.RR(name="example.org", type=65, rdata=b"\x00\x01\x00\x00\x01\x00\x03\x02h2")
    ]
    return bytes(msg)


def _samples() -> dict[str, tuple[bytes, int, int]]:
    """name -> (frame, link type, where its headers end)."""
    gen = MixBuilder(4)
    hello = fb.tcp4(50000, 443, 0x18, gen.client_hello("example.org"))
    ext = bytes([60, 0]) + bytes(6)
    v6 = fb.ether(
        fb.ipv6(
            fb.udp(5000, 9999, b"payload"),
            0,
            ext=bytes([60, 0]) + bytes(6) + bytes([17, 0]) + bytes(6),
        ),
        0x86DD,
        tags=[(0x8100, 5)],
    )
    arp = fb.ether(bytes(dpkt.arp.ARP(op=1, spa=b"\x0a\0\0\1", tpa=b"\x0a\0\0\2")), 0x0806)
    dns = fb.ether(
        fb.ipv4(fb.udp(53, 40000, _dns_with_https_record()), 17),
        0x0800,
        tags=[(0x88A8, 1), (0x8100, 2)],
    )
    icmp6 = fb.ether(fb.ipv6(dpkt.icmp6.ICMP6(type=135, data=bytes(20)), 58), 0x86DD)
    sll2 = fb.sll2(fb.ipv4(fb.tcp(1, 80, 0x02), 6), 0x0800)
    mpls = fb.ether(struct.pack("!I", 1 << 8) + fb.ipv4(fb.udp(1, 2), 17), 0x8847)
    return {
        "tls-client-hello": (hello, LinkType.EN10MB, 14 + 20 + 20),
        "ipv6-ext-vlan": (v6, LinkType.EN10MB, 18 + 40 + 8 + len(ext) + 8),
        "arp": (arp, LinkType.EN10MB, 14 + 28),
        "dns-https-qinq": (dns, LinkType.EN10MB, 22 + 20 + 8),
        "icmpv6": (icmp6, LinkType.EN10MB, 14 + 40 + 4),
        "sll2-tcp": (sll2, LinkType.LINUX_SLL2, 20 + 20 + 20),
        "mpls-udp": (mpls, LinkType.EN10MB, 14 + 4 + 20 + 8),
        "hostile-mpls": (HOSTILE_MPLS, LinkType.EN10MB, 14 + 4),
    }


SAMPLES = _samples()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_cut_at_every_offset(name: str) -> None:
    frame, linktype, headers_end = SAMPLES[name]
    cuts = [frame[:size] for size in range(len(frame) + 1)]
    records = decode_both(cuts, linktype, [len(frame)] * len(cuts))
    for size, record in enumerate(records):
        assert record["error"] != DecodeError.INTERNAL, (name, size)
        if size < headers_end:
            assert record["error"] == DecodeError.TRUNCATED, (name, size, record)
            assert record["flags"] & F_TRUNCATED, (name, size)
    assert records[-1]["error"] == DecodeError.NONE


def test_whole_samples_decode_cleanly() -> None:
    records = {
        name: decode_both([frame], linktype)[0] for name, (frame, linktype, _) in SAMPLES.items()
    }
    assert records["dns-https-qinq"]["info"] == b"DNS response HTTPS example.org"
    assert records["tls-client-hello"]["info"] == b"TLS ClientHello SNI=example.org"
    assert records["hostile-mpls"]["info"] == b"MPLS"
