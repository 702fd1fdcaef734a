"""Application payloads for the generated mix (`mix`): TLS hellos and records, DNS and mDNS
messages, HTTP start lines, DHCP, QUIC. Built with dpkt or by hand; deterministic per seed."""

from __future__ import annotations

import random
import struct

import dpkt
import dpkt.dhcp
import dpkt.dns

HOSTS = ("example.org", "www.example.com", "cdn.example.net", "api.example.io", "mail.example.org")
SERVERS4 = tuple(bytes([93, 184, 216, i]) for i in range(1, 20))
CLIENTS4 = tuple(bytes([10, 0, 1, i]) for i in range(2, 40))
SERVERS6 = tuple(bytes.fromhex("20010db8000000000000000000000" + f"{i:03x}") for i in range(1, 20))
CLIENTS6 = tuple(bytes.fromhex("fd000000000000010000000000000" + f"{i:03x}") for i in range(2, 40))
M_SEARCH = b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n\r\n'
MACS = tuple(bytes([2, 0, 0, 0, 0, i]) for i in range(1, 12))


class Payloads:
    """Payload builders drawing from one seeded random source."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def client_hello(self, host: str) -> bytes:
        rng = self.rng
        name = host.encode()
        sni = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
        exts = (
            sni
            + b"\x00\x2b\x00\x03\x02\x03\x04"
            + b"\x00\x33\x00\x26\x00\x24\x00\x1d\x00\x20"
            + rng.randbytes(32)
        )
        if rng.random() < 0.2:  # a post-quantum key share: the hello spans two segments
            exts += struct.pack("!HH", 0xFE0D, 1200) + rng.randbytes(1200)
        body = (
            b"\x03\x03"
            + rng.randbytes(32)
            + b"\x20"
            + rng.randbytes(32)
            + b"\x00\x06\x13\x01\x13\x02\x13\x03\x01\x00"
        )
        body += struct.pack("!H", len(exts)) + exts
        hs = b"\x01" + len(body).to_bytes(3, "big") + body
        return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs

    def server_hello(self) -> bytes:
        body = (
            b"\x03\x03"
            + self.rng.randbytes(32)
            + b"\x20"
            + self.rng.randbytes(32)
            + b"\x13\x01\x00"
        )
        body += b"\x00\x06\x00\x2b\x00\x02\x03\x04"
        hs = b"\x02" + len(body).to_bytes(3, "big") + body
        record = b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs
        return record + b"\x14\x03\x03\x00\x01\x01" + self.app_data(self.rng.randrange(40, 900))

    def app_data(self, size: int) -> bytes:
        return b"\x17\x03\x03" + struct.pack("!H", size) + self.rng.randbytes(size)

    def dns(self, response: bool, tcp: bool = False) -> bytes:
        rng = self.rng
        host = rng.choice(HOSTS)
        roll = rng.random()
        qtype = 65 if roll < 0.05 else (28 if roll < 0.35 else 1)
        msg = dpkt.dns.DNS(
            id=rng.randrange(65536), op=0x0100, qd=[dpkt.dns.DNS.Q(name=host, type=qtype)]
        )
        if response:
            msg.op = 0x8180
            if rng.random() < 0.05:
                msg.op |= 3  # NXDOMAIN
            elif qtype == 65:
                msg.an = [
                    dpkt.dns.DNS.RR(
                        name=host, type=65, rdata=b"\x00\x01\x00\x00\x01\x00\x03\x02h2", ttl=60
                    )
                ]
            else:
                if rng.random() < 0.3:
                    msg.an.append(dpkt.dns.DNS.RR(name=host, type=5, cname="edge." + host, ttl=60))
                for _ in range(rng.randrange(1, 4)):
                    if qtype == 1:
                        msg.an.append(
                            dpkt.dns.DNS.RR(name=host, type=1, ip=rng.choice(SERVERS4), ttl=60)
                        )
                    else:
                        msg.an.append(
                            dpkt.dns.DNS.RR(name=host, type=28, ip6=rng.choice(SERVERS6), ttl=60)
                        )
        data = bytes(msg)
        return struct.pack("!H", len(data)) + data if tcp else data

    def mdns(self) -> bytes:
        name = self.rng.choice(("_googlecast._tcp.local", "_airplay._tcp.local", "_ipp._tcp.local"))
        msg = dpkt.dns.DNS(id=0, op=0, qd=[dpkt.dns.DNS.Q(name=name, type=12, cls=1)])
        if self.rng.random() < 0.5:
            msg.op, msg.qd = 0x8400, []
            msg.an = [
                dpkt.dns.DNS.RR(
                    name="printer.local", type=1, cls=0x8001, ip=self.rng.choice(CLIENTS4), ttl=120
                )
            ]
        return bytes(msg)

    def http_request(self) -> bytes:
        path = self.rng.choice(
            ("/", "/index.html", "/api/v1/items?id=42", "/static/app.js", "/favicon.ico")
        )
        method = self.rng.choice((b"GET", b"GET", b"GET", b"POST", b"HEAD"))
        host = self.rng.choice(HOSTS).encode()
        return (
            method
            + b" "
            + path.encode()
            + b" HTTP/1.1\r\nHost: "
            + host
            + b"\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
        )

    def http_response(self) -> bytes:
        status = self.rng.choice(
            (b"200 OK", b"200 OK", b"304 Not Modified", b"404 Not Found", b"301 Moved Permanently")
        )
        body = self.rng.randbytes(self.rng.randrange(0, 1200))
        head = b"HTTP/1.1 " + status + b"\r\nServer: nginx\r\nContent-Type: text/html\r\n"
        return head + b"Content-Length: " + str(len(body) + 2000).encode() + b"\r\n\r\n" + body

    def dhcp(self) -> bytes:
        kind = self.rng.choice((1, 2, 3, 5))
        msg = dpkt.dhcp.DHCP(
            op=1 if kind in (1, 3) else 2,
            xid=self.rng.getrandbits(32),
            chaddr=self.rng.choice(MACS) + bytes(10),
        )
        msg.opts = [(53, bytes([kind])), (55, b"\x01\x03\x06\x0f")]
        return bytes(msg)

    def quic(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.15:
            return b"\xc3\x00\x00\x00\x01\x08" + rng.randbytes(1194)
        return bytes([0x40 | rng.randrange(64)]) + rng.randbytes(rng.randrange(30, 1300))
