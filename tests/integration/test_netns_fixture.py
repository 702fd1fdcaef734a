"""The namespace fixture itself: a veth pair delivers exactly what is injected, nothing more."""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import time
from pathlib import Path

import dpkt
import pytest

from tests.netns import VethPair, inject_frames, skip_unless_root, udp_burst, veth_pair
from tests.waiting import scaled, wait_for

pytestmark = [pytest.mark.root, skip_unless_root]

ETHERTYPE = 0x88B5  # IEEE 802 local experimental: nothing else on the link uses it
MAGIC = b"LEIREYE-T"


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def frames(dst: str, src: str, count: int) -> list[bytes]:
    header = mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ETHERTYPE)
    return [(header + MAGIC + struct.pack("!I", i)).ljust(60, b"\0") for i in range(count)]


def receive_seqs(sock: socket.socket, expected: int, timeout: float) -> list[int]:
    """Sequence numbers of our frames read from `sock` until `expected` arrived or the (scaled)
    timeout passed, then a short grace period to catch duplicates or extras."""
    seqs: list[int] = []
    deadline = time.monotonic() + scaled(timeout)
    grace_end: float | None = None
    while True:
        now = time.monotonic()
        if len(seqs) >= expected and grace_end is None:
            grace_end = now + 0.2
        end = grace_end if grace_end is not None else deadline
        if now >= end:
            return seqs
        sock.settimeout(max(end - now, 0.001))
        try:
            frame = sock.recv(2048)
        except TimeoutError:
            continue
        body = frame[14:]
        if frame[12:14] == struct.pack("!H", ETHERTYPE) and body.startswith(MAGIC):
            seqs.append(struct.unpack_from("!I", body, len(MAGIC))[0])


def test_frames_injected_on_the_host_end_arrive_exactly_once_in_the_namespace() -> None:
    n = 500
    with veth_pair(ipv6=False) as pair:
        before = pair.link_stats()
        with pair.packet_socket(ETHERTYPE) as rx:
            sent = inject_frames(pair.host_if, frames(pair.ns_mac, pair.host_mac, n))
            seqs = receive_seqs(rx, n, timeout=10)
        after = pair.link_stats()
    assert sent == n
    assert seqs == list(range(n))
    # the link is silent apart from our frames (IPv4 only, static neighbours)
    assert after["rx_packets"] - before["rx_packets"] == n
    assert after["rx_dropped"] == before["rx_dropped"]


def test_frames_injected_inside_the_namespace_arrive_on_the_host_end() -> None:
    n = 200
    with veth_pair() as pair, pair.packet_socket(ETHERTYPE, host_side=True) as rx:
        sent = inject_frames(pair.ns_if, frames(pair.host_mac, pair.ns_mac, n), ns=pair.ns)
        seqs = receive_seqs(rx, n, timeout=10)
    assert sent == n
    assert seqs == list(range(n))


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
def test_tcpdump_inside_the_namespace_captures_exactly_what_was_injected(
    tmp_path: Path,
) -> None:
    n = 300
    out = tmp_path / "cap.pcap"
    log = tmp_path / "tcpdump.log"
    with veth_pair() as pair, log.open("w") as log_f:
        proc = pair.popen(
            ["tcpdump", "-Z", "root", "-n", "--immediate-mode", "-B", "16384", "-s", "256",
             "-i", pair.ns_if, "-c", str(n), "-w", str(out), "ether", "proto", str(ETHERTYPE)],
            stdout=log_f, stderr=log_f,
        )  # fmt: skip
        wait_for(lambda: "listening on" in log.read_text(), 10, "tcpdump to start")
        sent = inject_frames(pair.host_if, frames(pair.ns_mac, pair.host_mac, n))
        assert proc.wait(scaled(10)) == 0, log.read_text()
    assert sent == n
    with out.open("rb") as f:
        captured = [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]
    assert len(captured) == n
    assert [struct.unpack_from("!I", c, 14 + len(MAGIC))[0] for c in captured] == list(range(n))
    assert "0 packets dropped by kernel" in log.read_text()


def _udp_receiver(pair: VethPair, family: int, addr: str) -> socket.socket:
    sock = pair.open_socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((addr, 0))  # IPv6: succeeds at once only because DAD is off
    return sock


def _count_datagrams(sock: socket.socket, expected: int, payload: bytes) -> int:
    got = 0
    deadline = time.monotonic() + scaled(10)
    while got < expected and time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        got += data == payload
    sock.settimeout(0.2)  # nothing beyond the burst
    with contextlib.suppress(TimeoutError):
        got += sock.recv(65535) == payload
    return got


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_udp_burst_from_the_host_reaches_the_namespace(family: int) -> None:
    n = 200
    payload = b"leireye-udp-burst"
    with veth_pair() as pair:
        dst = pair.ns_ip if family == socket.AF_INET else pair.ns_ip6
        with _udp_receiver(pair, family, dst) as rx:
            port = rx.getsockname()[1]
            assert udp_burst(dst, port, n, payload) == n
            assert _count_datagrams(rx, n, payload) == n


def test_udp_burst_from_inside_the_namespace_reaches_the_host() -> None:
    n = 100
    with veth_pair() as pair, socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rx:
        rx.bind((pair.host_ip6, 0))
        assert udp_burst(pair.host_ip6, rx.getsockname()[1], n, b"up", ns=pair.ns) == n
        assert _count_datagrams(rx, n, b"up") == n


def test_pair_is_addressed_up_and_removed_afterwards() -> None:
    with veth_pair() as pair, veth_pair() as other:
        names = {pair.ns, other.ns}
        assert len(names) == 2
        assert pair.host_if != other.host_if
        assert {pair.host_ip, pair.ns_ip}.isdisjoint({other.host_ip, other.ns_ip})
        assert pair.host_ip6.rsplit("::", 1)[0] != other.host_ip6.rsplit("::", 1)[0]
        for ifname in (pair.host_if, pair.ns_if, other.host_if, other.ns_if):
            assert len(ifname) <= 15
        shown = pair.run(["ip", "-o", "addr", "show", "dev", pair.ns_if],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert f"{pair.ns_ip}/30" in shown
        assert f"{pair.ns_ip6}/64" in shown
        assert "tentative" not in shown
        assert Path("/sys/class/net", pair.host_if).exists()
        sleeper = pair.popen(["sleep", "600"])
    assert sleeper.poll() is not None  # stopped on teardown
    for p in (pair, other):
        assert not Path("/run/netns", p.ns).exists()
        assert not Path("/sys/class/net", p.host_if).exists()
