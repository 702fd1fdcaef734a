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
while traffic flows; a publisher killed and the central restarted while traffic flows; a
sensor restarted (a new run, its ids from 1). The fleet's parts and checks: tests/fleet/e2e.py.

The sites' neighbour entries are pinned (no ARP on the links), so once the clients have exited
and their last segments are acknowledged nothing more crosses a link: every wait is on counts.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leireye.fleet.lab import Lab
from leireye.fleet.model import FleetError
from tests.accounts import users_yaml
from tests.fleet.e2e import (
    ADMIN,
    CENTRAL_EXTRA,
    NAMES,
    SENSOR_EXTRA,
    Fleet,
    Mark,
    Stream,
    central_has,
    check_phase,
    deadline,
    follow,
    key,
    pin_neighbours,
    rest_packets,
    settled_counts,
    start_traffic,
    table_complete,
    watch_edge,
)
from tests.fleet.nats import nats_server_binary
from tests.netns import require_root, skip_unless_root
from tests.waiting import scaled, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow, skip_unless_root]


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
                pin_neighbours(site)
            pairs = zip(NAMES, sites, strict=True)
            children = [lab.start_sensor(n, s, extra=SENSOR_EXTRA) for n, s in pairs]
            central = lab.start_central(list(NAMES), extra=CENTRAL_EXTRA)
            for child in [*children, central]:
                lab.wait_web(child, scaled(90))
            edges = [
                watch_edge(lab, name, site, child)
                for name, site, child in zip(NAMES, sites, children, strict=True)
            ]
            made = Fleet(lab, edges, central)
            yield made
            for edge in made.edges:
                edge.block.close()
                edge.page.close()
    finally:
        shutil.rmtree(directory)


# -- the tests -----------------------------------------------------------------------------------


def test_every_packet_of_every_sensor_once_in_order_with_its_sensor(fleet: Fleet) -> None:
    mark = Mark.take(fleet)
    traffic = start_traffic(fleet, seconds=4)
    stream = Stream()
    settled: list[dict[str, int]] = []
    timeout = deadline(60, "every sensor's packets at the central")

    def done() -> bool:
        if not settled and (counts := settled_counts(fleet, mark, traffic)):
            settled.append(counts)
        return central_has(fleet, stream, settled[0] if settled else None) or timeout()

    assert asyncio.run(follow(fleet.ws_url, stream, mark.central_id, done))
    counts = settled[0]
    assert all(child.proc.returncode == 0 for child in traffic)
    assert all(count > 100 for count in counts.values()), counts
    assert len(set(p["sensor"] for p in stream.packets)) == len(NAMES)
    check_phase(fleet, mark, counts, stream)


def test_a_client_that_resumes_with_since_misses_nothing(fleet: Fleet) -> None:
    mark = Mark.take(fleet)
    traffic = start_traffic(fleet, seconds=6)
    stream = Stream()
    timeout = deadline(60, "the first packets")
    first = asyncio.run(follow(fleet.ws_url, stream, mark.central_id,
                                lambda: len(stream.packets) >= 200 or timeout()))  # fmt: skip
    assert first
    away_from = stream.last_id
    # away while the central goes on ingesting: those packets must come with the resume
    wait_for(lambda: fleet.last_id() >= away_from + 300, 30, "packets while the client is away")
    assert any(child.proc.poll() is None for child in traffic), "traffic ended too soon"
    settled: list[dict[str, int]] = []
    timeout = deadline(60, "every packet after the resume")

    def done() -> bool:
        if not settled and (counts := settled_counts(fleet, mark, traffic)):
            settled.append(counts)
        return central_has(fleet, stream, settled[0] if settled else None) or timeout()

    assert asyncio.run(follow(fleet.ws_url, stream, away_from, done))
    assert stream.connections == 2
    check_phase(fleet, mark, settled[0], stream)


def test_a_killed_publisher_and_a_restarted_central_ingest_every_packet_once(
    fleet: Fleet,
) -> None:
    """While traffic flows: a sensor's publisher SIGKILLed (its supervisor restarts it), then
    the central stopped and started again. The central ingests every packet once (its table's
    counts, nothing lost or missed) and its ids go on without a hole. A client connected across
    the restart gets every packet once, also those the stopped central had ingested and not yet
    sent it: the restarted central replays them into its ring with their ids (its journal), so
    the resume has no gap (no `dropped`)."""
    mark = Mark.take(fleet)
    table_before = fleet.table()
    traffic = start_traffic(fleet, seconds=8)
    stream = Stream()
    killed = fleet.edges[0]
    old_pid = killed.publisher().pid
    timeout = deadline(60, "packets of both sensors")

    def some_of_each() -> bool:
        return all(len(stream.of(n)) >= 100 for n in NAMES) or timeout()

    assert asyncio.run(follow(fleet.ws_url, stream, mark.central_id, some_of_each))
    os.kill(old_pid, signal.SIGKILL)  # with batches in flight, probably: traffic flows
    wait_for(lambda: killed.publisher().pid not in (0, old_pid), 30, "a new publisher")

    async def until_closed() -> None:
        assert not await follow(fleet.ws_url, stream, stream.last_id, lambda: False)

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
    timeout = deadline(60, "every packet after the central's restart", fleet)

    def done() -> bool:
        if not settled and (counts := settled_counts(fleet, mark, traffic)):
            settled.append(counts)
        if not settled:
            return timeout()
        return (table_complete(fleet, mark) and fleet.last_id() == stream.last_id) or timeout()

    assert asyncio.run(follow(fleet.ws_url, stream, stopped_at, done))
    counts = settled[0]
    assert stream.connections == 3
    table = fleet.table()
    for name in NAMES:  # the same indexes; each packet ingested once, none lost
        state, before = table[name], table_before[name]
        assert state.index == before.index
        assert (state.lost, state.bad_batches, state.missed_messages) == (0, 0, 0), state
    # What the stopped central had ingested but not yet sent this client when it stopped came
    # back with the restarted central's ring (the journal's replay, with the same ids): no gap.
    ids = [int(p["id"]) for p in stream.packets]
    assert stream.dropped == [], stream.dropped
    assert ids and ids == sorted(set(ids))
    assert len(ids) == ids[-1] - mark.central_id, "ids neither received nor told lost"
    assert len(ids) == sum(counts.values())
    missing = 0
    for edge in fleet.edges:
        first = mark.captured[edge.name]
        own = [key(p) for p in rest_packets(edge.http, first, first + counts[edge.name])]
        mine = [key(p) for p in stream.of(edge.name)]
        assert _ordered_within(mine, own), f"{edge.name}: out of order or not its packets"
        missing += len(own) - len(mine)
        publisher = edge.publisher()
        assert (publisher.lost, publisher.published_records) == (0, edge.captured())
    assert missing == 0  # every packet reached the client
    after = rest_packets(fleet.central_http, stopped_at, ids[-1])
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
    traffic = start_traffic(fleet, seconds=3)
    stream = Stream()
    settled: list[dict[str, int]] = []
    timeout = deadline(60, "every packet of the new run at the central", fleet)

    def done() -> bool:
        if not settled and (counts := settled_counts(fleet, mark, traffic)):
            settled.append(counts)
        return central_has(fleet, stream, settled[0] if settled else None) or timeout()

    assert asyncio.run(follow(fleet.ws_url, stream, mark.central_id, done))
    check_phase(fleet, mark, settled[0], stream)  # ids going back are no loss
    after = fleet.table()
    assert {n: after[n].index for n in NAMES} == {n: before[n].index for n in NAMES}
