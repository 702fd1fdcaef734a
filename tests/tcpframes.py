"""Ethernet frames carrying TCP or UDP, built with dpkt, for the Follow Stream tests."""

from __future__ import annotations

import socket

import dpkt

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def frame(
    src: tuple[str, int],
    dst: tuple[str, int],
    seq: int,
    data: bytes = b"",
    flags: int = ACK | PSH,
    *,
    v6: bool = False,
    udp: bool = False,
    vlan: int | None = None,
) -> bytes:
    l4: dpkt.Packet
    if udp:
        l4 = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=data)
        l4.ulen = 8 + len(data)
    else:
        l4 = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq % 2**32, flags=flags, data=data)
    proto = dpkt.ip.IP_PROTO_UDP if udp else dpkt.ip.IP_PROTO_TCP
    ip: dpkt.Packet
    if v6:
        ip = dpkt.ip6.IP6(src=_v6(src[0]), dst=_v6(dst[0]), nxt=proto, hlim=64, data=l4)
        ip.plen = len(bytes(l4))
        ethertype = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(
            src=socket.inet_aton(src[0]), dst=socket.inet_aton(dst[0]), p=proto, data=l4
        )
        ip.len = 20 + len(bytes(l4))
        ethertype = dpkt.ethernet.ETH_TYPE_IP
    body = bytes(ip)
    head = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"
    if vlan is not None:
        head += b"\x81\x00" + vlan.to_bytes(2, "big")
    return head + ethertype.to_bytes(2, "big") + body


def _v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)
