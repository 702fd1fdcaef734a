"""The parts of the fleet's end-to-end test (tests/fleet/test_e2e.py): the fleet it runs (a
Lab with its sites, sensors and central, watched through their status segments and REST APIs),
a WebSocket client that follows the central's packets, and the checks that compare what each
sensor captured with what the central shows."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from leireye.fleet.lab import Child, Lab, Site
from leireye.fleet.model import SENSOR_TABLE_FILE, read_sensor_table
from leireye.fleet.status import PublisherStatus, StatusPage
from leireye.ring.status import StatusBlock
from tests.http import Http
from tests.waiting import scaled, wait_for
from tests.wsclient import client, send

NAMES = ("edge-a", "edge-b")
ADMIN = ("admin", "e2e-admin-pass-1")
RATE = 25.0  # client actions a second on each site
Packet = dict[str, Any]


def link_packets(ifname: str) -> int:
    """Packets that crossed the root namespace's end of a veth pair, both ways."""
    stats = Path("/sys/class/net", ifname, "statistics")
    return sum(int((stats / f"{way}_packets").read_text()) for way in ("rx", "tx"))


def mac(ns: str | None, ifname: str) -> str:
    cmd = ["ip", "-o", "link", "show", ifname]
    cmd = ["ip", "netns", "exec", ns, *cmd] if ns else cmd
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return out[out.index("link/ether") + 1]


def pin_neighbours(site: Site) -> None:
    """Permanent ARP entries on both ends: no ARP request ever crosses the link, so no probe
    comes seconds after the clients stop."""
    host_mac, ns_mac = mac(None, site.host_if), mac(site.ns, site.ns_if)
    subprocess.run(["ip", "neigh", "replace", site.ns_ip, "lladdr", ns_mac, "dev", site.host_if,
                    "nud", "permanent"], check=True)  # fmt: skip
    subprocess.run(["ip", "-n", site.ns, "neigh", "replace", site.host_ip, "lladdr", host_mac,
                    "dev", site.ns_if, "nud", "permanent"], check=True)  # fmt: skip


def login(port: int) -> Http:
    http = Http(port)
    reply = http.post("/api/auth/login", {"username": ADMIN[0], "password": ADMIN[1]})
    assert reply.status == 200, reply.body
    return http.with_token(reply.json["access_token"])


def attach(kind: Any, name: str) -> Any:
    try:
        return kind.attach(name)
    except Exception:  # the supervisor makes it a little after it starts
        return None


@dataclass
class Edge:
    """One site and its sensor: the child, its status block, its publisher's status page."""

    name: str
    site: Site
    child: Child
    http: Http
    block: StatusBlock
    page: StatusPage

    def captured(self) -> int:
        return self.block.read().packets_captured

    def publisher(self) -> PublisherStatus:
        return self.page.read()


@dataclass
class Fleet:
    lab: Lab
    edges: list[Edge]
    central: Child
    central_http: Http = field(init=False)

    def __post_init__(self) -> None:
        self.central_http = login(self._port())

    def _port(self) -> int:
        assert self.central.web_port is not None
        return self.central.web_port

    @property
    def ws_url(self) -> str:
        assert self.central_http.token is not None
        token = urllib.parse.quote(self.central_http.token)
        return f"ws://127.0.0.1:{self._port()}/ws/capture?token={token}"

    def last_id(self) -> int:
        """The central ring's last packet id (`GET /health` with a token)."""
        reply = self.central_http.get("/health")
        assert reply.status == 200, reply.body
        return int(reply.json["ring"]["last_id"])

    def table(self) -> dict[str, Any]:
        assert self.central.state_dir is not None
        found = read_sensor_table(self.central.state_dir / SENSOR_TABLE_FILE)
        return {s.name: s for s in found.sensors} if found else {}

    def restart_central(self) -> None:
        """Stop `leireye central` (SIGTERM: its clean stop) and start it again on the same
        state directory and port."""
        self.central.proc.terminate()
        self.central.proc.wait(scaled(30))
        assert self.central.proc.returncode == 0, self.central.log_tail()
        self.central = self.lab.start_central(list(NAMES), web_port=self._port(),
                                              extra=CENTRAL_EXTRA)  # fmt: skip
        self.lab.wait_web(self.central, scaled(60))
        self.central_http = login(self._port())

    def restart_sensor(self, index: int) -> Edge:
        """Stop a sensor's `leireye run` (SIGTERM: its clean stop) and start it again on its
        site, port and state directory: a new run, whose ids start over at 1."""
        old = self.edges[index]
        old.block.close()
        old.page.close()
        old.child.proc.terminate()
        old.child.proc.wait(scaled(30))
        assert old.child.proc.returncode == 0, old.child.log_tail()
        child = self.lab.start_sensor(old.name, old.site, web_port=old.child.web_port,
                                      extra=SENSOR_EXTRA)  # fmt: skip
        self.lab.wait_web(child, scaled(60))
        self.edges[index] = watch_edge(self.lab, old.name, old.site, child)
        return self.edges[index]


SENSOR_EXTRA: dict[str, Any] = {
    "flows": {"enabled": False},
    "store": {"enabled": False},
    "fleet": {"batch_ms": 50},
}
CENTRAL_EXTRA: dict[str, Any] = {"central": {"discover_s": 0.5}}


def watch_edge(lab: Lab, name: str, site: Site, child: Child) -> Edge:
    """The sensor `child` watched, once it captures and its publisher is connected."""
    base = f"leireye-lab{lab.tag}-{name}"
    block = wait_for(lambda: attach(StatusBlock, f"{base}-status"), 20, f"{name}'s status")
    page = wait_for(lambda: attach(StatusPage, f"{base}-fleet"), 20, f"{name}'s publisher")
    assert child.web_port is not None
    edge = Edge(name, site, child, login(child.web_port), block, page)
    wait_for(lambda: edge.block.read().state == "capturing", 30, f"{name} capturing")
    wait_for(lambda: edge.publisher().connected, 30, f"{name}'s publisher connected")
    return edge


# -- the sensors' side ---------------------------------------------------------------------------


def rest_packets(http: Http, after: int, until: int, extra: str = "") -> list[Packet]:
    """Every packet with an id in (after, until] from a REST packet list, oldest first."""
    got: list[Packet] = []
    before: int | None = until + 1
    while before is not None:
        reply = http.get(f"/api/capture/packets?limit=1000&after={after}&before={before}{extra}")
        assert reply.status == 200, reply.body
        got += reply.json["packets"]
        before = reply.json["next_before"]
    got.sort(key=lambda p: p["id"])
    return got


def key(packet: Packet) -> tuple[Any, ...]:
    """What a packet is, without its id (the sensor's and the central's differ)."""
    return (packet["timestamp"], packet["src_ip"], packet["dst_ip"], packet["src_port"],
            packet["dst_port"], packet["protocol"], packet["length"], tuple(packet["flags"]),
            packet["info"], packet["app"], packet["ip_version"], packet["vlan"])  # fmt: skip


@dataclass
class Mark:
    """Where each counter stood before a phase."""

    link: dict[str, int]
    captured: dict[str, int]
    central_id: int
    ingested: dict[str, int]  # the central's count of each sensor's packets

    @classmethod
    def take(cls, fleet: Fleet) -> Mark:
        table = fleet.table()
        return cls(
            {e.name: link_packets(e.site.host_if) for e in fleet.edges},
            {e.name: e.captured() for e in fleet.edges},
            fleet.last_id(),
            {e.name: table[e.name].packets if e.name in table else 0 for e in fleet.edges},
        )


def settled_counts(fleet: Fleet, mark: Mark, traffic: list[Child]) -> dict[str, int] | None:
    """Once the clients have exited and each sensor has captured what crossed its link and
    published all of it: the packets each sensor captured since `mark`."""
    if any(child.proc.poll() is None for child in traffic):
        return None
    counts = {}
    for edge in fleet.edges:
        link = link_packets(edge.site.host_if) - mark.link[edge.name]
        captured = edge.captured()
        pub = edge.publisher()
        if captured - mark.captured[edge.name] != link or pub.behind or pub.in_flight:
            return None
        if pub.published_records + pub.lost != captured:
            return None
        counts[edge.name] = link
    return counts


# -- the central's WebSocket ---------------------------------------------------------------------


@dataclass
class Stream:
    """The packets one client received from the central, over its connections."""

    packets: list[Packet] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0

    @property
    def last_id(self) -> int:
        return int(self.packets[-1]["id"]) if self.packets else 0

    def of(self, name: str) -> list[Packet]:
        return [p for p in self.packets if p["sensor"] == name]


async def follow(
    url: str, stream: Stream, since: int, done: Callable[[], bool], poll_s: float = 0.2
) -> bool:
    """Subscribe with `since` and receive into `stream` until `done()` (checked every `poll_s`)
    says stop (True), or the server closes the connection (False)."""
    stream.connections += 1
    async with client(url) as ws:
        await send(ws, type="subscribe", channel="packets", since=since, options={"batch": True})
        next_check = 0.0
        while True:
            if time.monotonic() >= next_check:
                if done():
                    return True
                next_check = time.monotonic() + poll_s
            try:
                message = await receive(ws, poll_s)
            except ConnectionClosed:
                return False
            if message is None:
                continue
            kind = message["type"]
            if kind == "packets":
                stream.packets += message["data"]
            elif kind == "packet":
                stream.packets.append(message["data"])
            elif kind == "dropped":
                stream.dropped.append(message)
            elif kind == "error":
                raise AssertionError(f"the central said {message}")


async def receive(ws: ClientConnection, timeout: float) -> dict[str, Any] | None:
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        return None
    assert isinstance(raw, str)
    message: dict[str, Any] = json.loads(raw)
    return message


def deadline(seconds: float, what: str, fleet: Fleet | None = None) -> Callable[[], bool]:
    end = time.monotonic() + scaled(seconds)

    def check() -> bool:
        if time.monotonic() > end:
            state = "" if fleet is None else describe(fleet)
            raise AssertionError(f"timed out after {scaled(seconds):.0f}s waiting for {what}"
                                 f"{state}")  # fmt: skip
        return False

    return check


def describe(fleet: Fleet) -> str:
    """Where every counter stands, for a failure's message."""
    lines = [f"\ncentral last id {fleet.last_id()}"]
    table = fleet.table()
    for edge in fleet.edges:
        state = table.get(edge.name)
        lines.append(
            f"{edge.name}: link {link_packets(edge.site.host_if)} captured {edge.captured()} "
            f"publisher {edge.publisher()} central {state}"
        )
    lines.append(f"central log:\n{fleet.central.log_tail(20)}")
    return "\n".join(lines)


# -- the checks ----------------------------------------------------------------------------------


def check_phase(fleet: Fleet, mark: Mark, counts: dict[str, int], stream: Stream) -> None:
    """Per sensor: the central's packets of this phase are the sensor's, each once, in the
    sensor's order; ids increase; nothing was lost or dropped anywhere."""
    ids = [int(p["id"]) for p in stream.packets]
    assert ids == list(range(mark.central_id + 1, mark.central_id + 1 + len(ids))), (
        "central ids: a gap or a duplicate"
    )
    assert stream.dropped == []
    assert len(ids) == sum(counts.values())
    central_rest = rest_packets(fleet.central_http, mark.central_id, ids[-1])
    assert central_rest == stream.packets  # the REST list is the WebSocket's, packet for packet
    wait_for(lambda: table_complete(fleet, mark), 5, "the sensor table to count every packet")
    table = fleet.table()
    for edge in fleet.edges:
        mine = stream.of(edge.name)
        assert len(mine) == counts[edge.name] > 0, edge.name
        first = mark.captured[edge.name]
        own = rest_packets(edge.http, first, first + counts[edge.name])
        assert [p["id"] for p in own] == list(range(first + 1, first + 1 + counts[edge.name]))
        assert [key(p) for p in mine] == [key(p) for p in own], f"{edge.name}: not the same"
        just_mine = rest_packets(fleet.central_http, mark.central_id, ids[-1],
                                  f"&sensor={edge.name}")  # fmt: skip
        assert just_mine == mine
        status = edge.http.get("/api/capture/status").json
        publisher = edge.publisher()
        assert status["packets_captured"] == edge.captured()
        assert (status["kernel_drops"], publisher.lost, publisher.last_error) == (0, 0, "")
        assert publisher.published_records == edge.captured()
        state = table[edge.name]
        assert (state.lost, state.bad_batches, state.missed_messages) == (0, 0, 0), state
        assert state.state == "live"
    central_status = fleet.central_http.get("/api/capture/status").json
    assert central_status["kernel_drops"] == 0


def start_traffic(fleet: Fleet, seconds: float) -> list[Child]:
    return [fleet.lab.start_traffic(e.site, rate=RATE, seconds=seconds) for e in fleet.edges]


def table_complete(fleet: Fleet, mark: Mark) -> bool:
    """The central's sensor table counts every packet each sensor captured since `mark`."""
    table = fleet.table()
    return all(
        e.name in table
        and table[e.name].packets - mark.ingested[e.name] == e.captured() - mark.captured[e.name]
        for e in fleet.edges
    )


def central_has(fleet: Fleet, stream: Stream, counts: dict[str, int] | None) -> bool:
    return counts is not None and all(len(stream.of(n)) >= c for n, c in counts.items())
