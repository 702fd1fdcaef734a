"""A deterministic, realistic mix of Ethernet frames for the decoder's tests and benchmark.

`generate(n, seed)` draws each frame from a weighted table of kinds (HTTPS flows dominate, as
on a real uplink; then DNS, QUIC, HTTP, SSH, the LAN chatter of ARP, mDNS, SSDP, ICMPv6...),
about a fifth of the IP traffic over IPv6, a tenth of the frames 802.1Q-tagged (some QinQ) and
one in a hundred cut short as a small snaplen would. Frames are built with dpkt; the same seed
always gives the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import dpkt
import dpkt.dhcp
import dpkt.dns
import dpkt.icmp
import dpkt.icmp6
import dpkt.ip
import dpkt.ip6
import dpkt.tcp
import dpkt.udp

from leireye.capture import pcapfile
from leireye.record import LinkType

from .payloads import CLIENTS4, CLIENTS6, HOSTS, M_SEARCH, MACS, SERVERS4, SERVERS6, Payloads


class Mix(NamedTuple):
    """Frames with their capture times (ns) and lengths on the wire (more than the frame's
    length for the frames cut short)."""

    frames: list[bytes]
    ts_ns: list[int]
    wire_lens: list[int]


class MixBuilder(Payloads):
    """Frames of each kind of the mix, from one seeded random source."""

    # --- layers --------------------------------------------------------------------------------

    def ethernet(self, ethertype: int, payload: bytes, dst: bytes | None = None) -> bytes:
        rng = self.rng
        tags = b""
        roll = rng.random()
        if roll < 0.01:
            tags = struct.pack(
                "!HHHH", 0x88A8, rng.randrange(1, 4095), 0x8100, rng.randrange(1, 4095)
            )
        elif roll < 0.10:
            tags = struct.pack("!HH", 0x8100, rng.choice((10, 20, 100, 200)))
        head = (dst or rng.choice(MACS)) + rng.choice(MACS) + tags + struct.pack("!H", ethertype)
        frame = head + payload
        return frame + bytes(max(0, 60 - len(frame)))

    def ip(
        self,
        proto: int,
        l4: dpkt.Packet,
        v6: bool,
        src: bytes | None = None,
        dst: bytes | None = None,
    ) -> bytes:
        rng = self.rng
        if v6:
            ip6 = dpkt.ip6.IP6(
                src=src or rng.choice(CLIENTS6),
                dst=dst or rng.choice(SERVERS6),
                nxt=proto,
                hlim=64,
                data=l4,
            )
            ip6.plen = len(bytes(l4))
            return self.ethernet(0x86DD, bytes(ip6))
        ip = dpkt.ip.IP(
            src=src or rng.choice(CLIENTS4),
            dst=dst or rng.choice(SERVERS4),
            p=proto,
            data=l4,
            id=rng.randrange(65536),
        )
        return self.ethernet(0x0800, bytes(ip))

    def tcp(
        self, sport: int, dport: int, flags: int, payload: bytes = b"", v6: bool | None = None
    ) -> bytes:
        rng = self.rng
        seg = dpkt.tcp.TCP(
            sport=sport,
            dport=dport,
            seq=rng.getrandbits(32),
            ack=rng.getrandbits(32),
            flags=flags,
            win=502,
            data=payload,
        )
        if flags & dpkt.tcp.TH_SYN:
            seg.opts = b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + rng.randbytes(8) + b"\x01\x03\x03\x07"
            seg.off = 5 + len(seg.opts) // 4
        if rng.random() < 0.5 and not flags & dpkt.tcp.TH_SYN:
            seg.opts = b"\x01\x01\x08\x0a" + rng.randbytes(8)
            seg.off = 8
        return self.ip(6, seg, self.v6() if v6 is None else v6)

    def udp(
        self,
        sport: int,
        dport: int,
        payload: bytes,
        v6: bool | None = None,
        dst: bytes | None = None,
    ) -> bytes:
        dgram = dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)
        return self.ip(17, dgram, self.v6() if v6 is None else v6, dst=dst)

    def v6(self) -> bool:
        return self.rng.random() < 0.2

    def eph(self) -> int:
        return self.rng.randrange(32768, 61000)

    def both(self, port: int) -> tuple[int, int]:
        """(sport, dport) for a random direction of a client/server pair."""
        pair = (self.eph(), port)
        return pair if self.rng.random() < 0.5 else (pair[1], pair[0])

    # --- frames by kind ------------------------------------------------------------------------

    def kinds(self) -> list[tuple[float, Callable[[], bytes]]]:
        rng = self.rng
        ack, psh, syn, fin, rst = 0x10, 0x18, 0x02, 0x11, 0x14
        return [
            (16, lambda: self.tcp(*self.both(443), ack)),
            (12, lambda: self.tcp(*self.both(443), psh, self.app_data(rng.randrange(30, 1400)))),
            (6, lambda: self.tcp(*self.both(443), ack, rng.randbytes(1400))),
            (4, lambda: self.tcp(*self.both(443), rng.choice((syn, 0x12, fin, rst)))),
            (
                1.5,
                lambda: self.tcp(self.eph(), 443, psh, self.client_hello(rng.choice(HOSTS))[:1448]),
            ),
            (1.5, lambda: self.tcp(443, self.eph(), psh, self.server_hello())),
            (3, lambda: self.tcp(self.eph(), 80, psh, self.http_request())),
            (3, lambda: self.tcp(80, self.eph(), psh, self.http_response()[:1448])),
            (
                6,
                lambda: self.tcp(
                    *self.both(80),
                    rng.choice((ack, ack, syn, fin)),
                    rng.choice((b"", rng.randbytes(900))),
                ),
            ),
            (
                0.3,
                lambda: self.tcp(
                    *self.both(22), psh, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
                ),
            ),
            (
                4,
                lambda: self.tcp(
                    *self.both(22), psh, rng.randbytes(rng.choice((36, 52, 100, 300)))
                ),
            ),
            (
                5,
                lambda: self.tcp(
                    *self.both(rng.choice((5432, 6379, 8080, 9000, 27017))),
                    rng.choice((ack, psh, syn)),
                    rng.randbytes(rng.randrange(0, 200)),
                ),
            ),
            (6, lambda: self.udp(self.eph(), 53, self.dns(False))),
            (6, lambda: self.udp(53, self.eph(), self.dns(True))),
            (0.3, lambda: self.tcp(*self.both(53), psh, self.dns(rng.random() < 0.5, tcp=True))),
            (2, lambda: self.udp(5353, 5353, self.mdns(), dst=b"\xe0\x00\x00\xfb", v6=False)),
            (
                1,
                lambda: self.udp(
                    123, 123, bytes([0x23 if rng.random() < 0.5 else 0x24]) + rng.randbytes(47)
                ),
            ),
            (0.5, lambda: self.udp(68, 67, self.dhcp(), v6=False)),
            (
                0.7,
                lambda: self.udp(
                    self.eph(),
                    1900,
                    M_SEARCH,
                    v6=False,
                ),
            ),
            (5, lambda: self.udp(*self.both(443), self.quic())),
            (
                4,
                lambda: self.udp(
                    self.eph(), rng.randrange(1024, 65535), rng.randbytes(rng.randrange(0, 600))
                ),
            ),
            (
                0.7,
                lambda: self.udp(self.eph(), rng.choice((161, 514)), rng.randbytes(80), v6=False),
            ),
            (
                2,
                lambda: self.ip(
                    1,
                    dpkt.icmp.ICMP(
                        type=rng.choice((0, 8)),
                        data=dpkt.icmp.ICMP.Echo(id=7, seq=rng.randrange(999), data=bytes(56)),
                    ),
                    False,
                ),
            ),
            (
                0.3,
                lambda: self.ip(
                    1,
                    dpkt.icmp.ICMP(
                        type=3, code=3, data=dpkt.icmp.ICMP.Unreach(data=rng.randbytes(28))
                    ),
                    False,
                ),
            ),
            (
                2,
                lambda: self.ip(
                    58,
                    dpkt.icmp6.ICMP6(
                        type=rng.choice((128, 129, 135, 136, 134)), data=rng.randbytes(20)
                    ),
                    True,
                ),
            ),
            (3, self.arp),
            (0.4, self.odd),
        ]

    def arp(self) -> bytes:
        rng = self.rng
        op = rng.choice((1, 2))
        sender, target = rng.choice(CLIENTS4), rng.choice(CLIENTS4)
        arp = dpkt.arp.ARP(op=op, sha=rng.choice(MACS), spa=sender, tha=bytes(6), tpa=target)
        return self.ethernet(0x0806, bytes(arp), dst=b"\xff" * 6 if op == 1 else None)

    def odd(self) -> bytes:
        """The rarer shapes: IPv6 extension headers, fragments, GRE, SCTP, LLDP, STP."""
        rng = self.rng
        roll = rng.randrange(6)
        if roll == 0:  # hop-by-hop + fragment header, first fragment of UDP
            udp = bytes(dpkt.udp.UDP(sport=self.eph(), dport=9999, ulen=20, data=bytes(12)))
            body = b"\x2c\x00\x01\x04\x00\x00" + b"\x11\x00\x00\x01" + rng.randbytes(4) + udp
            ip6 = dpkt.ip6.IP6(
                src=rng.choice(CLIENTS6),
                dst=rng.choice(SERVERS6),
                nxt=0,
                hlim=1,
                plen=len(body),
                data=body,
            )
            return self.ethernet(0x86DD, bytes(ip6))
        if roll == 1:  # a later IPv4 fragment
            ip = dpkt.ip.IP(
                src=rng.choice(CLIENTS4),
                dst=rng.choice(SERVERS4),
                p=17,
                offset=185,
                data=rng.randbytes(200),
            )
            return self.ethernet(0x0800, bytes(ip))
        if roll == 2:
            return self.ip(47, b"\x00\x00\x08\x00" + rng.randbytes(60), False)
        if roll == 3:
            return self.ip(132, struct.pack("!HHII", 5000, 5001, 1, 0) + rng.randbytes(32), False)
        if roll == 4:
            return self.ethernet(0x88CC, rng.randbytes(60), dst=b"\x01\x80\xc2\x00\x00\x0e")
        stp = (
            b"\x01\x80\xc2\x00\x00\x00"
            + rng.choice(MACS)
            + b"\x00\x26\x42\x42\x03"
            + rng.randbytes(35)
        )
        return stp + bytes(max(0, 60 - len(stp)))


def generate(n: int, seed: int = 0) -> Mix:
    """`n` frames with capture times (1 µs to 100 µs apart) and wire lengths."""
    gen = MixBuilder(seed)
    kinds = gen.kinds()
    makers = [make for _, make in kinds]
    weights = [w for w, _ in kinds]
    frames: list[bytes] = []
    ts: list[int] = []
    wire: list[int] = []
    now = 1_700_000_000_000_000
    rng = gen.rng
    for make in rng.choices(makers, weights, k=n):
        frame = make()
        wire.append(len(frame))
        if rng.random() < 0.01:
            frame = frame[: rng.randrange(len(frame))]
        frames.append(frame)
        now += rng.randrange(1, 100)
        ts.append(now * 1000)
    return Mix(frames, ts, wire)


def write_pcap(path: str | Path, n: int, seed: int = 0) -> Mix:
    """Write `generate(n, seed)` as a classic microsecond pcap (Ethernet) and return it."""
    mix = generate(n, seed)
    pcapfile.write_pcap(path, mix.ts_ns, mix.wire_lens, mix.frames, LinkType.EN10MB, 65535)
    return mix
