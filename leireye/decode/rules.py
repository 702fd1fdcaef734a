"""The decoding rules: what one frame becomes in one `RECORD_DTYPE` row.

Two decoders implement these rules: `reference.decode_reference` walks dpkt objects one layer at
a time, `decode.decode_batch` reads the headers of a whole batch with numpy. They must agree on
every field of every record, for any bytes; the tests hold them to it. This module is where the
rules are written down, with the constants and the text formatters both use (formatting is shared
so that "the same facts give the same words" holds by construction; the *reading* of the facts
from bytes is what the two paths do independently).

Record
    `seq` 0; `ts_ns`; `wire_len` (mod 2**32); `cap_len` = len(frame); `linktype` (mod 2**16);
    `ethertype` 0; `vlan` NO_VLAN; addresses, ports, ICMP fields 0; `proto` OTHER; `app` NONE.

Needs
    Every header is read only when "it needs k bytes at offset o" holds: o + k <= limit, where the
    limit is the end of the frame for link-level headers and the end of the IP payload inside IP.
    When it fails the packet stops there with error TRUNCATED (and F_TRUNCATED) if o + k is past
    the end of the frame, else MALFORMED (and F_MALFORMED): the header runs past the length its
    parent declared. A layer whose fixed header is missing or invalid adds no fields; one whose
    fixed header is there but whose options are cut keeps its fixed fields. `info` is then
    "<layer> [truncated]" or "<layer> [malformed]"; the layers are named Ethernet, SLL, SLL2,
    Loopback, IP (raw), 802.1Q, MPLS, IPv4, IPv6, ARP, TCP, UDP, SCTP, ICMP, ICMPv6.

Link layer (by `linktype`)
    EN10MB: needs 14; ethertype at 12.  LINUX_SLL: needs 16; protocol at 14.  LINUX_SLL2: needs
    20; protocol at 0.  These three then peel VLAN tags: while the type is 0x8100, 0x88A8 or 0x9100
    and fewer than 8 tags were peeled, a tag needs 4 bytes (TCI, next type); `vlan` is the first
    tag's id. A type <= 1500 is an 802.3 length: `ethertype` 0, `info` "STP" when the next two
    bytes are 0x42 0x42, else "LLC".
    NULL: needs 4; family = little-endian u32, byte-swapped when above 0xFFFF.  LOOP: needs 4;
    big-endian u32. Family 2 is IPv4, 10/24/28/30 are IPv6, anything else ends with `info`
    "loopback family <n>".  RAW, RAW_OLD: needs 1; the version nibble picks IPv4 or IPv6, any
    other value is MALFORMED (layer "IP").  IPV4 / IPV6: the frame is the IP packet.  For these
    header-less links `ethertype` is the implied 0x0800 / 0x86DD.
    Any other link type: error UNSUPPORTED_LINKTYPE (no flag), `info` "link type <n>".

Network layer (by ethertype)
    0x0800 IPv4; 0x86DD IPv6; 0x0806 ARP; 0x8847/0x8848 MPLS: up to 8 labels of 4 bytes, up to
    the bottom-of-stack bit; then the payload needs 1 byte, and a first nibble 4 or 6 makes it
    IPv4 or IPv6; anything else (or 8 labels without bottom) ends with `info` "MPLS". `ethertype`
    stays the MPLS type. Other ethertypes: `info` is the name from `names.ETHERTYPE_NAMES`, else
    "ethertype 0x88b5".
    IPv4 needs 20; version 4 and IHL >= 5 or MALFORMED. Then addresses (F_HAS_ADDR), `ip_version`
    4, `ip_proto`; the options need IHL*4. Total length 0 means "to the end of the frame" (TSO);
    below IHL*4 is MALFORMED; else the payload ends at min(total length, frame). A fragment
    offset other than 0 ends with "IPv4 fragment <proto> off=<bytes>" (no ports).
    IPv6 needs 40; version 6 or MALFORMED. Payload length 0 means "to the end of the frame".
    Extension headers are walked while the next header is 0, 43, 60 (needs 2, then (len+1)*8),
    51 AH (needs 2, then (len+2)*4) or 44 fragment (needs 8); more than 8 is MALFORMED. `ip_proto`
    is the last next-header read. A fragment offset other than 0 ends with "IPv6 fragment ...".
    ARP needs 28 (the Ethernet/IPv4 layout). With protocol 0x0800, hardware length 6 and
    protocol length 4: F_HAS_ADDR with sender/target protocol addresses (IPv4-mapped,
    `ip_version` 0) and `info` "ARP who-has <tpa> tell <spa>" (op 1), "ARP <spa> is-at <sha>"
    (op 2), else "ARP op <n>"; other layouts give "ARP op <n>" without addresses.
    `proto`: ARP for ARP; for IP by `ip_proto`: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, 132 SCTP, else
    IPV4/IPV6 by version (also when the transport header is missing or cut).

Transport (inside the IP payload)
    TCP needs 20; data offset >= 5 or MALFORMED; ports (F_HAS_PORTS) and the 9 flag bits; the
    options need offset*4. UDP needs 8. SCTP needs 12 (ports; `info` "SCTP <sp> → <dp>").
    ICMP / ICMPv6 need 4 (F_HAS_ICMP; `info` "ICMP echo request", "ICMPv6 neighbor
    solicitation", "ICMP destination unreachable (port unreachable)", "ICMP type 42 code 1").
    A message of `ICMP_ID_TYPES` whose identifier (2 bytes at offset 4) lies before the end of
    the IP payload also gets F_HAS_ICMP_ID and the identifier in `src_port` and `dst_port` (not
    F_HAS_PORTS); a shorter one keeps type and code only, without an error.
    Other protocols: "IPv4 GRE", "IPv6 ESP", "IPv6 proto 253".
    The payload length N is the one the IP header declares (so a snapped frame still shows the
    real length); the payload is "cut" when that declared end lies past the end of the frame.

Application (TCP)
    By content first, on any port, in this order: "SSH-" starts an SSH banner (`info` is its first
    line); a TLS record header (type 20..23, version 3.0..3.4, 5 bytes) gives "TLS <record>",
    for handshakes "TLS <handshake type>" and "TLS ClientHello SNI=<name>"; "<METHOD> " with a
    method of `names.HTTP_METHODS` gives "HTTP <method> <uri>"; "HTTP/" gives "HTTP <status>
    <reason>" (or "HTTP <status>"); the start line needs two words (a request) or a numeric
    status (a response). TCP port 53 with a payload is DNS over TCP (the message after the
    2-byte length). Otherwise `info` is "<sp> → <dp> [<flags>]" plus " len=<N>" when N > 0,
    e.g. "54321 → 443 [SYN]", on every port: the port only suggests an application. `app` is
    then the port's service (the lower port's if it has one, else the higher's,
    `names.TCP_SERVICES`) when N > 0, and NONE for a segment without data (a SYN, a pure ACK).
    Flags read "SYN, ACK" (`text.tcp_flags_text`), in `info` and everywhere else.
Application (UDP)
    By port only (`names.UDP_SERVICES`, lower port first). DNS, mDNS, LLMNR need the 12-byte
    header and, when there is one, the first question: "DNS query A www.example.com",
    "DNS response A www.example.com → 10.1.2.3, 10.1.2.4", " NXDOMAIN" etc. after a non-zero
    rcode; the A/AAAA answers are listed up to the first record that cannot be read. DHCP needs
    240 bytes: "DHCP Discover" (option 53), else "BOOTP request" / "BOOTP reply". DHCPv6 needs
    4: "DHCPv6 Solicit". NTP needs 48: "NTP client". SSDP needs a start line of two words:
    "SSDP NOTIFY *", "SSDP 200 OK". QUIC needs 1 (a long header 5): "QUIC Initial", "QUIC 1-RTT".
    Other services: the service name ("SNMP"). Without a service: "<sp> → <dp> len=<N>".
Application errors
    When a dissector cannot read its protocol: error TRUNCATED (+F_TRUNCATED) and "<APP>
    [truncated]" if the payload was cut, else APP_PARSE (no flag) and "<APP> [malformed]". The
    reference asks dpkt first and falls back to the hand-written dissector (`dissect`) when dpkt
    refuses (HTTPS records, split TLS records, partial HTTP headers, its stray exceptions); the
    fast path uses the hand-written dissectors directly. They agree wherever dpkt accepts.
    An exception from a dissector itself is INTERNAL with "<APP> [decoder error]".
Text
    Text taken from the packet has control, C1 and bidi-override characters escaped (`clean`);
    `info` is cut to INFO_BYTES on a character boundary.
"""

from __future__ import annotations

import socket
from typing import Final

from leireye.record import App, DecodeError, Proto, tcp_flag_names
from leireye.text import tcp_flags_text

from .names import (
    DHCP_TYPES,
    DHCPV6_TYPES,
    DNS_RCODES,
    DNS_TYPES,
    ETHERTYPE_NAMES,
    ICMP6_CODES,
    ICMP6_TYPES,
    ICMP_CODES,
    ICMP_TYPES,
    IP_PROTO_NAMES,
    NTP_MODES,
    QUIC_LONG_TYPES,
    TCP_SERVICES,
    TLS_HANDSHAKES,
    TLS_RECORDS,
    UDP_SERVICES,
)

VLAN_TYPES: Final = frozenset({0x8100, 0x88A8, 0x9100})
MAX_VLAN_TAGS: Final = 8
MPLS_TYPES: Final = frozenset({0x8847, 0x8848})
MAX_MPLS_LABELS: Final = 8
IPV6_FAMILIES: Final = frozenset({10, 24, 28, 30})
IPV6_EXT_OPTS: Final = frozenset({0, 43, 60})  # (len + 1) * 8 bytes
IPV6_EXT_AH: Final = 51  # (len + 2) * 4 bytes
IPV6_EXT_FRAG: Final = 44  # 8 bytes
IPV6_EXT: Final = IPV6_EXT_OPTS | {IPV6_EXT_AH, IPV6_EXT_FRAG}
MAX_IPV6_EXT: Final = 8
ARP_LEN: Final = 28
ICMP_ID_TYPES: Final = (frozenset({0, 8, 13, 14, 15, 16, 17, 18}), frozenset({128, 129}))
"""By IPv6-ness, the ICMP types whose message starts with an identifier and a sequence number:
echo reply/request, timestamp, information and address mask request/reply (ICMPv6: echo)."""
ICMP_ID_OFFSET: Final = 4
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
ETH_P_ARP: Final = 0x0806
LLC_MAX: Final = 1500
DNS_APPS: Final = frozenset({App.DNS, App.MDNS, App.LLMNR})

TRANSPORT_PROTO: Final[dict[int, Proto]] = {
    6: Proto.TCP,
    17: Proto.UDP,
    1: Proto.ICMP,
    58: Proto.ICMPV6,
    132: Proto.SCTP,
}

_ESCAPES: Final[dict[int, str]] = (
    {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
    | {c: f"\\u{c:04x}" for c in (0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F))}
    | {c: f"\\u{c:04x}" for c in range(0x2066, 0x206A)}
)


def clean(text: str) -> str:
    """`text` from a packet with control and direction-changing characters escaped."""
    return text if text.isprintable() else text.translate(_ESCAPES)


def ip_proto_of(ip_version: int, ip_proto: int) -> Proto:
    return TRANSPORT_PROTO.get(ip_proto, Proto.IPV4 if ip_version == 4 else Proto.IPV6)


def service(services: dict[int, tuple[str, App]], sport: int, dport: int) -> tuple[str, App] | None:
    """The service of the lower port if it has one, else that of the higher port."""
    low, high = (sport, dport) if sport <= dport else (dport, sport)
    return services.get(low) or services.get(high)


def tcp_service(sport: int, dport: int) -> tuple[str, App] | None:
    return service(TCP_SERVICES, sport, dport)


def udp_service(sport: int, dport: int) -> tuple[str, App] | None:
    return service(UDP_SERVICES, sport, dport)


# --- texts -------------------------------------------------------------------------------------

FLAG_TEXT: Final[tuple[str, ...]] = tuple(tcp_flags_text(tcp_flag_names(b)) for b in range(512))


def error_text(layer: str, error: DecodeError) -> str:
    if error == DecodeError.TRUNCATED:
        return f"{layer} [truncated]"
    if error == DecodeError.INTERNAL:
        return f"{layer} [decoder error]"
    return f"{layer} [malformed]"


def linktype_text(linktype: int) -> str:
    return f"link type {linktype}"


def family_text(family: int) -> str:
    return f"loopback family {family}"


def ethertype_text(ethertype: int) -> str:
    return ETHERTYPE_NAMES.get(ethertype) or f"ethertype 0x{ethertype:04x}"


def llc_text(is_stp: bool) -> str:
    return "STP" if is_stp else "LLC"


def ip_proto_name(ip_proto: int) -> str:
    return IP_PROTO_NAMES.get(ip_proto) or f"proto {ip_proto}"


def ip_other_text(ip_version: int, ip_proto: int) -> str:
    return f"IPv{ip_version} {ip_proto_name(ip_proto)}"


def fragment_text(ip_version: int, ip_proto: int, offset: int) -> str:
    return f"IPv{ip_version} fragment {ip_proto_name(ip_proto)} off={offset}"


def ipv4_text(value: int) -> str:
    return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))


def arp_text(op: int, spa: int | None, tpa: int, sha: int) -> str:
    """`spa` is None when the layout is not Ethernet/IPv4."""
    if spa is None or op not in (1, 2):
        return f"ARP op {op}"
    if op == 1:
        return f"ARP who-has {ipv4_text(tpa)} tell {ipv4_text(spa)}"
    return f"ARP {ipv4_text(spa)} is-at {sha.to_bytes(6, 'big').hex(':')}"


def icmp_text(v6: bool, icmp_type: int, code: int) -> str:
    label, types, codes = (
        ("ICMPv6", ICMP6_TYPES, ICMP6_CODES) if v6 else ("ICMP", ICMP_TYPES, ICMP_CODES)
    )
    name = types.get(icmp_type)
    if name is None:
        return f"{label} type {icmp_type} code {code}"
    detail = codes.get((icmp_type, code))
    if detail is not None:
        return f"{label} {name} ({detail})"
    return f"{label} {name}" if code == 0 else f"{label} {name} code {code}"


def sctp_text(sport: int, dport: int) -> str:
    return f"SCTP {sport} → {dport}"


def tcp_port_app(sport: int, dport: int, length: int) -> App:
    """The application of a TCP segment that no content rule recognised: the service its port
    suggests when the segment carries data (`length` > 0), else none."""
    found = tcp_service(sport, dport) if length > 0 else None
    return found[1] if found is not None else App.NONE


def tcp_text(sport: int, dport: int, flags: int, length: int) -> str:
    if length > 0:
        return f"{sport} → {dport} [{FLAG_TEXT[flags]}] len={length}"
    return f"{sport} → {dport} [{FLAG_TEXT[flags]}]"


def udp_text(sport: int, dport: int, length: int) -> str:
    return f"{sport} → {dport} len={length}"


FLAG_BYTES: Final[tuple[bytes, ...]] = tuple(t.encode() for t in FLAG_TEXT)


def tcp_ports_bytes(sport: int, dport: int, flags: int, length: int) -> bytes:
    """`tcp_text` encoded, built directly as bytes (the fast path's hot loop)."""
    if length > 0:
        return b"%d \xe2\x86\x92 %d [%s] len=%d" % (sport, dport, FLAG_BYTES[flags], length)
    return b"%d \xe2\x86\x92 %d [%s]" % (sport, dport, FLAG_BYTES[flags])


def udp_ports_bytes(sport: int, dport: int, length: int) -> bytes:
    """`udp_text` encoded, built directly as bytes."""
    return b"%d \xe2\x86\x92 %d len=%d" % (sport, dport, length)


def dns_text(
    label: str,
    response: bool,
    rcode: int,
    question: tuple[int, str] | None,
    addresses: list[str],
) -> str:
    parts = [label, "response" if response else "query"]
    if question is not None:
        qtype, qname = question
        parts.append(DNS_TYPES.get(qtype) or f"TYPE{qtype}")
        parts.append(clean(qname) if qname else "<root>")
    if response and rcode:
        parts.append(DNS_RCODES.get(rcode) or f"RCODE{rcode}")
    text = " ".join(parts)
    return f"{text} → {', '.join(addresses)}" if addresses else text


def address_text(rdata: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(rdata) == 4 else socket.AF_INET6, rdata)


def http_request_text(method: str, uri: str) -> str:
    return clean(f"HTTP {method} {uri}")


def http_response_text(status: str, reason: str) -> str:
    return clean(f"HTTP {status} {reason}" if reason else f"HTTP {status}")


def tls_text(record_type: int, handshake_type: int | None, sni: str | None) -> str:
    if record_type != 22:
        return f"TLS {TLS_RECORDS[record_type]}"
    name = TLS_HANDSHAKES.get(handshake_type) if handshake_type is not None else None
    if name is None:
        return "TLS Handshake"
    if handshake_type == 1 and sni:
        return f"TLS ClientHello SNI={clean(sni)}"
    return f"TLS {name}"


def dhcp_text(op: int, message_type: int | None) -> str:
    if message_type is None:
        kind = {1: "request", 2: "reply"}.get(op) or f"op {op}"
        return f"BOOTP {kind}"
    name = DHCP_TYPES.get(message_type)
    return f"DHCP {name}" if name else f"DHCP type {message_type}"


QUIC_SHORT: Final = 5
QUIC_VERSION_NEGOTIATION: Final = 4


def quic_text(kind: int) -> str:
    """`kind`: the long-header packet type 0..3, QUIC_VERSION_NEGOTIATION or QUIC_SHORT."""
    if kind == QUIC_SHORT:
        return "QUIC 1-RTT"
    if kind == QUIC_VERSION_NEGOTIATION:
        return "QUIC Version Negotiation"
    return f"QUIC {QUIC_LONG_TYPES[kind]}"


def ntp_text(mode: int) -> str:
    return f"NTP {NTP_MODES[mode]}"


def dhcpv6_text(message_type: int) -> str:
    name = DHCPV6_TYPES.get(message_type)
    return f"DHCPv6 {name}" if name else f"DHCPv6 type {message_type}"
