"""The fleet end to end (issue 18), with every part real: two sites (network namespaces, veth
pairs) with real clients making finite traffic, one `leireye run` sensor on each publishing into
one nats-server, one `leireye central`, and real WebSocket and REST clients at the central.

What is checked, per sensor, is that the central shows exactly what that sensor captured: the
sensor's own list of its packets (its REST API, in its id order) equals the central's list of
the packets carrying that sensor's name (the central's WebSocket, in the central's id order),
field by field (time stamp, addresses, ports, length, flags, info, ...): every packet once, in
the sensor's order; and the count equals the packets that crossed the site's veth (the link's
own counters: the known count), the sensor's `packets_captured` and its publisher's
`published_records + lost` (lost 0). Then a client that disconnects and resumes with `since`
while traffic flows, and a publisher killed and the central restarted while traffic flows.

The sites' neighbour entries are pinned (no ARP on the links), so once the clients have exited
and their last segments are acknowledged nothing more crosses a link: every wait is on counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from leireye.fleet.lab import Child, Lab, Site
from leireye.fleet.model import SENSOR_TABLE_FILE, FleetError, read_sensor_table
from leireye.fleet.status import PublisherStatus, StatusPage
from leireye.ring.status import StatusBlock
from tests.accounts import users_yaml
from tests.fleet.nats import nats_server_binary
from tests.http import Http
from tests.netns import require_root, skip_unless_root
from tests.waiting import scaled, wait_for
from tests.wsclient import client, send

pytestmark = [pytest.mark.root, pytest.mark.slow, skip_unless_root]

NAMES = ("edge-a", "edge-b")
ADMIN = ("admin", "e2e-admin-pass-1")
RATE = 25.0  # client actions a second on each site
Packet = dict[str, Any]


def _link_packets(ifname: str) -> int:
    """Packets that crossed the root namespace's end of a veth pair, both ways."""
    stats = Path("/sys/class/net", ifname, "statistics")
    return sum(int((stats / f"{way}_packets").read_text()) for way in ("rx", "tx"))


def _mac(ns: str | None, ifname: str) -> str:
    cmd = ["ip", "-o", "link", "show", ifname]
    cmd = ["ip", "netns", "exec", ns, *cmd] if ns else cmd
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
    return out[out.index("link/ether") + 1]


def _pin_neighbours(site: Site) -> None:
    """Permanent ARP entries on both ends: no ARP request ever crosses the link, so no probe
    comes seconds after the clients stop."""
    host_mac, ns_mac = _mac(None, site.host_if), _mac(site.ns, site.ns_if)
    subprocess.run(["ip", "neigh", "replace", site.ns_ip, "lladdr", ns_mac, "dev", site.host_if,
                    "nud", "permanent"], check=True)  # fmt: skip
    subprocess.run(["ip", "-n", site.ns, "neigh", "replace", site.host_ip, "lladdr", host_mac,
                    "dev", site.ns_if, "nud", "permanent"], check=True)  # fmt: skip


def _login(port: int) -> Http:
    http = Http(port)
    reply = http.post("/api/auth/login", {"username": ADMIN[0], "password": ADMIN[1]})
    assert reply.status == 200, reply.body
    return http.with_token(reply.json["access_token"])


def _attach(kind: Any, name: str) -> Any:
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
        self.central_http = _login(self._port())

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
        self.central_http = _login(self._port())

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
        self.edges[index] = _edge(self.lab, old.name, old.site, child)
        return self.edges[index]


SENSOR_EXTRA: dict[str, Any] = {
    "flows": {"enabled": False},
    "store": {"enabled": False},
    "fleet": {"batch_ms": 50},
}
CENTRAL_EXTRA: dict[str, Any] = {"central": {"discover_s": 0.5}}


def _edge(lab: Lab, name: str, site: Site, child: Child) -> Edge:
    """The sensor `child` watched, once it captures and its publisher is connected."""
    base = f"leireye-lab{lab.tag}-{name}"
    block = wait_for(lambda: _attach(StatusBlock, f"{base}-status"), 20, f"{name}'s status")
    page = wait_for(lambda: _attach(StatusPage, f"{base}-fleet"), 20, f"{name}'s publisher")
    assert child.web_port is not None
    edge = Edge(name, site, child, _login(child.web_port), block, page)
    wait_for(lambda: edge.block.read().state == "capturing", 30, f"{name} capturing")
    wait_for(lambda: edge.publisher().connected, 30, f"{name}'s publisher connected")
    return edge


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    require_root()
    try:
        nats_server_binary()
    except FleetError as exc:
        pytest.skip(f"{exc} (scripts/setup.sh installs it)")
    directory = Path(tempfile.mkdtemp(prefix="leireye-e2e-", dir="/tmp"))
    directory.chmod(0o755)
    users = users_yaml({ADMIN[0]: ("ADMIN", ADMIN[1])})
    try:
        with Lab(directory) as lab:
            lab.start_nats()
            for name in (*NAMES, "central"):  # a users file of our own in each state dir
                (directory / name).mkdir(mode=0o755)
                (directory / name / "users.yaml").write_text(users)
                (directory / name / "users.yaml").chmod(0o600)
            sites = [lab.add_site() for _ in NAMES]
            for site in sites:
                _pin_neighbours(site)
            pairs = zip(NAMES, sites, strict=True)
            children = [lab.start_sensor(n, s, extra=SENSOR_EXTRA) for n, s in pairs]
            central = lab.start_central(list(NAMES), extra=CENTRAL_EXTRA)
            for child in [*children, central]:
                lab.wait_web(child, scaled(90))
            edges = [
                _edge(lab, name, site, child)
                for name, site, child in zip(NAMES, sites, children, strict=True)
            ]
            made = Fleet(lab, edges, central)
            yield made
            for edge in edges:
                edge.block.close()
                edge.page.close()
    finally:
        shutil.rmtree(directory)


# -- the sensors' side ---------------------------------------------------------------------------


def _rest_packets(http: Http, after: int, until: int, extra: str = "") -> list[Packet]:
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


def _key(packet: Packet) -> tuple[Any, ...]:
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
            {e.name: _link_packets(e.site.host_if) for e in fleet.edges},
            {e.name: e.captured() for e in fleet.edges},
            fleet.last_id(),
            {e.name: table[e.name].packets if e.name in table else 0 for e in fleet.edges},
        )


def _settled(fleet: Fleet, mark: Mark, traffic: list[Child]) -> dict[str, int] | None:
    """Once the clients have exited and each sensor has captured what crossed its link and
    published all of it: the packets each sensor captured since `mark`."""
    if any(child.proc.poll() is None for child in traffic):
        return None
    counts = {}
    for edge in fleet.edges:
        link = _link_packets(edge.site.host_if) - mark.link[edge.name]
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


async def _follow(
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
                message = await _receive(ws, poll_s)
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


async def _receive(ws: ClientConnection, timeout: float) -> dict[str, Any] | None:
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout)
    except TimeoutError:
        return None
    assert isinstance(raw, str)
    message: dict[str, Any] = json.loads(raw)
    return message


def _deadline(seconds: float, what: str, fleet: Fleet | None = None) -> Callable[[], bool]:
    end = time.monotonic() + scaled(seconds)

    def check() -> bool:
        if time.monotonic() > end:
            state = "" if fleet is None else _describe(fleet)
            raise AssertionError(f"timed out after {scaled(seconds):.0f}s waiting for {what}"
                                 f"{state}")  # fmt: skip
        return False

    return check


def _describe(fleet: Fleet) -> str:
    """Where every counter stands, for a failure's message."""
    lines = [f"\ncentral last id {fleet.last_id()}"]
    table = fleet.table()
    for edge in fleet.edges:
        state = table.get(edge.name)
        lines.append(
            f"{edge.name}: link {_link_packets(edge.site.host_if)} captured {edge.captured()} "
            f"publisher {edge.publisher()} central {state}"
        )
    lines.append(f"central log:\n{fleet.central.log_tail(20)}")
    return "\n".join(lines)


# -- the checks ----------------------------------------------------------------------------------


def _check_phase(fleet: Fleet, mark: Mark, counts: dict[str, int], stream: Stream) -> None:
    """Per sensor: the central's packets of this phase are the sensor's, each once, in the
    sensor's order; ids increase; nothing was lost or dropped anywhere."""
    ids = [int(p["id"]) for p in stream.packets]
    assert ids == list(range(mark.central_id + 1, mark.central_id + 1 + len(ids))), (
        "central ids: a gap or a duplicate"
    )
    assert stream.dropped == []
    assert len(ids) == sum(counts.values())
    central_rest = _rest_packets(fleet.central_http, mark.central_id, ids[-1])
    assert central_rest == stream.packets  # the REST list is the WebSocket's, packet for packet
    wait_for(lambda: _table_complete(fleet, mark), 5, "the sensor table to count every packet")
    table = fleet.table()
    for edge in fleet.edges:
        mine = stream.of(edge.name)
        assert len(mine) == counts[edge.name] > 0, edge.name
        first = mark.captured[edge.name]
        own = _rest_packets(edge.http, first, first + counts[edge.name])
        assert [p["id"] for p in own] == list(range(first + 1, first + 1 + counts[edge.name]))
        assert [_key(p) for p in mine] == [_key(p) for p in own], f"{edge.name}: not the same"
        just_mine = _rest_packets(fleet.central_http, mark.central_id, ids[-1],
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


def _traffic(fleet: Fleet, seconds: float) -> list[Child]:
    return [fleet.lab.start_traffic(e.site, rate=RATE, seconds=seconds) for e in fleet.edges]


def _wait_settled(fleet: Fleet, mark: Mark, traffic: list[Child], what: str) -> dict[str, int]:
    counts: dict[str, int] = wait_for(lambda: _settled(fleet, mark, traffic), 60, what, 0.05)
    return counts


def _table_complete(fleet: Fleet, mark: Mark) -> bool:
    """The central's sensor table counts every packet each sensor captured since `mark`."""
    table = fleet.table()
    return all(
        e.name in table
        and table[e.name].packets - mark.ingested[e.name] == e.captured() - mark.captured[e.name]
        for e in fleet.edges
    )


def _central_has(fleet: Fleet, stream: Stream, counts: dict[str, int] | None) -> bool:
    return counts is not None and all(len(stream.of(n)) >= c for n, c in counts.items())


# -- the tests -----------------------------------------------------------------------------------


def test_every_packet_of_every_sensor_once_in_order_with_its_sensor(fleet: Fleet) -> None:
    mark = Mark.take(fleet)
    traffic = _traffic(fleet, seconds=4)
    stream = Stream()
    settled: list[dict[str, int]] = []
    timeout = _deadline(60, "every sensor's packets at the central")

    def done() -> bool:
        if not settled and (counts := _settled(fleet, mark, traffic)):
            settled.append(counts)
        return _central_has(fleet, stream, settled[0] if settled else None) or timeout()

    assert asyncio.run(_follow(fleet.ws_url, stream, mark.central_id, done))
    counts = settled[0]
    assert all(child.proc.returncode == 0 for child in traffic)
    assert all(count > 100 for count in counts.values()), counts
    assert len(set(p["sensor"] for p in stream.packets)) == len(NAMES)
    _check_phase(fleet, mark, counts, stream)


def test_a_client_that_resumes_with_since_misses_nothing(fleet: Fleet) -> None:
    mark = Mark.take(fleet)
    traffic = _traffic(fleet, seconds=6)
    stream = Stream()
    timeout = _deadline(60, "the first packets")
    first = asyncio.run(_follow(fleet.ws_url, stream, mark.central_id,
                                lambda: len(stream.packets) >= 200 or timeout()))  # fmt: skip
    assert first
    away_from = stream.last_id
    # away while the central goes on ingesting: those packets must come with the resume
    wait_for(lambda: fleet.last_id() >= away_from + 300, 30, "packets while the client is away")
    assert any(child.proc.poll() is None for child in traffic), "traffic ended too soon"
    settled: list[dict[str, int]] = []
    timeout = _deadline(60, "every packet after the resume")

    def done() -> bool:
        if not settled and (counts := _settled(fleet, mark, traffic)):
            settled.append(counts)
        return _central_has(fleet, stream, settled[0] if settled else None) or timeout()

    assert asyncio.run(_follow(fleet.ws_url, stream, away_from, done))
    assert stream.connections == 2
    _check_phase(fleet, mark, settled[0], stream)


def test_a_killed_publisher_and_a_restarted_central_ingest_every_packet_once(
    fleet: Fleet,
) -> None:
    """While traffic flows: a sensor's publisher SIGKILLed (its supervisor restarts it), then
    the central stopped and started again. The central ingests every packet once (its table's
    counts, nothing lost or missed) and its ids go on without a hole. A client connected across
    the restart gets every packet once, except those the stopped central had ingested and not
    yet sent it: they went with its ring, and the resume counts them (`dropped`, `resume`)."""
    mark = Mark.take(fleet)
    table_before = fleet.table()
    traffic = _traffic(fleet, seconds=8)
    stream = Stream()
    killed = fleet.edges[0]
    old_pid = killed.publisher().pid
    timeout = _deadline(60, "packets of both sensors")

    def some_of_each() -> bool:
        return all(len(stream.of(n)) >= 100 for n in NAMES) or timeout()

    assert asyncio.run(_follow(fleet.ws_url, stream, mark.central_id, some_of_each))
    os.kill(old_pid, signal.SIGKILL)  # with batches in flight, probably: traffic flows
    wait_for(lambda: killed.publisher().pid not in (0, old_pid), 30, "a new publisher")

    async def until_closed() -> None:
        assert not await _follow(fleet.ws_url, stream, stream.last_id, lambda: False)

    async def follow_and_stop_central() -> None:
        following = asyncio.create_task(until_closed())
        await asyncio.to_thread(
            wait_for, lambda: fleet.last_id() >= mark.central_id + 500, 30, "more packets"
        )
        await asyncio.to_thread(fleet.central.proc.terminate)
        await asyncio.wait_for(following, scaled(30))  # the server closes the connection

    asyncio.run(follow_and_stop_central())
    assert any(child.proc.poll() is None for child in traffic), "traffic ended too soon"
    stopped_at = stream.last_id
    fleet.restart_central()
    settled: list[dict[str, int]] = []
    timeout = _deadline(60, "every packet after the central's restart", fleet)

    def done() -> bool:
        if not settled and (counts := _settled(fleet, mark, traffic)):
            settled.append(counts)
        if not settled:
            return timeout()
        return (_table_complete(fleet, mark) and fleet.last_id() == stream.last_id) or timeout()

    assert asyncio.run(_follow(fleet.ws_url, stream, stopped_at, done))
    counts = settled[0]
    assert stream.connections == 3
    table = fleet.table()
    for name in NAMES:  # the same indexes; each packet ingested once, none lost
        state, before = table[name], table_before[name]
        assert state.index == before.index
        assert (state.lost, state.bad_batches, state.missed_messages) == (0, 0, 0), state
    # What the stopped central had ingested but not yet sent this client when it stopped went
    # with its ring: the resume says how many ids (a `dropped` notice where they are missing).
    ids = [int(p["id"]) for p in stream.packets]
    gap = sum(int(d["count"]) for d in stream.dropped)
    assert all(d["reason"] == "resume" for d in stream.dropped), stream.dropped
    assert len(stream.dropped) <= 1 and ids and ids == sorted(set(ids))
    assert len(ids) + gap == ids[-1] - mark.central_id, "ids neither received nor told lost"
    assert len(ids) + gap == sum(counts.values())
    missing = 0
    for edge in fleet.edges:
        first = mark.captured[edge.name]
        own = [_key(p) for p in _rest_packets(edge.http, first, first + counts[edge.name])]
        mine = [_key(p) for p in stream.of(edge.name)]
        assert _ordered_within(mine, own), f"{edge.name}: out of order or not its packets"
        missing += len(own) - len(mine)
        publisher = edge.publisher()
        assert (publisher.lost, publisher.published_records) == (0, edge.captured())
    assert missing == gap  # what the client did not get is exactly what it was told lost
    after = _rest_packets(fleet.central_http, stopped_at, ids[-1])
    assert after == [p for p in stream.packets if p["id"] > stopped_at]
    assert fleet.central_http.get("/api/capture/status").json["kernel_drops"] == 0


def _ordered_within(part: list[Any], whole: list[Any]) -> bool:
    """`part` is `whole` with some items left out, the rest in the same order."""
    rest = iter(whole)
    return all(any(item == other for other in rest) for item in part)


def test_a_restarted_sensor_starts_a_new_run_that_the_central_follows(fleet: Fleet) -> None:
    before = fleet.table()
    edge = fleet.restart_sensor(1)
    mark = Mark.take(fleet)
    assert mark.captured[edge.name] == 0  # a new ring: its ids start over
    traffic = _traffic(fleet, seconds=3)
    stream = Stream()
    settled: list[dict[str, int]] = []
    timeout = _deadline(60, "every packet of the new run at the central", fleet)

    def done() -> bool:
        if not settled and (counts := _settled(fleet, mark, traffic)):
            settled.append(counts)
        return _central_has(fleet, stream, settled[0] if settled else None) or timeout()

    assert asyncio.run(_follow(fleet.ws_url, stream, mark.central_id, done))
    _check_phase(fleet, mark, settled[0], stream)  # ids going back are no loss
    after = fleet.table()
    assert {n: after[n].index for n in NAMES} == {n: before[n].index for n in NAMES}
