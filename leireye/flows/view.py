"""The flow process's live state in shared memory, for the web workers (`LiveFlows`).

The supervisor creates the segment (`FlowView.create`: it owns it, sets who may read it, unlinks
it at the end), so it outlives a restart of the flow process and the workers keep their mapping;
the flow process attaches it writable, the workers (`leireye-web`, no root) read-only.

Layout (little-endian), each region on a 4 KiB page:

    offset 0      header   HEADER_DTYPE (magic b"LEIFLOW\\0", version, row sizes, capacities,
                           region offsets; `seq`, the snapshot seqlock, alone on its line at 64;
                           the counters at 128; `event_seq` alone on its line at 512)
    flows_offset  snap_flows x FLOW_ROW    the active flows with the most bytes, by bytes
    hosts_offset  snap_hosts x HOST_ROW    the hosts with the most bytes, by bytes
    events_offset events x EVENT_ROW       a ring of flow events

The snapshot (flows, hosts and counters) is refreshed every `flows.update_ms` under a seqlock,
as the stats segment is (`leireye/stats/series.py`): `seq` odd, copy, `seq` even; a reader
retries while it is odd or changed under its copy. When more flows (hosts) are active than fit,
the snapshot holds the top `snap_flows` (`snap_hosts`) by bytes, and `active_flows`
(`active_hosts`) says how many there are.

The event ring: event number `n` (from 1) lives in row `n % events`. Its writer first zeroes
the row's `seq`, writes the row, then sets `seq = n`; after a batch it stores `event_seq`, the
last number written (one aligned 8-byte store; x86-64 keeps store order, as for the packet ring).
A reader keeps a cursor (the last number it has), reads `event_seq`, copies the rows after its
cursor that can still be there (at most `events` back), and keeps those whose `seq` is the number
it expected (a row overwritten or being written under its copy fails the check): what it skipped
is `missed`, so `seen + missed` always equals the events published after its cursor.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from leireye.config import FlowsConfig
from leireye.errors import RingError
from leireye.ring.shm import PAGE, Segment, attach_segment, create_segment, page_align

from .hosts import NAMES_MAX, HostTable
from .model import Flow, Host
from .rows import FLOW_ROW, to_flows

MAGIC: Final = b"LEIFLOW\x00"
VERSION: Final = 2  # 2: FLOW_ROW gained `icmp_id`
EVENT_KINDS: Final = ("", "started", "updated", "ended")
STARTED, UPDATED, ENDED = 1, 2, 3
HOST_APPS: Final = 8
HOST_PORTS: Final = 16

HOST_ROW: Final = np.dtype(
    [
        ("first_ns", "<i8"),
        ("last_ns", "<i8"),
        ("pkts_sent", "<u8"),
        ("bytes_sent", "<u8"),
        ("pkts_recv", "<u8"),
        ("bytes_recv", "<u8"),
        ("app_bytes", "<u8", (HOST_APPS,)),
        ("peers", "<u4"),
        ("ports", "<u2", (HOST_PORTS,)),
        ("n_ports", "u1"),
        ("app_label", "S12", (HOST_APPS,)),
        ("ip", "S40"),
        ("names", "S48", (NAMES_MAX,)),
    ]
)
EVENT_ROW: Final = np.dtype([("seq", "<u8"), ("kind", "<u8"), ("flow", FLOW_ROW)])
COUNTERS: Final = (
    "writer_pid", "snapshot_ns", "active_flows", "active_hosts", "records", "not_ip",
    "started", "ended", "evicted", "collisions", "hosts_evicted", "ring_lost",
    "lost_on_restart", "starts", "read_id", "overflow",
)  # fmt: skip
_HEADER: Final = (
    [("magic", "S8", 0), ("version", "<u4", 8), ("flow_row", "<u4", 12), ("host_row", "<u4", 16),
     ("snap_flows", "<u4", 20), ("snap_hosts", "<u4", 24), ("events", "<u4", 28),
     ("flows_offset", "<u8", 32), ("hosts_offset", "<u8", 40), ("events_offset", "<u8", 48),
     ("update_ms", "<u4", 56), ("seq", "<u8", 64), ("shown_flows", "<u4", 72),
     ("shown_hosts", "<u4", 76)]
    + [(name, "<u8", 128 + 8 * i) for i, name in enumerate(COUNTERS)]
    + [("event_seq", "<u8", 512)]
)  # fmt: skip
HEADER_DTYPE: Final = np.dtype(
    {
        "names": [f[0] for f in _HEADER],
        "formats": [f[1] for f in _HEADER],
        "offsets": [f[2] for f in _HEADER],
        "itemsize": 576,
    }
)
SEQ_WORD: Final = 64 // 8
EVENT_SEQ_WORD: Final = 512 // 8


@dataclass(frozen=True)
class ViewLayout:
    snap_flows: int
    snap_hosts: int
    events: int

    @property
    def flows_offset(self) -> int:
        return PAGE

    @property
    def hosts_offset(self) -> int:
        return page_align(self.flows_offset + self.snap_flows * FLOW_ROW.itemsize)

    @property
    def events_offset(self) -> int:
        return page_align(self.hosts_offset + self.snap_hosts * HOST_ROW.itemsize)

    @property
    def size(self) -> int:
        return page_align(self.events_offset + self.events * EVENT_ROW.itemsize)

    @classmethod
    def for_config(cls, config: FlowsConfig) -> ViewLayout:
        return cls(config.snapshot_flows, config.snapshot_hosts, config.events)


@dataclass(frozen=True)
class Events:
    """What `FlowView.events_after` returns: the events after a cursor, in order."""

    seqs: np.ndarray
    kinds: np.ndarray
    rows: np.ndarray  # FLOW_ROW
    missed: int
    cursor: int  # the last event number covered (seen or missed): the next call's cursor


class FlowView:
    def __init__(self, segment: Segment, layout: ViewLayout) -> None:
        self.segment, self.layout = segment, layout
        buf = segment.buf
        self._header = np.ndarray((), HEADER_DTYPE, buffer=buf)
        self._words = np.ndarray((PAGE // 8,), np.uint64, buffer=buf)
        self._flows = np.ndarray(
            (layout.snap_flows,), FLOW_ROW, buffer=buf, offset=layout.flows_offset
        )
        self._hosts = np.ndarray(
            (layout.snap_hosts,), HOST_ROW, buffer=buf, offset=layout.hosts_offset
        )
        self._events = np.ndarray(
            (layout.events,), EVENT_ROW, buffer=buf, offset=layout.events_offset
        )

    @classmethod
    def create(
        cls, name: str, config: FlowsConfig, *, mode: int = 0o600, owner: tuple[int, int] | None
    ) -> FlowView:
        layout = ViewLayout.for_config(config)
        segment = create_segment(name, layout.size, mode=mode, owner=owner)
        header = np.ndarray((), HEADER_DTYPE, buffer=segment.buf)
        for key, value in (
            ("magic", MAGIC), ("version", VERSION), ("flow_row", FLOW_ROW.itemsize),
            ("host_row", HOST_ROW.itemsize), ("snap_flows", layout.snap_flows),
            ("snap_hosts", layout.snap_hosts), ("events", layout.events),
            ("flows_offset", layout.flows_offset), ("hosts_offset", layout.hosts_offset),
            ("events_offset", layout.events_offset), ("update_ms", config.update_ms),
        ):  # fmt: skip
            header[key] = value
        del header
        return cls(segment, layout)

    @classmethod
    def attach(cls, name: str, *, writable: bool = False) -> FlowView:
        segment = attach_segment(name, writable=writable)
        try:
            header = np.ndarray((), HEADER_DTYPE, buffer=segment.buf)
            if header["magic"].tobytes() != MAGIC or int(header["version"]) != VERSION:
                raise RingError(f"{name}: not a LeirEye flow view of version {VERSION}")
            if (int(header["flow_row"]), int(header["host_row"])) != (
                FLOW_ROW.itemsize,
                HOST_ROW.itemsize,
            ):
                raise RingError(f"{name}: flow view rows of another size")
            layout = ViewLayout(
                int(header["snap_flows"]), int(header["snap_hosts"]), int(header["events"])
            )
            del header
            if segment.size < layout.size:
                raise RingError(f"{name}: flow view segment is smaller than its header says")
        except BaseException:
            segment.close()
            raise
        view = cls(segment, layout)
        if writable:
            if int(view._words[SEQ_WORD]) % 2:
                view._words[SEQ_WORD] += np.uint64(1)
            view._header["writer_pid"] = os.getpid()
        return view

    # -- the writer (the flow process) -----------------------------------------------------------

    def counter(self, name: str) -> int:
        return int(self._header[name])

    def publish(self, flows: np.ndarray, hosts: np.ndarray, counters: dict[str, int]) -> None:
        """Replace the snapshot (rows already cut to the capacities, best first)."""
        words = self._words
        seq = int(words[SEQ_WORD])
        words[SEQ_WORD] = seq + 1
        self._flows[: len(flows)] = flows
        self._hosts[: len(hosts)] = hosts
        self._header["shown_flows"], self._header["shown_hosts"] = len(flows), len(hosts)
        for name, value in counters.items():
            self._header[name] = value
        words[SEQ_WORD] = seq + 2

    def add_events(self, kind: int, rows: np.ndarray) -> None:
        cap = self.layout.events
        skipped = max(0, len(rows) - cap)  # numbered, never written: readers count them missed
        rows = rows[skipped:]
        first = int(self._words[EVENT_SEQ_WORD]) + 1 + skipped
        numbers = np.arange(first, first + len(rows), dtype=np.uint64)
        at = (numbers % np.uint64(cap)).astype(np.intp)
        events = self._events
        events["seq"][at] = 0
        events["kind"][at] = kind
        events["flow"][at] = rows
        events["seq"][at] = numbers
        if len(rows):
            self._words[EVENT_SEQ_WORD] = first + len(rows) - 1

    # -- readers (the web workers) ---------------------------------------------------------------

    def snapshot(self, retry_s: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """A consistent copy: (flow rows, host rows, counters)."""
        words = self._words
        deadline = time.monotonic() + retry_s
        while True:
            before = int(words[SEQ_WORD])
            if before % 2 == 0:
                header = self._header.copy()
                flows = self._flows[: int(header["shown_flows"])].copy()
                hosts = self._hosts[: int(header["shown_hosts"])].copy()
                if int(words[SEQ_WORD]) == before:
                    counters = {name: int(header[name]) for name in COUNTERS}
                    return flows, hosts, counters
            if time.monotonic() > deadline:
                raise RingError(f"{self.segment.name}: the flow process did not finish a publish")
            time.sleep(0)

    def active(self) -> Sequence[Flow]:
        return to_flows(self.snapshot()[0])

    def hosts(self) -> Sequence[Host]:
        return [host_of(row) for row in self.snapshot()[1]]

    @property
    def event_seq(self) -> int:
        return int(self._words[EVENT_SEQ_WORD])

    def events_after(self, cursor: int, max_events: int = 4096) -> Events:
        """The events numbered after `cursor` (at most `max_events`, the oldest first)."""
        last = int(self._words[EVENT_SEQ_WORD])
        cap = self.layout.events
        start = max(cursor + 1, last - cap + 1, 1)
        end = min(last, start + max_events - 1)
        missed = start - (cursor + 1)
        if end < start:
            empty = np.empty(0, EVENT_ROW)
            return Events(empty["seq"], empty["kind"], empty["flow"], missed, max(cursor, last))
        numbers = np.arange(start, end + 1, dtype=np.uint64)
        copy = self._events[(numbers % np.uint64(cap)).astype(np.intp)]
        good = copy["seq"] == numbers
        missed += int((~good).sum())
        copy = copy[good]
        return Events(copy["seq"], copy["kind"], copy["flow"], missed, end)

    def close(self) -> None:
        if self.segment.buf.closed:
            return
        del self._header, self._words, self._flows, self._hosts, self._events
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


def host_rows(hosts: HostTable, n: int) -> np.ndarray:
    """HOST_ROW rows of the `n` hosts with the most bytes."""
    top = hosts.top(n)
    out = np.zeros(len(top), dtype=HOST_ROW)
    for i, host in enumerate(top):
        row = out[i]
        row["ip"] = host.ip.encode()
        row["first_ns"], row["last_ns"] = host.first_ns, host.last_ns
        row["pkts_sent"], row["bytes_sent"] = host.pkts_sent, host.bytes_sent
        row["pkts_recv"], row["bytes_recv"] = host.pkts_recv, host.bytes_recv
        row["peers"] = host.peers
        apps = sorted(host.apps.items(), key=lambda kv: -kv[1])[:HOST_APPS]
        for j, (label, size) in enumerate(apps):
            row["app_label"][j], row["app_bytes"][j] = label.encode(), size
        ports = host.ports_served[:HOST_PORTS]
        row["ports"][: len(ports)], row["n_ports"] = ports, len(ports)
        for j, name in enumerate(host.names[:NAMES_MAX]):
            row["names"][j] = name.encode("utf-8", "replace")[:48]
    return out


def host_of(row: np.void) -> Host:
    apps = {
        label.decode(): int(size)
        for label, size in zip(row["app_label"].tolist(), row["app_bytes"].tolist(), strict=True)
        if label
    }
    return Host(
        ip=row["ip"].decode(),
        first_ns=int(row["first_ns"]),
        last_ns=int(row["last_ns"]),
        pkts_sent=int(row["pkts_sent"]),
        bytes_sent=int(row["bytes_sent"]),
        pkts_recv=int(row["pkts_recv"]),
        bytes_recv=int(row["bytes_recv"]),
        peers=int(row["peers"]),
        apps=apps,
        ports_served=[int(p) for p in row["ports"][: int(row["n_ports"])]],
        names=[n.decode("utf-8", "replace") for n in row["names"].tolist() if n],
    )
