"""The `flows` channel of one worker, in-process: flow events from the shared event ring to the
outboxes of many sessions.

    .venv/bin/python benchmarks/bench_flow_events.py [--events 20000] [--subs 20] [--groups 4]

`--events` flow events (started/updated/ended over varied TCP/UDP flows) are written to a real
flow view (shared memory) and handed to `--subs` sessions subscribed with `--groups` distinct
filters (the groups share the sessions evenly; the first is unfiltered, the others by
protocol). Figures, µs per event (best of `--repeat`):

  per-session   each session filters, builds `Flow`s and encodes its own events: the reference
  shared        `FlowFeed.step`: one read, one mask per group, each event encoded once
  to_flows      building the `Flow` structs alone (`rows.to_flows`), for scale

and the ratio shared / per-session of the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from leireye.accounts.principal import Principal
from leireye.config import FlowsConfig, LimitsConfig
from leireye.flows.rows import FLOW_ROW, to_flows
from leireye.flows.view import ENDED, STARTED, UPDATED, FlowView
from leireye.record import IPV4_MAPPED_LO, App, Proto
from leireye.web.flowfeed import FlowFeed, flow_messages
from leireye.web.flowfilter import FlowFilter, parse_flow_filters
from leireye.web.frames import PacketRun
from leireye.web.session import Session

FILTERS = ({}, {"protocol": "TCP"}, {"protocol": "UDP"}, {"protocol": "TLS"}, {"port": 53})


def rows(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=FLOW_ROW)
    out["uid"] = np.arange(1, n + 1)
    out["orig_lo"] = IPV4_MAPPED_LO | rng.integers(0x0A000000, 0x0A00FFFF, n)
    out["resp_lo"] = IPV4_MAPPED_LO | rng.integers(0xC0A80000, 0xC0A800FF, n)
    out["ip_version"], out["has_ports"], out["vlan"] = 4, 1, 0xFFFF
    udp = rng.random(n) < 0.3
    out["proto"] = np.where(udp, Proto.UDP, Proto.TCP)
    out["resp_port"] = np.where(udp, 53, rng.choice([443, 80, 22], n))
    out["orig_port"] = rng.integers(1024, 65535, n)
    out["app"] = np.where(udp, App.DNS, np.where(out["resp_port"] == 443, App.TLS, App.HTTP))
    out["first_ns"] = 1_700_000_000_000_000_000 + np.arange(n) * 1000
    out["last_ns"] = out["first_ns"] + rng.integers(0, 10**9, n)
    out["orig_pkts"], out["orig_bytes"] = rng.integers(1, 50, n), rng.integers(60, 50_000, n)
    out["resp_pkts"], out["resp_bytes"] = rng.integers(1, 50, n), rng.integers(60, 500_000, n)
    out["history"] = b"ShADadFf"
    return out


@dataclass(eq=False)
class Conn:
    session: Session
    wake: object = field(default_factory=lambda: _Wake())


class _Wake:
    def set(self) -> None:
        pass


def sessions(count: int, groups: int, outbox: int) -> list[Conn]:
    principal = Principal(id=1, username="b", role="ADMIN", expires_at=None, generation="g")
    conns = []
    for i in range(count):
        session = Session(
            limits=LimitsConfig(connections_per_user=count, messages_per_second=1000),
            authenticate=lambda token, now: principal,
            admit=lambda p: True,
            now=time.time(),
            query_token="t",
            outbox_messages=outbox,
            flows_enabled=True,
        )
        subscribe = {"type": "subscribe", "channel": "flows", "filters": FILTERS[i % groups]}
        session.receive(json.dumps(subscribe), time.time())
        conns.append(Conn(session))
    return conns


def drain(conns: list[Conn]) -> int:
    sent = 0
    for conn in conns:
        while conn.session.next_item() is not None:
            sent += 1
    return sent


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--subs", type=int, default=20)
    ap.add_argument("--groups", type=int, default=4, choices=range(1, len(FILTERS) + 1))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n = args.events
    flow_rows = rows(n)
    kinds = np.array([(STARTED, UPDATED, ENDED)[i % 3] for i in range(n)], np.uint64)
    name = f"leireye-bench-{uuid.uuid4().hex[:10]}-flows"
    view = FlowView.create(name, FlowsConfig(events=max(1024, 2 * n)), owner=None)
    try:
        conns = sessions(args.subs, args.groups, outbox=n + 16)
        drain(conns)
        filters = [parse_flow_filters(FILTERS[i % args.groups]) for i in range(args.subs)]
        assert all(isinstance(flt, FlowFilter) for flt in filters)

        def per_session() -> None:
            for conn, flt in zip(conns, filters, strict=True):
                assert isinstance(flt, FlowFilter)
                picked = np.flatnonzero(flt.mask(flow_rows))
                messages = flow_messages(kinds[picked], flow_rows[picked])
                conn.session.deliver_flows(PacketRun(picked + 1, messages))
            drain(conns)

        feed = FlowFeed(view, 1 << 20)

        def shared() -> None:
            feed.start()
            for kind in (STARTED, UPDATED, ENDED):
                view.add_events(kind, flow_rows[kinds == kind])
            feed.step(conns, time.monotonic())  # type: ignore[arg-type]
            drain(conns)
            feed.stop()

        ref = best(per_session, args.repeat)
        got = best(shared, args.repeat)
        structs = best(lambda: to_flows(flow_rows), args.repeat)
    finally:
        view.unlink()
        view.close()
    us = 1e6 / n
    print(f"flow events: {n} events, {args.subs} sessions in {args.groups} filter groups")
    print(f"  per-session {ref * us:8.2f} µs/event  (reference)")
    print(f"  shared      {got * us:8.2f} µs/event  ratio {got / ref:.3f}")
    print(f"  to_flows    {structs * us:8.2f} µs/event  ratio {structs / ref:.3f}")


if __name__ == "__main__":
    main()
