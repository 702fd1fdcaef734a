"""A lossy link between two network namespaces, made in user space: netem without the kernel's.

The test kernel has no `sch_netem` (CONFIG_NET_SCH_NETEM is not set), so `tc qdisc add ... netem`
fails. `impaired_path()` builds two veth pairs (`tests.netns.veth_pair`), namespace A and
namespace B, and routes A <-> B through a bridge thread in the root namespace that reads every
frame from one host end (AF_PACKET) and writes it to the other, applying what netem would:

    loss       the frame is dropped
    duplicate  the frame is sent twice
    reorder    this share of frames is sent at once, the others after `delay` (as netem's
               `reorder 25% delay 10ms`; netem's correlation is not modelled)

Routing: each namespace reaches the other's addresses (IPv4 and IPv6) directly on its veth,
through a neighbour entry with a made-up MAC, so the root namespace's kernel ignores the frames
(they are for another host) and only the bridge carries them; it rewrites the MACs on the way.
GSO is off on both namespace ends (`gso_max_segs 1`), so every frame fits the MTU, and the bridge
fills in the TCP checksum the sender left to offload.

Every frame the bridge carried, lost or duplicated is counted in `ImpairedPath.counts`.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.netns import VethPair, packet_socket, veth_pair
from tests.waiting import scaled

PACKET_OUTGOING = 4
FAKE_MAC = {"a": bytes.fromhex("020000ee0001"), "b": bytes.fromhex("020000ee0002")}


@dataclass
class ImpairedPath:
    a: VethPair
    b: VethPair
    counts: dict[str, int] = field(default_factory=lambda: {"carried": 0, "lost": 0, "dup": 0})


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=scaled(20))


def _route(src: VethPair, dst: VethPair, mac: bytes) -> None:
    text = ":".join(f"{b:02x}" for b in mac)
    _ip("-n", src.ns, "link", "set", "dev", src.ns_if, "gso_max_segs", "1")
    for addr, plen in ((dst.ns_ip, "32"), (dst.ns_ip6, "128")):
        _ip("-n", src.ns, "route", "add", f"{addr}/{plen}", "dev", src.ns_if)
        _ip("-n", src.ns, "neigh", "replace", addr, "lladdr", text, "dev", src.ns_if,
            "nud", "permanent")  # fmt: skip


def _sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def fix_tcp_checksum(frame: bytes) -> bytes:
    """The frame with its TCP checksum computed (IPv4, or IPv6 without extension headers)."""
    ethertype = frame[12:14]
    if ethertype == b"\x08\x00" and frame[14 + 9] == 6:
        ihl = (frame[14] & 15) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        start, end = 14 + ihl, 14 + total
        pseudo = frame[26:34] + struct.pack("!BBH", 0, 6, end - start)
    elif ethertype == b"\x86\xdd" and frame[14 + 6] == 6:
        plen = struct.unpack_from("!H", frame, 18)[0]
        start, end = 54, 54 + plen
        pseudo = frame[22:54] + struct.pack("!I3xB", plen, 6)
    else:
        return frame
    segment = frame[start : start + 16] + b"\0\0" + frame[start + 18 : end]
    checksum = 0xFFFF - _sum(pseudo + segment) or 0xFFFF
    return frame[: start + 16] + struct.pack("!H", checksum) + frame[start + 18 :]


class _Bridge(threading.Thread):
    def __init__(self, path: ImpairedPath, loss: float, reorder: float, duplicate: float,
                 delay: float, seed: int) -> None:  # fmt: skip
        super().__init__(name="impair-bridge", daemon=True)
        self.path, self.loss, self.reorder, self.duplicate = path, loss, reorder, duplicate
        self.delay, self.rng = delay, random.Random(seed)
        self.stopping = threading.Event()
        a, b = path.a, path.b
        self.sock_a, self.sock_b = packet_socket(a.host_if), packet_socket(b.host_if)
        mac = {name: bytes.fromhex(v.replace(":", "")) for name, v in
               (("a_ns", a.ns_mac), ("a_host", a.host_mac), ("b_ns", b.ns_mac),
                ("b_host", b.host_mac))}  # fmt: skip
        # frames from A's namespace (to B's fake MAC) go out of B's host end, and back
        self.routes = {
            self.sock_a.fileno(): (FAKE_MAC["b"], self.sock_b, mac["b_ns"] + mac["b_host"]),
            self.sock_b.fileno(): (FAKE_MAC["a"], self.sock_a, mac["a_ns"] + mac["a_host"]),
        }

    def run(self) -> None:
        queue: list[tuple[float, int, socket.socket, bytes]] = []
        order = itertools.count()
        socks = {s.fileno(): s for s in (self.sock_a, self.sock_b)}
        counts = self.path.counts
        while not self.stopping.is_set():
            now = time.monotonic()
            timeout = min(0.05, max(0.0, queue[0][0] - now)) if queue else 0.05
            ready, _, _ = select.select(list(socks), [], [], timeout)
            now = time.monotonic()
            for fd in ready:
                frame, addr = socks[fd].recvfrom(65536)
                fake, out, header = self.routes[fd]
                if addr[2] == PACKET_OUTGOING or frame[:6] != fake:
                    continue
                counts["carried"] += 1
                if self.rng.random() < self.loss:
                    counts["lost"] += 1
                    continue
                frame = fix_tcp_checksum(header + frame[12:])
                copies = 2 if self.rng.random() < self.duplicate else 1
                counts["dup"] += copies - 1
                for _ in range(copies):
                    later = 0.0 if self.rng.random() < self.reorder else self.delay
                    heapq.heappush(queue, (now + later, next(order), out, frame))
            while queue and queue[0][0] <= now:
                _, _, out, frame = heapq.heappop(queue)
                out.send(frame)

    def close(self) -> None:
        self.stopping.set()
        self.join(scaled(5))
        self.sock_a.close()
        self.sock_b.close()


@contextlib.contextmanager
def impaired_path(
    *,
    loss: float = 0.05,
    reorder: float = 0.25,
    duplicate: float = 0.02,
    delay: float = 0.010,
    seed: int = 15,
) -> Iterator[ImpairedPath]:
    """Namespaces A and B joined through the impairing bridge (module docstring)."""
    with veth_pair() as a, veth_pair() as b:
        path = ImpairedPath(a, b)
        _route(a, b, FAKE_MAC["b"])
        _route(b, a, FAKE_MAC["a"])
        bridge = _Bridge(path, loss, reorder, duplicate, delay, seed)
        bridge.start()
        try:
            yield path
        finally:
            bridge.close()
