"""The kernel filter that leaves the sensor's own web traffic out: composition, and what libpcap
makes of it (compiled without a live handle, `pcap.bpf`, and run on built frames)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pcap
import pytest

from leireye.capture.ownfilter import (
    OwnTraffic,
    WebListener,
    kernel_filter,
    listener_addresses,
    own_traffic,
)
from leireye.config import CaptureConfig
from leireye.errors import CaptureError
from leireye.ring.status import EFFECTIVE_BPF_BYTES
from tests.traffic.frames import ether, ipv4, ipv6, null, sll, sll2, tcp, udp

EN10MB, RAW, SLL, SLL2, NULL, IPV4, IPV6 = 1, 12, 113, 276, 0, 228, 229
LINKTYPES = (EN10MB, RAW, SLL, SLL2, NULL, IPV4, IPV6)
WEB = 8000
LOCAL = ("127.0.0.1", "::1", "192.168.1.10", "fe80::1", "fe80::2", "2001:db8::10")
USER_FILTERS = (
    "",
    "udp",
    "tcp or udp",
    "udp and dst portrange 48000-48999",
    "not (host 10.1.1.1 or net 10.2.0.0/16)",
    "vlan 100 and tcp",
    "ip6 and tcp",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp port 8000",
)
OWN = (
    OwnTraffic(WEB),
    OwnTraffic(WEB, ("127.0.0.1",)),
    OwnTraffic(WEB, ("::1",)),
    OwnTraffic(WEB, listener_addresses(WebListener("0.0.0.0", WEB), LOCAL)),
    OwnTraffic(WEB, listener_addresses(WebListener("::", WEB, dual_stack=True), LOCAL)),
)


def compile_for(bpf: str, linktype: int) -> pcap.bpf:
    return pcap.bpf(bpf.encode(), linktype)


def passes(bpf: str, frame: bytes, linktype: int = EN10MB) -> bool:
    return bool(compile_for(bpf, linktype).filter(frame))


def tcp4(src: str, sport: int, dst: str, dport: int, payload: bytes = b"") -> bytes:
    return ipv4(tcp(sport, dport, payload=payload), 6, src=src, dst=dst)


def tcp6(src: str, sport: int, dst: str, dport: int) -> bytes:
    return ipv6(tcp(sport, dport), 6, src=src, dst=dst)


def on_link(packet: bytes, linktype: int) -> Iterator[bytes]:
    """`packet` (an IP packet) framed for `linktype`; Ethernet both untagged and tagged."""
    version = packet[0] >> 4
    ethertype = 0x0800 if version == 4 else 0x86DD
    if linktype == EN10MB:
        yield ether(packet, ethertype)
        yield ether(packet, ethertype, [(0x8100, 7)])
    elif linktype in (RAW, IPV4, IPV6):
        yield packet
    elif linktype == SLL:
        yield sll(packet, ethertype)
    elif linktype == SLL2:
        yield sll2(packet, ethertype)
    else:
        yield null(packet, 2 if version == 4 else 10)


# -- composition ----------------------------------------------------------------------------------


def test_no_own_traffic_leaves_the_filter_as_given() -> None:
    assert kernel_filter("udp port 53", None, EN10MB) == "udp port 53"
    assert kernel_filter("", None, EN10MB) == ""


def test_the_users_filter_is_parenthesised_and_the_exclusion_follows() -> None:
    own = OwnTraffic(WEB, ("127.0.0.1",))
    expr = (
        "tcp and ((src port 8000 and (src host 127.0.0.1)) or "
        "(dst port 8000 and (dst host 127.0.0.1)))"
    )
    assert kernel_filter("udp or tcp", own, RAW) == f"(udp or tcp) and not ({expr})"
    assert kernel_filter("", own, RAW) == f"not ({expr})"
    assert kernel_filter("  ", own, SLL) == f"not ({expr})"
    # Ethernet: the VLAN clause last, where its offset shift touches nothing else.
    assert kernel_filter("udp", own, EN10MB) == (
        f"(udp) and not ({expr}) and not (vlan and {expr})"
    )


def test_without_addresses_the_port_is_left_out_on_every_address() -> None:
    assert kernel_filter("udp", OwnTraffic(WEB), RAW) == "(udp) and not (tcp port 8000)"


@pytest.mark.parametrize("bad", ["udp and (", "udp) or (tcp", ")(", "((udp)"])
def test_unbalanced_parentheses_are_refused(bad: str) -> None:
    """The user's filter must stay one term of the composition."""
    with pytest.raises(CaptureError, match="syntax error"):
        kernel_filter(bad, OwnTraffic(WEB), EN10MB)


def test_too_many_addresses_fall_back_to_the_port_alone() -> None:
    many = tuple(f"2001:db8::{i:x}" for i in range(400))
    composed = kernel_filter("udp", OwnTraffic(WEB, many), EN10MB)
    assert composed == "(udp) and not (tcp port 8000) and not (vlan and tcp port 8000)"


def test_a_filter_too_long_for_the_status_block_is_refused_not_cut() -> None:
    longest_user = "udp or " * ((EFFECTIVE_BPF_BYTES - 40) // 7) + "udp"
    with pytest.raises(CaptureError, match="more than 8192"):
        kernel_filter(longest_user, OwnTraffic(WEB), EN10MB)


# -- the addresses of the listener ----------------------------------------------------------------


def test_a_bound_address_is_the_only_one() -> None:
    assert listener_addresses(WebListener("127.0.0.1", WEB), LOCAL) == ("127.0.0.1",)
    assert listener_addresses(WebListener("::1", WEB), LOCAL) == ("::1",)
    assert listener_addresses(WebListener("::ffff:10.0.0.5", WEB), LOCAL) == ("10.0.0.5",)
    assert listener_addresses(WebListener("fe80::1%eth0", WEB), LOCAL) == ("fe80::1",)


def test_a_wildcard_listener_answers_on_every_local_address_of_its_family() -> None:
    assert listener_addresses(WebListener("0.0.0.0", WEB), LOCAL) == (
        "127.0.0.0/8",  # the whole loopback network reaches a 0.0.0.0 listener
        "192.168.1.10",
    )
    assert listener_addresses(WebListener("::", WEB), LOCAL) == ("2001:db8::10", "::1", "fe80::/10")
    assert listener_addresses(WebListener("::", WEB, dual_stack=True), LOCAL) == (
        "127.0.0.0/8", "192.168.1.10", "2001:db8::10", "::1", "fe80::/10",
    )  # fmt: skip


def test_the_listener_of_a_real_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        listener = WebListener.of_socket(sock)
        assert listener == WebListener("127.0.0.1", sock.getsockname()[1], False)
        assert not listener.wildcard
    with socket.create_server(("0.0.0.0", 0)) as sock:
        assert WebListener.of_socket(sock).wildcard


def test_own_traffic_only_for_a_live_capture_of_a_web_sensor() -> None:
    listener = WebListener("127.0.0.1", 8123)
    assert own_traffic(CaptureConfig(), listener) == OwnTraffic(8123, ("127.0.0.1",))
    assert own_traffic(CaptureConfig(include_own_traffic=True), listener) is None
    assert own_traffic(CaptureConfig(pcap="x.pcap"), listener) is None  # a replay is not live
    assert own_traffic(CaptureConfig(), None) is None


def test_a_wildcard_listener_reads_the_hosts_addresses() -> None:
    own = own_traffic(CaptureConfig(), WebListener("0.0.0.0", 8123))
    assert own is not None and own.port == 8123
    assert "127.0.0.0/8" in own.addresses  # lo is always there


# -- what libpcap makes of it -----------------------------------------------------------------


@pytest.mark.parametrize("linktype", LINKTYPES)
@pytest.mark.parametrize("user", USER_FILTERS)
def test_every_composed_filter_compiles(user: str, linktype: int) -> None:
    try:
        compile_for(user, linktype)
    except OSError:  # `vlan` off Ethernet, IPv6 on an IPv4-only link, tcp[] on IPv6
        pytest.skip("libpcap refuses the user's filter itself on this link")
    for own in OWN:
        composed = kernel_filter(user, own, linktype)
        if user == "tcp port 8000" and not own.addresses:
            with pytest.raises(OSError):  # libpcap: "expression rejects all packets"
                compile_for(composed, linktype)
        else:
            compile_for(composed, linktype)


@pytest.mark.parametrize("linktype", LINKTYPES)
def test_the_sensors_own_traffic_is_left_out_and_the_rest_kept(linktype: int) -> None:
    wildcard = OwnTraffic(WEB, listener_addresses(WebListener("::", WEB, dual_stack=True), LOCAL))
    bpf = kernel_filter("", wildcard, linktype)  # `tcp or udp` would refuse tagged frames
    login = b'{"username": "admin", "password": "secret"}'
    own = [
        tcp4("127.0.0.1", 50000, "127.0.0.1", WEB, login),
        tcp4("127.0.0.1", WEB, "127.0.0.1", 50000),
        tcp4("127.0.0.2", 50000, "127.0.0.3", WEB),  # anywhere in 127/8
        tcp4("10.9.9.9", 40000, "192.168.1.10", WEB),  # a remote browser
        tcp4("192.168.1.10", WEB, "10.9.9.9", 40000),
        tcp6("::1", 50000, "::1", WEB),
        tcp6("fe80::99", 50000, "fe80::2", WEB),
        tcp6("2001:db8::10", WEB, "2001:db8::99", 50000),
    ]
    kept = [
        ipv4(udp(50000, WEB), 17, src="127.0.0.1", dst="127.0.0.1"),  # UDP to the same port
        tcp4("127.0.0.1", 50000, "127.0.0.1", WEB + 1),  # another port
        tcp4("192.168.1.10", 50000, "10.9.9.9", WEB),  # the host's client to another server
        tcp4("10.9.9.8", 50000, "10.9.9.9", WEB),  # others' traffic (promiscuous mode)
        tcp6("2001:db8::99", 50000, "2001:db8::98", WEB),
    ]
    version = {IPV4: 4, IPV6: 6}.get(linktype)
    for packet in own + kept:
        if version is not None and packet[0] >> 4 != version:
            continue
        for frame in on_link(packet, linktype):
            assert passes(bpf, frame, linktype) == (packet in kept), (bpf, frame.hex())


def test_the_users_filter_still_decides_the_rest() -> None:
    bpf = kernel_filter("udp and dst port 53", OwnTraffic(WEB, ("127.0.0.1",)), EN10MB)
    dns = ipv4(udp(40000, 53), 17, src="127.0.0.1", dst="127.0.0.1")
    other = ipv4(udp(40000, 54), 17, src="127.0.0.1", dst="127.0.0.1")
    assert passes(bpf, ether(dns, 0x0800)) and not passes(bpf, ether(other, 0x0800))


def test_a_user_vlan_filter_applies_the_exclusion_inside_the_vlan() -> None:
    bpf = kernel_filter("vlan 7", OwnTraffic(WEB, ("127.0.0.1",)), EN10MB)
    own = tcp4("127.0.0.1", 50000, "127.0.0.1", WEB)
    other = tcp4("127.0.0.1", 50000, "127.0.0.1", WEB + 1)
    assert not passes(bpf, ether(own, 0x0800, [(0x8100, 7)]))
    assert passes(bpf, ether(other, 0x0800, [(0x8100, 7)]))
