"""Network-namespace helpers for root-only integration tests.

`veth_pair()` builds a throw-away namespace joined to the root namespace by a veth pair, so a
test can send real packets to a real "remote" host without leaving the machine::

    from tests.netns import inject_frames, packet_socket, skip_unless_root, udp_burst, veth_pair

    @pytest.mark.root
    @skip_unless_root
    def test_something() -> None:
        with veth_pair() as pair:
            udp_burst(pair.ns_ip, 9999, 100)                 # root side -> namespace
            pair.run(["ip", "-s", "link", "show", pair.ns_if])

Addresses: each pair takes a free /30 from 10.77.128.0/17 (host end .1, namespace end .2 of
the block) and the /64 fd77:0:0:<slot>::/64 (host ::1, namespace ::2) with DAD off, so all
addresses work at once. By default both ends know each other's MAC (permanent neighbour
entries) and IPv6 router solicitations are off: after set-up the kernel sends nothing on its
own except, for IPv6, the MLD reports of the first second. Pass `ipv6=False` for a link that
stays completely silent, `static_neighbors=False` to see ARP / neighbour discovery.

Every wait is bounded; timeouts are multiplied by LEIREYE_TEST_TIMEOUT_SCALE (tests/waiting.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.waiting import scaled, wait_for

__all__ = [
    "ETH_P_ALL",
    "VethPair",
    "have_netns",
    "in_netns",
    "inject_frames",
    "packet_socket",
    "require_root",
    "skip_unless_root",
    "udp_burst",
    "veth_pair",
]

ETH_P_ALL = 0x0003
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
SUBNET_BASE = (10 << 24) | (77 << 16) | (128 << 8)  # 10.77.128.0/17 = 8192 blocks of /30
SUBNET_SLOTS = 8192
CMD_TIMEOUT = 20.0  # seconds (scaled) for each `ip` / `sysctl` command

T = TypeVar("T")
_counter = itertools.count()
_libc = ctypes.CDLL(None, use_errno=True)


# ---------------------------------------------------------------------------------------------
# skipping


def have_netns() -> tuple[bool, str]:
    """(usable, reason): root and the `ip` tool are both needed for namespaces and raw sockets."""
    if os.geteuid() != 0:
        return False, "needs root (network namespaces, AF_PACKET)"
    if shutil.which("ip") is None:
        return False, "needs the `ip` tool (iproute2)"
    return True, ""


_OK, _WHY = have_netns()
skip_unless_root = pytest.mark.skipif(not _OK, reason=_WHY or "root available")
"""Marker: `@skip_unless_root` on a test, or `pytestmark = [pytest.mark.root, skip_unless_root]`."""


def require_root() -> None:
    """Skip the calling test or fixture unless root and `ip` are available."""
    ok, why = have_netns()
    if not ok:
        pytest.skip(why)


# ---------------------------------------------------------------------------------------------
# running things in the root namespace or inside a namespace


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=scaled(CMD_TIMEOUT), check=False
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _sysctl(ns: str | None, *settings: str) -> None:
    cmd = ["sysctl", "-q", "-w", *settings]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    subprocess.run(cmd, capture_output=True, timeout=scaled(CMD_TIMEOUT), check=True)


def in_netns(ns: str | None, func: Callable[[], T]) -> T:
    """Call `func` in a helper thread that has entered network namespace `ns` (None: the root
    namespace, called directly). Sockets created there stay in that namespace for good, so this
    is how to open a socket "inside" a namespace and use it from the test's own thread."""
    if ns is None:
        return func()
    path = NETNS_DIR / ns
    result: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:  # only this thread moves
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({path}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(func())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(scaled(CMD_TIMEOUT))
    if thread.is_alive():
        raise TimeoutError(f"call inside namespace {ns} did not return")
    if failure:
        raise failure[0]
    return result[0]


def packet_socket(
    ifname: str, ns: str | None = None, proto: int = ETH_P_ALL, rcvbuf: int = 8 << 20
) -> socket.socket:
    """An AF_PACKET/SOCK_RAW socket bound to `ifname` (inside `ns` if given) for `proto`
    (an ethertype, ETH_P_ALL for everything). Received frames include the Ethernet header; the
    socket is blocking, use `settimeout()` or `select()`. Close it (or use `with`)."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((ifname, proto))
        except BaseException:
            sock.close()
            raise
        return sock

    return in_netns(ns, make)


def inject_frames(
    ifname: str, frames: Iterable[bytes], ns: str | None = None, interval: float = 0.0
) -> int:
    """Send raw Ethernet frames (header included, no FCS) on `ifname` with an AF_PACKET socket,
    in the root namespace or inside `ns`. Returns how many were sent (all, or it raises).
    `interval` seconds between frames; a transient ENOBUFS is retried for up to 5 s (scaled).
    On a veth the peer receives each frame once: `captured + dropped == sent` holds exactly."""
    sent = 0
    with packet_socket(ifname, ns) as sock:
        for frame in frames:
            deadline = time.monotonic() + scaled(5.0)
            while True:
                try:
                    n = sock.send(frame)
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS and time.monotonic() < deadline:
                        time.sleep(0.001)
                        continue
                    raise
                if n != len(frame):
                    raise OSError(f"short send on {ifname}: {n} of {len(frame)} bytes")
                sent += 1
                break
            if interval:
                time.sleep(interval)
    return sent


def udp_frame(pair: VethPair, sport: int, dport: int, payload: bytes) -> bytes:
    """One Ethernet/IPv4/UDP frame from the namespace end of `pair` to its host end, for
    `inject_frames` from the namespace."""
    import dpkt

    udp = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=socket.inet_aton(pair.ns_ip), dst=socket.inet_aton(pair.host_ip), p=17)
    ip.data = udp
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(
        src=bytes.fromhex(pair.ns_mac.replace(":", "")),
        dst=bytes.fromhex(pair.host_mac.replace(":", "")),
        data=ip,
    )
    return bytes(eth)


def udp_burst(
    dst_ip: str,
    port: int,
    count: int,
    payload: bytes = b"x",
    ns: str | None = None,
    interval: float = 0.0,
) -> int:
    """Send `count` UDP datagrams to (dst_ip, port) from the root namespace or from inside
    `ns`; IPv6 if `dst_ip` contains ':'. Returns how many were sent. With an unresolved
    neighbour the kernel queues only a few packets and drops the rest: keep the default
    static neighbours of `veth_pair()`, or resolve first."""
    family = socket.AF_INET6 if ":" in dst_ip else socket.AF_INET
    sock = in_netns(ns, lambda: socket.socket(family, socket.SOCK_DGRAM))
    sent = 0
    with sock:
        for _ in range(count):
            deadline = time.monotonic() + scaled(5.0)
            while True:
                try:
                    sock.sendto(payload, (dst_ip, port))
                except OSError as exc:
                    if exc.errno in (errno.ENOBUFS, errno.EAGAIN) and (time.monotonic() < deadline):
                        time.sleep(0.001)
                        continue
                    raise
                sent += 1
                break
            if interval:
                time.sleep(interval)
    return sent


# ---------------------------------------------------------------------------------------------
# the veth pair


@dataclass
class VethPair:
    """One namespace joined to the root namespace by a veth pair; see `veth_pair()`."""

    ns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    host_ip6: str
    ns_ip6: str
    host_mac: str
    ns_mac: str
    prefixlen: int = 30
    prefixlen6: int = 64
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def run(self, cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """`subprocess.run` of `cmd` inside the namespace (ip netns exec). Keyword arguments go
        to subprocess.run; `timeout` defaults to 30 s (scaled); `check` stays False unless
        given."""
        kw.setdefault("timeout", scaled(30.0))
        return subprocess.run(["ip", "netns", "exec", self.ns, *cmd], **kw)

    def popen(self, cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start `cmd` inside the namespace in the background. It is terminated (SIGTERM, then
        SIGKILL) when the pair is torn down, if still running."""
        proc: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], **kw)
        self.procs.append(proc)
        return proc

    def open_socket(self, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket (`socket.socket(family, kind, proto)`) that lives inside the namespace."""
        return in_netns(self.ns, lambda: socket.socket(family, kind, proto))

    def packet_socket(self, proto: int = ETH_P_ALL, *, host_side: bool = False) -> socket.socket:
        """AF_PACKET socket on the namespace end (or on the host end with host_side=True)."""
        if host_side:
            return packet_socket(self.host_if, None, proto)
        return packet_socket(self.ns_if, self.ns, proto)

    def link_stats(self, *, host_side: bool = False) -> dict[str, int]:
        """Kernel counters of one end: rx_packets, tx_packets, rx_dropped, ... from sysfs."""
        ifname = self.host_if if host_side else self.ns_if

        def read() -> dict[str, int]:
            base = Path("/sys/class/net") / ifname / "statistics"
            return {p.name: int(p.read_text()) for p in base.iterdir()}

        if host_side:
            return read()
        # sysfs shows the reader's namespace only after a remount: read it via `cat` instead
        names = ["rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped"]
        paths = [f"/sys/class/net/{ifname}/statistics/{n}" for n in names]
        out = self.run(["cat", *paths], capture_output=True, text=True, check=True).stdout
        return dict(zip(names, (int(v) for v in out.split()), strict=True))

    def _stop_procs(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(scaled(5.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(scaled(5.0))
        self.procs.clear()


def _used_ipv4_blocks() -> set[int]:
    out = _ip("-4", "-o", "addr", "show").stdout
    used: set[int] = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" not in parts:
            continue
        addr = parts[parts.index("inet") + 1].split("/")[0]
        value = int.from_bytes(socket.inet_aton(addr), "big")
        if SUBNET_BASE <= value < SUBNET_BASE + 4 * SUBNET_SLOTS:
            used.add((value - SUBNET_BASE) // 4)
    return used


def _mac(slot: int, end: int) -> str:
    # locally administered unicast: 02:4c:45 ("LE"), slot, end
    return f"02:4c:45:{slot >> 8:02x}:{slot & 0xFF:02x}:{end:02x}"


def _link_up(ns: str | None, ifname: str) -> bool:
    args = ["-o", "link", "show", "dev", ifname]
    res = _ip(*(["-n", ns] if ns else []), *args, check=False)
    return res.returncode == 0 and ",LOWER_UP" in res.stdout


def _create(ipv6: bool, static_neighbors: bool) -> VethPair:
    pid = os.getpid()
    used = _used_ipv4_blocks()
    for _attempt in range(16):
        n = next(_counter)
        ns = f"le-t{pid}-{n}"
        host_if = f"le{pid:x}h{n:x}"[:15]
        ns_if = f"le{pid:x}n{n:x}"[:15]
        if (NETNS_DIR / ns).exists() or Path("/sys/class/net", host_if).exists():
            continue  # a leftover of an earlier process with the same pid
        slot = next(
            (
                s
                for i in range(SUBNET_SLOTS)
                if (s := (pid * 31 + n + i) % SUBNET_SLOTS) not in used
            ),
            None,
        )
        if slot is None:
            raise RuntimeError("no free /30 left in 10.77.128.0/17")
        base = SUBNET_BASE + 4 * slot
        pair = VethPair(
            ns=ns,
            host_if=host_if,
            ns_if=ns_if,
            host_ip=socket.inet_ntoa((base + 1).to_bytes(4, "big")),
            ns_ip=socket.inet_ntoa((base + 2).to_bytes(4, "big")),
            host_ip6=f"fd77:0:0:{slot:x}::1",
            ns_ip6=f"fd77:0:0:{slot:x}::2",
            host_mac=_mac(slot, 1),
            ns_mac=_mac(slot, 2),
        )
        if _ip("netns", "add", ns, check=False).returncode != 0:
            continue
        try:
            _setup(pair, ipv6, static_neighbors)
        except BaseException:
            _destroy(pair)
            raise
        return pair
    raise RuntimeError("could not find a free namespace / interface name")


def _setup(p: VethPair, ipv6: bool, static_neighbors: bool) -> None:
    _ip(
        "link", "add", p.host_if, "address", p.host_mac, "type", "veth",
        "peer", "name", p.ns_if, "address", p.ns_mac, "netns", p.ns,
    )  # fmt: skip
    _ip("-n", p.ns, "link", "set", "lo", "up")
    for ns, ifname in ((None, p.host_if), (p.ns, p.ns_if)):
        if ipv6:
            _sysctl(
                ns,
                f"net.ipv6.conf.{ifname}.accept_dad=0",
                f"net.ipv6.conf.{ifname}.router_solicitations=0",
                f"net.ipv6.conf.{ifname}.accept_ra=0",
            )
        else:
            _sysctl(ns, f"net.ipv6.conf.{ifname}.disable_ipv6=1")
    for ns, ifname, ip4, ip6 in (
        (None, p.host_if, p.host_ip, p.host_ip6),
        (p.ns, p.ns_if, p.ns_ip, p.ns_ip6),
    ):
        nsarg = ["-n", ns] if ns else []
        _ip(*nsarg, "addr", "add", f"{ip4}/{p.prefixlen}", "dev", ifname)
        if ipv6:
            _ip(*nsarg, "addr", "add", f"{ip6}/{p.prefixlen6}", "dev", ifname, "nodad")
    if static_neighbors:
        for ns, ifname, peer_ip, peer_ip6, peer_mac in (
            (None, p.host_if, p.ns_ip, p.ns_ip6, p.ns_mac),
            (p.ns, p.ns_if, p.host_ip, p.host_ip6, p.host_mac),
        ):
            nsarg = ["-n", ns] if ns else []
            peers = [peer_ip, peer_ip6] if ipv6 else [peer_ip]
            for ip in peers:
                _ip(*nsarg, "neigh", "replace", ip, "lladdr", peer_mac, "dev", ifname,
                    "nud", "permanent")  # fmt: skip
    _ip("-n", p.ns, "link", "set", p.ns_if, "up")
    _ip("link", "set", p.host_if, "up")
    wait_for(lambda: _link_up(None, p.host_if) and _link_up(p.ns, p.ns_if), 10.0,
             f"veth {p.host_if} <-> {p.ns}/{p.ns_if} to come up")  # fmt: skip


def _destroy(p: VethPair) -> None:
    p._stop_procs()
    # processes someone else started inside *this* namespace (by pid; the namespace is ours)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        res = _ip("netns", "pids", p.ns, check=False)
        pids = [int(x) for x in res.stdout.split() if x.isdigit()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if not pids:
            break
        time.sleep(0.2)
    _ip("netns", "del", p.ns, check=False)  # removes the veth, both ends
    if Path("/sys/class/net", p.host_if).exists():
        _ip("link", "del", p.host_if, check=False)
    wait_for(lambda: not Path("/sys/class/net", p.host_if).exists(), 10.0,
             f"{p.host_if} to disappear")  # fmt: skip


@contextlib.contextmanager
def veth_pair(*, ipv6: bool = True, static_neighbors: bool = True) -> Iterator[VethPair]:
    """A fresh namespace `le-t<pid>-<n>` with one veth end inside (`ns_if`) and the other in
    the root namespace (`host_if`), addressed, up and ready. Deleted on exit, with anything
    started through `pair.popen()`."""
    require_root()
    pair = _create(ipv6, static_neighbors)
    try:
        yield pair
    finally:
        _destroy(pair)
