"""The flow table and Zeek's state letters, on records made by hand (no decoder, no sensor)."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from leireye.config import FlowsConfig, IdleTimeouts
from leireye.flows import tcpstate
from leireye.flows.model import Flow
from leireye.flows.rows import to_flows
from leireye.flows.table import FlowTable
from leireye.record import (
    F_HAS_ADDR,
    F_HAS_ICMP,
    F_HAS_PORTS,
    IPV4_MAPPED_LO,
    NO_VLAN,
    RECORD_DTYPE,
    App,
    Proto,
)

C, S = "10.0.0.1", "10.0.0.2"  # client, server
SYN, SA, ACK, PA, FA, RST, RA = 0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14
SEC = 1_000_000_000


def rec(
    src: str, sport: int, dst: str, dport: int, flags: int = ACK, *, t: float = 0.0,
    data: int = 0, proto: Proto = Proto.TCP, size: int = 60, vlan: int = NO_VLAN,
    app: App = App.NONE, info: str = "",
) -> np.ndarray:  # fmt: skip
    r = np.zeros(1, dtype=RECORD_DTYPE)
    for side, ip in (("src", src), ("dst", dst)):
        r[f"{side}_hi"], r[f"{side}_lo"] = 0, IPV4_MAPPED_LO | int(ipaddress.IPv4Address(ip))
    r["ip_version"], r["proto"], r["vlan"], r["ts_ns"] = 4, proto, vlan, int(t * SEC)
    r["wire_len"] = r["cap_len"] = size + data
    r["flags"] = F_HAS_ADDR
    r["app"] = app
    if proto in (Proto.ICMP,):
        r["flags"] |= F_HAS_ICMP
        r["icmp_type"], r["ip_proto"] = sport, 1
    else:
        r["flags"] |= F_HAS_PORTS
        r["src_port"], r["dst_port"] = sport, dport
        r["ip_proto"] = 6 if proto == Proto.TCP else 17
    if proto == Proto.TCP:
        r["tcp_flags"] = flags
        info = info or f"{sport} → {dport} [X]" + (f" len={data}" if data else "")
    r["info"] = info.encode()
    return r


def tcp(*steps: tuple[str, int, int], t0: float = 0.0, sport: int = 40000) -> np.ndarray:
    """A TCP exchange: (who, flags, payload bytes) per packet, "c" client or "s" server."""
    rows = []
    for i, (who, flags, data) in enumerate(steps):
        a, b = ((C, sport), (S, 80)) if who == "c" else ((S, 80), (C, sport))
        rows.append(rec(*a, *b, flags, t=t0 + i * 0.001, data=data))
    return np.concatenate(rows)


def run(records: np.ndarray, config: FlowsConfig | None = None, batch: int = 0) -> list[Flow]:
    table = FlowTable(config or FlowsConfig(max_active=1024))
    step = batch or len(records)
    for lo in range(0, len(records), step):
        table.ingest(records[lo : lo + step])
    table.end_all()
    return to_flows(table.take_ended())


HANDSHAKE = (("c", SYN, 0), ("s", SA, 0), ("c", ACK, 0))
CASES = {
    "SF": (
        (*HANDSHAKE, ("c", PA, 100), ("s", PA, 900), ("c", FA, 0), ("s", FA, 0), ("c", ACK, 0)),
        "SF",
        "ShADdFf",
    ),
    "S0": ((("c", SYN, 0), ("c", SYN, 0)), "S0", "S"),
    "REJ": ((("c", SYN, 0), ("s", RA, 0)), "REJ", "Sr"),
    "S1": ((*HANDSHAKE, ("c", PA, 10)), "S1", "ShAD"),
    "RSTO": ((*HANDSHAKE, ("c", PA, 10), ("c", RST, 0)), "RSTO", "ShADR"),
    "RSTR": ((*HANDSHAKE, ("c", PA, 10), ("s", RA, 0)), "RSTR", "ShADr"),
    "RSTOS0": ((("c", SYN, 0), ("c", RST, 0)), "RSTOS0", "SR"),
    "RSTRH": ((("s", SA, 0), ("s", RST, 0)), "RSTRH", "^hr"),
    "SH": ((("c", SYN, 0), ("c", FA, 0)), "SH", "SF"),
    "SHR": ((("s", SA, 0), ("s", FA, 0)), "SHR", "^hf"),
    "S2": ((*HANDSHAKE, ("c", FA, 0)), "S2", "ShAF"),
    "S3": ((*HANDSHAKE, ("s", FA, 0)), "S3", "ShAf"),
    "OTH": ((("c", ACK, 0), ("s", PA, 5)), "OTH", "Ad"),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("batch", [0, 1, 2])
def test_zeek_states_and_history(name: str, batch: int) -> None:
    steps, state, history = CASES[name]
    (flow,) = run(tcp(*steps), batch=batch)
    assert (flow.conn_state, flow.history) == (state, history)


def test_counts_per_direction_and_originator() -> None:
    steps = CASES["SF"][0]
    (flow,) = run(tcp(*steps))
    assert (flow.orig_ip, flow.orig_port, flow.resp_ip, flow.resp_port) == (C, 40000, S, 80)
    assert (flow.orig_pkts, flow.resp_pkts) == (5, 3)
    assert (flow.orig_bytes, flow.resp_bytes) == (5 * 60 + 100, 3 * 60 + 900)
    assert flow.end_reason == "shutdown"
    assert flow.first_ns == 0 and flow.last_ns == 7 * SEC // 1000


def test_synack_first_flips_the_originator() -> None:
    (flow,) = run(tcp(("s", SA, 0), ("c", ACK, 0)))
    assert (flow.orig_ip, flow.resp_ip, flow.history[0]) == (C, S, "^")


def test_the_transition_table_is_the_rule() -> None:
    for state in range(49):
        for event in range(12):
            o, r = tcpstate._step(*divmod(state, 7), event)
            assert tcpstate.TRANSITIONS[state, event] == o * 7 + r


def test_teardown_ends_after_the_linger_and_keeps_the_last_ack() -> None:
    table = FlowTable(FlowsConfig(max_active=1024, tcp_close_s=5))
    steps = CASES["SF"][0]
    table.ingest(tcp(*steps[:-1]))
    table.expire(int(2 * SEC))
    assert table.take_ended().size == 0
    table.ingest(tcp(steps[-1], t0=3))
    table.expire(int(9 * SEC))
    (flow,) = to_flows(table.take_ended())
    assert (flow.end_reason, flow.orig_pkts, flow.conn_state) == ("fin", 5, "SF")


def test_port_reuse_after_teardown_is_a_new_flow() -> None:
    table = FlowTable(FlowsConfig(max_active=1024))
    table.ingest(tcp(*CASES["REJ"][0]))
    table.ingest(tcp(*CASES["S1"][0], t0=1))
    table.end_all()
    flows = to_flows(table.take_ended())
    assert [(f.conn_state, f.end_reason) for f in flows] == [("REJ", "rst"), ("S1", "shutdown")]
    assert flows[0].uid != flows[1].uid


def test_idle_timeouts_per_transport() -> None:
    idle = IdleTimeouts(tcp=100, udp=10, icmp=10, other=10)
    table = FlowTable(FlowsConfig(max_active=1024, idle_timeout_s=idle))
    table.ingest(np.concatenate([tcp(("c", ACK, 0)), rec(C, 5000, S, 53, proto=Proto.UDP)]))
    table.expire(int(50 * SEC))
    assert [f.transport for f in to_flows(table.take_ended())] == ["UDP"]
    table.expire(int(101 * SEC))
    assert [(f.transport, f.end_reason) for f in to_flows(table.take_ended())] == [("TCP", "idle")]
    assert table.active == 0


def test_active_timeout_reports_and_goes_on_under_the_same_uid() -> None:
    table = FlowTable(FlowsConfig(max_active=1024, active_timeout_s=60))
    table.ingest(tcp(("c", ACK, 0), t0=0))
    table.ingest(tcp(("c", ACK, 0), t0=59))
    table.expire(int(61 * SEC))
    (first,) = to_flows(table.take_ended())
    table.ingest(tcp(("c", ACK, 0), t0=62))
    table.end_all()
    (second,) = to_flows(table.take_ended())
    assert (first.end_reason, first.orig_pkts, second.orig_pkts) == ("active", 2, 1)
    assert first.uid == second.uid
    assert second.first_ns == first.last_ns


def test_eviction_ends_the_longest_idle_and_counts() -> None:
    table = FlowTable(FlowsConfig(max_active=1024))
    rows = [rec(C, 1000 + i, S, 53, proto=Proto.UDP, t=i) for i in range(1024)]
    table.ingest(np.concatenate(rows))
    table.ingest(rec(C, 1000, S, 53, proto=Proto.UDP, t=2000))  # the oldest, touched again
    table.ingest(rec(C, 9999, S, 53, proto=Proto.UDP, t=2001))
    evicted = to_flows(table.take_ended())
    assert table.counts["evicted"] == len(evicted) >= 1
    assert all(f.end_reason == "evicted" for f in evicted)
    assert 1000 not in {f.orig_port for f in evicted}
    assert 1001 in {f.orig_port for f in evicted}
    assert table.active <= 1024


def test_vlan_and_icmp_echo_keys() -> None:
    records = np.concatenate([
        rec(C, 5000, S, 53, proto=Proto.UDP, vlan=10),
        rec(S, 53, C, 5000, proto=Proto.UDP, vlan=20),
        rec(C, 8, S, 0, proto=Proto.ICMP, size=98),
        rec(S, 0, C, 0, proto=Proto.ICMP, size=98),
    ])  # fmt: skip
    flows = run(records)
    udp = sorted((f.vlan, f.orig_pkts, f.resp_pkts) for f in flows if f.transport == "UDP")
    assert udp == [(10, 1, 0), (20, 1, 0)]
    (icmp,) = (f for f in flows if f.transport == "ICMP")
    assert (icmp.orig_port, icmp.orig_pkts, icmp.resp_pkts, icmp.conn_state) == (8, 1, 1, "OTH")


def test_first_application_fields() -> None:
    records = np.concatenate([
        rec(C, 5000, S, 53, proto=Proto.UDP, app=App.DNS, info="DNS query A example.org"),
        rec(S, 53, C, 5000, proto=Proto.UDP, app=App.DNS,
            info="DNS response A example.org NXDOMAIN"),
        rec(C, 40000, S, 443, PA, data=200, app=App.TLS, info="TLS ClientHello SNI=a.test"),
        rec(C, 40000, S, 443, PA, data=200, app=App.TLS, info="TLS ClientHello SNI=b.test"),
        rec(C, 40001, S, 80, PA, data=90, app=App.HTTP, info="HTTP GET /x?y"),
        rec(C, 40001, S, 80, PA, data=90, app=App.HTTP, info="HTTP POST /z"),
        rec(S, 22, C, 40002, PA, data=40, app=App.SSH, info="SSH-2.0-OpenSSH_9"),
    ])  # fmt: skip
    flows = {f.resp_port: f for f in run(records)}
    assert (flows[53].dns_query, flows[53].dns_rcode) == ("example.org", "NXDOMAIN")
    assert flows[443].tls_sni == "a.test"
    assert (flows[80].http_method, flows[80].http_path) == ("GET", "/x?y")
    assert flows[40002].ssh_banner == "SSH-2.0-OpenSSH_9"


def test_uids_differ_between_tables() -> None:
    one = run(tcp(("c", SYN, 0)))[0].uid
    two = run(tcp(("c", SYN, 0)))[0].uid
    assert one != two and one.startswith("C")


def test_non_ip_records_are_counted_not_kept() -> None:
    table = FlowTable(FlowsConfig(max_active=1024))
    arp = np.zeros(3, dtype=RECORD_DTYPE)
    arp["proto"] = Proto.ARP
    table.ingest(arp)
    assert (table.counts["not_ip"], table.active) == (3, 0)
