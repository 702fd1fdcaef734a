"""The `flows` channel without a sensor: filters over flow rows, the `updated` throttle, the
session's subscription and its own outbox, and the hub's feed over a real event ring."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from leireye.flows.rows import FLOW_ROW, uid_text
from leireye.flows.tcpstate import CONN_STATE_INDEX
from leireye.flows.view import ENDED, HOST_ROW, STARTED, UPDATED
from leireye.record import IPV4_MAPPED_LO, App, Proto
from leireye.web.filters import FilterError
from leireye.web.flowfeed import flow_messages
from leireye.web.flowfilter import FlowFilter, Throttle, parse_flow_filters
from leireye.web.frames import PacketRun
from leireye.web.hub import Connection
from leireye.wire import FlowMessage
from tests.inprocess import InProcessSensor, read_pcap
from tests.unit.test_hub_inprocess import until
from tests.unit.test_web_session import ALICE, T0, drain, new_session, send, types

# -- rows ------------------------------------------------------------------------------------


def flow_rows(*specs: dict[str, Any]) -> np.ndarray:
    """FLOW_ROW rows: `orig`/`resp` as "ip:port", and any FLOW_ROW column by name."""
    out = np.zeros(len(specs), dtype=FLOW_ROW)
    for i, spec in enumerate(specs):
        row = out[i]
        spec = dict(spec)
        for side in ("orig", "resp"):
            ip, _, port = spec.pop(side, "10.0.0.1:1000").rpartition(":")
            address = ipaddress.ip_address(ip)
            value = int(address) | (IPV4_MAPPED_LO if address.version == 4 else 0)
            row[f"{side}_hi"], row[f"{side}_lo"] = value >> 64, value & ((1 << 64) - 1)
            row[f"{side}_port"] = int(port)
            row["ip_version"] = address.version
        row["uid"], row["has_ports"], row["proto"], row["vlan"] = i + 1, 1, Proto.TCP, 0xFFFF
        row["first_ns"], row["last_ns"] = 1_700_000_000_000_000_000, 1_700_000_000_000_000_000
        for key, value in spec.items():
            if key == "conn_state":
                value = CONN_STATE_INDEX[value]
            row[key] = value
    return out


ROWS = flow_rows(
    {"orig": "10.0.0.1:40000", "resp": "10.0.0.2:443", "app": App.TLS, "orig_bytes": 600,
     "resp_bytes": 5000, "conn_state": "SF", "last_ns": 1_700_000_002_500_000_000},
    {"orig": "10.0.0.2:5353", "resp": "224.0.0.251:5353", "proto": Proto.UDP,
     "app": App.MDNS, "orig_bytes": 90, "conn_state": "S0"},
    {"orig": "192.168.1.9:51000", "resp": "10.0.0.1:22", "app": App.SSH, "orig_bytes": 3000,
     "resp_bytes": 3000, "conn_state": "S1", "last_ns": 1_700_000_000_900_000_000},
    {"orig": "fe80::1:40001", "resp": "fe80::2:80", "app": App.HTTP, "conn_state": "REJ"},
    {"orig": "10.0.0.3:0", "resp": "10.0.0.4:0", "proto": Proto.ICMP, "has_ports": 0,
     "conn_state": "OTH"},
)  # fmt: skip


def matches(filters: dict[str, Any]) -> list[int]:
    flt = parse_flow_filters(filters)
    assert isinstance(flt, FlowFilter), flt
    return [int(uid) for uid in ROWS["uid"][flt.mask(ROWS)]]


@pytest.mark.parametrize(
    ("filters", "uids"),
    [
        ({}, [1, 2, 3, 4, 5]),
        ({"protocol": "udp"}, [2]),
        ({"protocol": "TCP"}, [1, 3, 4]),
        ({"protocol": "tls"}, [1]),  # an application label
        ({"protocol": "icmp"}, [5]),
        ({"src_ip": "10.0.0.0/24"}, [1, 2, 5]),  # the originator
        ({"dst_ip": "10.0.0.1"}, [3]),  # the responder
        ({"ip": "10.0.0.1"}, [1, 3]),  # either
        ({"ip": "fe80::/64"}, [4]),
        ({"port": 22}, [3]),
        ({"src_port": 5353}, [2]),
        ({"dst_port": 443}, [1]),
        ({"port": 0}, []),  # ICMP has no ports
        ({"min_bytes": 5600}, [1, 3]),  # both ways together
        ({"min_bytes": 5601}, [3]),
        ({"min_duration_ms": 900}, [1, 3]),
        ({"min_duration_ms": 901}, [1]),
        ({"state": "sf"}, [1]),
        ({"state": "REJ", "ip": "fe80::2"}, [4]),
        ({"protocol": "udp", "state": "SF"}, []),
        ({"protocol": None, "min_bytes": None}, [1, 2, 3, 4, 5]),  # null: no filter on the key
    ],
)
def test_the_packet_grammar_reads_a_flow_as_orig_to_resp(
    filters: dict[str, Any], uids: list[int]
) -> None:
    assert matches(filters) == uids


def test_equal_filters_are_equal_and_echo_canonically() -> None:
    a = parse_flow_filters({"protocol": "udp", "ip": "10.1.2.3/8", "state": "sf", "min_bytes": 1})
    b = parse_flow_filters({"min_bytes": 1, "state": "SF", "ip": "10.0.0.0/8", "protocol": "UDP"})
    assert a == b and hash(a) == hash(b)
    assert isinstance(a, FlowFilter)
    assert a.as_dict() == {"protocol": "UDP", "ip": "10.0.0.0/8", "min_bytes": 1, "state": "SF"}


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ("udp", "filters"),
        ({"min_length": 100}, "min_length"),  # of a packet: flows take min_bytes
        ({"max_length": 100}, "max_length"),
        ({"prot": "udp"}, "prot"),
        ({"protocol": "nope"}, "protocol"),
        ({"src_ip": "10.0.0.300"}, "src_ip"),
        ({"port": 70000}, "port"),
        ({"min_bytes": -1}, "min_bytes"),
        ({"min_bytes": "10"}, "min_bytes"),
        ({"min_duration_ms": 1.5}, "min_duration_ms"),
        ({"min_duration_ms": True}, "min_duration_ms"),
        ({"state": "ESTABLISHED"}, "state"),
        ({"state": 3}, "state"),
    ],
)
def test_bad_flow_filters_name_their_key(filters: Any, field: str) -> None:
    error = parse_flow_filters(filters)
    assert isinstance(error, FilterError) and error.field == field, error
    assert field in error.message


# -- throttle ---------------------------------------------------------------------------------


def kinds_uids(*events: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([k for k, _ in events], np.uint64), np.array([u for _, u in events], np.uint64)


def test_updated_events_pass_at_most_once_per_interval_per_flow() -> None:
    throttle = Throttle(1000, max_flows=100)
    first = throttle.passes(*kinds_uids((STARTED, 1), (UPDATED, 1), (UPDATED, 2)), now=10.0)
    assert first.tolist() == [True, False, True]  # flow 1 just started; 2 never went through
    assert throttle.passes(*kinds_uids((UPDATED, 1), (UPDATED, 2)), now=10.5).tolist() == [
        False,
        False,
    ]
    later = throttle.passes(*kinds_uids((UPDATED, 1), (UPDATED, 2), (UPDATED, 2)), now=11.0)
    assert later.tolist() == [True, True, False]
    # started and ended always pass; ended forgets the flow
    ends = throttle.passes(*kinds_uids((ENDED, 1), (STARTED, 3), (ENDED, 3)), now=11.1)
    assert ends.tolist() == [True, True, True] and len(throttle) == 1


def test_no_interval_lets_every_event_through_and_keeps_nothing() -> None:
    throttle = Throttle(0, max_flows=100)
    assert throttle.passes(*kinds_uids((UPDATED, 1), (UPDATED, 1)), now=1.0).all()
    assert len(throttle) == 0


def test_the_throttle_forgets_only_what_no_longer_holds_back() -> None:
    throttle = Throttle(1000, max_flows=10)
    throttle.passes(*kinds_uids(*((STARTED, uid) for uid in range(20))), now=1.0)
    assert len(throttle) == 20  # all within the interval: none may be forgotten
    throttle.passes(*kinds_uids((UPDATED, 100)), now=2.5)  # the 20 are older than the interval
    assert len(throttle) == 1
    assert not throttle.passes(*kinds_uids((UPDATED, 100)), now=2.6).any()


# -- messages ---------------------------------------------------------------------------------


def test_flow_messages_carry_the_flow_and_iso_times() -> None:
    kinds = np.array([STARTED, ENDED], np.uint64)
    texts = flow_messages(kinds, ROWS[[0, 3]])
    first, second = (msgspec.json.decode(t, type=FlowMessage) for t in texts)
    assert (first.event, second.event) == ("started", "ended")
    data = first.data
    assert (data.uid, data.orig_ip, data.orig_port, data.resp_ip, data.resp_port) == (
        uid_text(1), "10.0.0.1", 40000, "10.0.0.2", 443,
    )  # fmt: skip
    assert (data.transport, data.app, data.conn_state, data.resp_bytes) == (
        "TCP",
        "TLS",
        "SF",
        5000,
    )
    assert (data.start, data.last, data.duration_ms) == (
        "2023-11-14T22:13:20.000Z", "2023-11-14T22:13:22.500Z", 2500,
    )  # fmt: skip
    assert second.data.ip_version == 6 and second.data.vlan is None


# -- the session ------------------------------------------------------------------------------


def flows_session(**limits: Any) -> Any:
    session = new_session(flows=True, **limits)
    drain(session)
    return session


def subscribe(session: Any, **fields: Any) -> list[Any]:
    return send(session, {"type": "subscribe", "channel": "flows", **fields})


def run_of(first: int, count: int) -> PacketRun:
    ids = list(range(first, first + count))
    return PacketRun(ids, [json.dumps({"type": "flow", "n": i}) for i in ids])


def test_a_sensor_without_flows_refuses_the_channel() -> None:
    session = new_session(ALICE)
    drain(session)
    [error] = subscribe(session)
    assert (error["type"], error["code"], error["field"]) == ("error", "invalid_channel", "channel")
    assert "flows.enabled" in error["message"] and not session.subscribed_flows


def test_subscribe_echoes_the_filter_and_interval_and_unsubscribe_stops() -> None:
    session = flows_session()
    [reply] = subscribe(session, filters={"protocol": "tcp", "state": "sf"},
                        options={"interval_ms": 2000})  # fmt: skip
    assert reply == {"type": "subscribed", "channel": "flows",
                     "filters": {"protocol": "TCP", "state": "SF"},
                     "options": {"interval_ms": 2000}}  # fmt: skip
    assert session.subscribed_flows and session.flow_interval_ms == 2000
    session.deliver_flows(run_of(1, 2))
    assert [m["n"] for m in drain(session)] == [1, 2]
    assert types(send(session, {"type": "unsubscribe", "channel": "flows"})) == ["unsubscribed"]
    session.deliver_flows(run_of(3, 2))
    assert drain(session) == [] and not session.subscribed_flows


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"filters": {"min_length": 1}}, "invalid_filter", "min_length"),
        ({"filters": {"state": "nope"}}, "invalid_filter", "state"),
        ({"options": {"batch": True}}, "invalid_option", "batch"),
        ({"options": {"interval_ms": -1}}, "invalid_option", "interval_ms"),
        ({"options": {"interval_ms": "1s"}}, "invalid_option", "interval_ms"),
        ({"since": 5}, "invalid_message", "since"),
    ],
)
def test_bad_flow_subscriptions_are_refused(fields: dict[str, Any], code: str, field: str) -> None:
    session = flows_session()
    [error] = subscribe(session, **fields)
    assert (error["type"], error["code"], error["field"]) == ("error", code, field)
    assert not session.subscribed_flows


def test_a_slow_reader_skips_flow_events_and_is_told_how_many() -> None:
    session = flows_session(outbox=16)
    subscribe(session)
    session.deliver_flows(run_of(1, 40))  # 16 fit, 24 skipped
    session.deliver_flows(run_of(41, 5), lost=7)  # still skipping; 7 lapped in the ring
    got = drain(session)
    assert [m["n"] for m in got[:16]] == list(range(1, 17))
    assert session.flows_dropped == 29 and session.flows_lost == 7
    # where they are missing: the lapped ones, then (once read down to half) the skipped ones
    assert [(m["type"], m["reason"], m["count"]) for m in got[16:]] == [
        ("dropped", "flow_ring", 7), ("dropped", "flow_slow_consumer", 29),
    ]  # fmt: skip
    session.deliver_flows(run_of(46, 2))
    assert [m["n"] for m in drain(session)] == [46, 47]
    assert session.dropped == 0  # packets: none missed


def test_packets_and_flow_events_take_turns_after_control() -> None:
    session = flows_session()
    send(session, {"type": "subscribe", "channel": "packets"})
    subscribe(session)
    session.deliver(list(range(1, 4)), [json.dumps({"type": "packet", "n": i}) for i in (1, 2, 3)])
    session.deliver_flows(run_of(1, 3))
    session.receive(json.dumps({"type": "ping", "id": 1}), T0)
    assert types(drain(session)) == ["pong", "flow", "packet", "flow", "packet", "flow", "packet"]


def test_a_close_sends_no_flow_event_after_it() -> None:
    session = flows_session()
    subscribe(session)
    session.deliver_flows(run_of(1, 3))
    session.shutdown()
    out = drain(session)
    assert [type(item).__name__ for item in out] == ["Close"]


# -- the hub, over a real event ring ----------------------------------------------------------


@pytest.fixture
def sensor(tmp_path: Path) -> Iterator[InProcessSensor]:
    s = InProcessSensor(tmp_path, capacity=1024, web={"outbox_messages": 16})
    try:
        yield s
    finally:
        s.close()


def flows_conn(sensor: InProcessSensor, user: str, **fields: Any) -> Connection:
    conn = sensor.hub.open(sensor.token(user), sensor.hub.clock())
    message = {"type": "subscribe", "channel": "flows", **fields}
    conn.receive(json.dumps(message), time.time())
    replies = [json.loads(m) for m in hub_drain(conn)]
    kinds = [r["type"] for r in replies if r["type"] != "status"]  # status: once the hub ticked
    assert kinds == ["auth_success", "subscribed"], replies
    return conn


def hub_drain(conn: Connection) -> list[str]:
    out: list[str] = []
    while (item := conn.session.next_outgoing()) is not None:
        assert isinstance(item, str), item
        out.append(item)
    return out


def uids_of(messages: list[str]) -> list[tuple[str, int]]:
    parsed = [json.loads(m) for m in messages]
    return [
        (p["event"], int(p["data"]["uid"][1:], 16))
        if p["type"] == "flow"
        else (p["reason"], p["count"])
        for p in parsed
    ]


def test_the_hub_reads_events_only_for_subscribers_and_shares_one_encoding(
    sensor: InProcessSensor,
) -> None:
    view, hub = sensor.flow_view, sensor.hub
    assert view is not None and hub.flows is not None
    view.add_events(STARTED, ROWS)  # before anyone subscribed: nobody gets these
    hub.step_flows()
    assert hub.flows.cursor is not None  # step_flows starts; the run loop only calls it ...
    hub.flows.stop()  # ... while someone listens
    tcp = flows_conn(sensor, "vic", filters={"protocol": "tcp"})
    same = flows_conn(sensor, "ana", filters={"protocol": "TCP"})
    udp = flows_conn(sensor, "admin", filters={"protocol": "udp"})
    assert hub.flows.cursor == 5  # the first subscriber starts at the head
    view.add_events(UPDATED, ROWS)
    view.add_events(ENDED, ROWS[:2])
    hub.step_flows()
    got = {name: hub_drain(c) for name, c in (("tcp", tcp), ("same", same), ("udp", udp))}
    assert uids_of(got["tcp"]) == [("updated", 1), ("updated", 3), ("updated", 4), ("ended", 1)]
    assert uids_of(got["udp"]) == [("updated", 2), ("ended", 2)]
    assert all(a is b for a, b in zip(got["tcp"], got["same"], strict=True))
    assert hub.flows.encoded == 6  # each event once, for all groups


def test_a_reader_that_never_reads_holds_back_no_one(sensor: InProcessSensor) -> None:
    view, hub = sensor.flow_view, sensor.hub
    assert view is not None
    stuck = flows_conn(sensor, "vic")
    reader = flows_conn(sensor, "ana")
    got: list[str] = []
    for round_ in range(10):
        view.add_events(STARTED, flow_rows(*({"uid": 100 * round_ + i} for i in range(10))))
        hub.step_flows()
        got += hub_drain(reader)
    assert len(got) == 100 and stuck.session.flows_dropped == 100 - 16
    assert stuck.session.dropped == 0


def test_a_lapped_worker_tells_every_subscriber_how_many_events_it_missed(
    sensor: InProcessSensor,
) -> None:
    view, hub = sensor.flow_view, sensor.hub
    assert view is not None
    conn = flows_conn(sensor, "vic", filters={"protocol": "icmp"})
    capacity = view.layout.events
    view.add_events(STARTED, flow_rows(*({"uid": i} for i in range(capacity + 10))))
    view.add_events(ENDED, ROWS)
    hub.step_flows()  # reads the oldest events still there first
    seen = uids_of(hub_drain(conn))
    assert seen[0] == ("flow_ring", 15)  # 1039 events published, the ring holds 1024
    for _ in range(100):
        hub.step_flows()
        seen += uids_of(hub_drain(conn))
    assert seen[1:] == [("ended", 5)]


def test_health_says_whether_the_flow_process_runs(sensor: InProcessSensor) -> None:
    view, hub = sensor.flow_view, sensor.hub
    assert view is not None
    assert hub.health()["flows"] == {
        "enabled": True, "running": False, "starts": 0, "active_flows": 0, "events": 0,
    }  # fmt: skip
    no_hosts = np.zeros(0, HOST_ROW)
    view.publish(ROWS[:0], no_hosts, {"writer_pid": os.getpid(), "starts": 1, "active_flows": 3})
    view.add_events(STARTED, ROWS)
    assert hub.health()["flows"] == {
        "enabled": True, "running": True, "starts": 1, "active_flows": 3, "events": 5,
    }  # fmt: skip


def test_a_sensor_without_a_flow_process_says_so(tmp_path: Path) -> None:
    s = InProcessSensor(tmp_path, flows={"enabled": False})
    try:
        assert s.hub.flows is None and s.hub.health()["flows"] == {"enabled": False}
        conn = s.hub.open(s.token("vic"), s.hub.clock())
        conn.receive(json.dumps({"type": "subscribe", "channel": "flows"}), time.time())
        replies = [json.loads(m) for m in hub_drain(conn)]
        assert [r["type"] for r in replies] == ["auth_success", "error"]
        assert replies[1]["code"] == "invalid_channel"
    finally:
        s.close()


def test_the_hub_loop_streams_flows_and_a_flows_only_spell_leaves_packets_at_the_head(
    sensor: InProcessSensor,
) -> None:
    hub, view = sensor.hub, sensor.flow_view
    assert view is not None and hub.flows is not None
    frames = read_pcap("mixed.pcap")

    async def scenario() -> tuple[list[tuple[str, int]], list[int], list[int]]:
        loop = asyncio.create_task(hub.run())
        try:
            await until(lambda: hub.status is not None, "the first tick")
            view.add_events(STARTED, ROWS)  # nobody listens: the event ring is not read
            ticked = hub.status
            await until(lambda: hub.status is not ticked, "another tick")
            assert hub.flows is not None and hub.flows.cursor is None
            flows = flows_conn(sensor, "vic", filters={"protocol": "udp"})
            assert hub.flows.cursor == 5  # the subscription starts it at the head
            view.add_events(STARTED, ROWS)
            got: list[str] = []
            await until(lambda: got.extend(hub_drain(flows)) or got, "a flow event")
            packets = hub.open(sensor.token("ana"), hub.clock())
            packets.receive(json.dumps({"type": "subscribe", "channel": "packets"}), time.time())
            await until(lambda: hub.reading, "the packet reader")
            packets.receive(json.dumps({"type": "unsubscribe", "channel": "packets"}), time.time())
            await until(lambda: not hub.reading, "the packet reader to stop")
            sensor.write(frames, count=20)  # while only flows are subscribed
            ticked = hub.status
            await until(lambda: hub.status is not ticked, "a tick after the writes")
            hub_drain(packets)
            packets.receive(json.dumps({"type": "subscribe", "channel": "packets"}), time.time())
            live = sensor.write(frames, count=5)
            ids: list[int] = []

            def more() -> bool:
                ids.extend(json.loads(m)["data"]["id"] for m in hub_drain(packets)
                           if json.loads(m)["type"] == "packet")  # fmt: skip
                return len(ids) >= len(live)

            await until(more, "the live packets")
            return uids_of(got), ids, live
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    flow_events, ids, live = asyncio.run(scenario())
    assert flow_events == [("started", 2)]
    assert ids == live  # none of the 20 written while only flows were subscribed
