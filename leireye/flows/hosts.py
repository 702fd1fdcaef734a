"""Hosts: every IP address the flow process sees, and per-minute summaries of them and of the
applications. Pure, columnar like the flow table (a dict from a 64-bit address hash to a slot).

Per host: first and last seen, packets and bytes sent and received (summed per batch with
`bincount`), bytes per application label (the decoder's app, else the transport's label: the
`apps` of `Host` and `HostMinute`), peers (the other end of every flow it started or answered,
counted when the flow starts; at most `PEERS_MAX` kept, the count stops there), ports served
(the responder port of each TCP/UDP flow it answered, seen when the flow ends; at most
`PORTS_MAX`) and names observed passively (DNS answers, TLS SNI, HTTP Host: at most
`NAMES_MAX`, the first seen). When `flows.max_hosts` are held, the longest idle are forgotten
(counted in `counts["evicted"]`).

A minute is closed when a record of a later minute arrives (packet time), or when the clock
(`close_quiet_minute`: packet time moved on by the wall clock) is `QUIET_GRACE_NS` past its end
on a network gone quiet: `take_minutes` returns its `HostMinute` rows (every host with traffic
in it) and `AppMinute` rows. A record of an earlier minute, late, counts in the open one.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from typing import Final

import numpy as np

from leireye.record import APP_LABELS, PROTO_LABELS

from .model import AppMinute, Host, HostMinute
from .rows import ip_text

PEERS_MAX: Final = 1024
PORTS_MAX: Final = 64
NAMES_MAX: Final = 8
MINUTE_NS: Final = 60_000_000_000
QUIET_GRACE_NS: Final = 5_000_000_000  # late records of a minute arrive within this
N_LABELS: Final = 64  # app ids 0..31, then 32 + record.Proto
LABELS: Final = tuple(
    (APP_LABELS[i] if i < len(APP_LABELS) else "") if i < 32 else
    (PROTO_LABELS[i - 32] if i - 32 < len(PROTO_LABELS) else "")
    for i in range(N_LABELS)
)  # fmt: skip
_K1, _K2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)


def address_hash(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    h = hi * _K1 ^ lo * _K2
    h ^= h >> np.uint64(29)
    return h


def labels(app: np.ndarray, proto: np.ndarray) -> np.ndarray:
    return np.where(app != 0, app, 32 + proto.astype(np.int64)).astype(np.int64)


class HostTable:
    def __init__(self, max_hosts: int) -> None:
        cap = self.capacity = max_hosts
        self.index: dict[int, int] = {}
        self.free = list(range(cap - 1, -1, -1))
        z = np.zeros
        self.hi, self.lo, self.hash = z(cap, np.uint64), z(cap, np.uint64), z(cap, np.uint64)
        self.ipver = z(cap, np.uint8)
        self.first_ns, self.last_ns = z(cap, np.int64), z(cap, np.int64)
        self.sent = z((cap, 2), np.uint64)  # packets, bytes
        self.recv = z((cap, 2), np.uint64)
        self.apps = z((cap, N_LABELS), np.uint64)
        self.used = z(cap, bool)
        self.peers: dict[int, set[int]] = defaultdict(set)
        self.ports: dict[int, list[int]] = defaultdict(list)
        self.names: dict[int, list[str]] = defaultdict(list)
        self.counts = {"evicted": 0, "collisions": 0}
        self.minute = -1
        self._minute_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._minute_apps = np.zeros((N_LABELS, 2), dtype=np.int64)
        self._minute_peers: dict[int, set[int]] = defaultdict(set)
        self._minute_ports: dict[int, set[int]] = defaultdict(set)
        self._minute_names: dict[int, set[str]] = defaultdict(set)
        self._closed: list[tuple[list[HostMinute], list[AppMinute]]] = []

    # -- records ---------------------------------------------------------------------------------

    def ingest(self, col: dict[str, np.ndarray]) -> None:
        """IP records' columns (src/dst halves, ip_version, ts_ns, wire_len, app, proto)."""
        n = len(col["ts_ns"])
        if n == 0:
            return
        minute = int(col["ts_ns"].max()) // MINUTE_NS
        if self.minute < 0:
            self.minute = minute
        elif minute > self.minute:
            self._close_minute()
            self.minute = minute
        hi = np.concatenate([col["src_hi"], col["dst_hi"]])
        lo = np.concatenate([col["src_lo"], col["dst_lo"]])
        ver = np.concatenate([col["ip_version"], col["ip_version"]])
        ts = np.concatenate([col["ts_ns"], col["ts_ns"]])
        slots = self.lookup(hi, lo, ver, ts)
        wire = col["wire_len"].astype(np.int64)
        src, dst = slots[:n], slots[n:]
        label = labels(col["app"], col["proto"])
        for side, s in ((self.sent, src), (self.recv, dst)):
            ok = s >= 0
            u, inv = np.unique(s[ok], return_inverse=True)
            side[u, 0] += np.bincount(inv, minlength=len(u)).astype(np.uint64)
            side[u, 1] += np.bincount(inv, weights=wire[ok], minlength=len(u)).astype(np.uint64)
            key = s[ok] * N_LABELS + label[ok]
            uk, kinv = np.unique(key, return_inverse=True)
            self.apps.reshape(-1)[uk] += np.bincount(kinv, weights=wire[ok]).astype(np.uint64)
        ok = slots >= 0
        u, inv = np.unique(slots[ok], return_inverse=True)
        last = np.full(len(u), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, inv, ts[ok])
        self.last_ns[u] = np.maximum(self.last_ns[u], last)
        received = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
        self._minute_parts.append((slots, received, np.r_[label, label], np.r_[wire, wire]))
        self._minute_apps += np.stack(
            [np.bincount(label, minlength=N_LABELS), np.bincount(label, wire, N_LABELS)], axis=1
        ).astype(np.int64)

    def lookup(
        self, hi: np.ndarray, lo: np.ndarray, ver: np.ndarray, ts: np.ndarray | None = None
    ) -> np.ndarray:
        """The slot of each address (-1: a 64-bit hash collision, dropped and counted); new ones
        are added (first seen: their first `ts`)."""
        h = address_hash(hi, lo)
        uh, first, inv = np.unique(h, return_index=True, return_inverse=True)
        get = self.index.get
        slots = np.fromiter((get(k, -1) for k in uh.tolist()), np.int64, len(uh))
        new = np.flatnonzero(slots < 0)
        if len(new) > len(self.free):
            self._evict(len(new) - len(self.free) + self.capacity // 100, slots[slots >= 0])
        for j in new.tolist():
            slot = self.free.pop()
            slots[j] = slot
            self.index[int(uh[j])] = slot
        if len(new):
            s, f = slots[new], first[new]
            self.used[s], self.hash[s] = True, uh[new]
            self.hi[s], self.lo[s], self.ipver[s] = hi[f], lo[f], ver[f]
            self.first_ns[s] = self.last_ns[s] = ts[f] if ts is not None else 0
        per = slots[inv]
        wrong = (self.hi[per] != hi) | (self.lo[per] != lo)
        if wrong.any():
            self.counts["collisions"] += int(wrong.sum())
            per[wrong] = -1
        return per

    def _evict(self, k: int, busy: np.ndarray) -> None:
        used = np.flatnonzero(self.used)
        last = self.last_ns[used].copy()
        last[np.isin(used, busy)] = np.iinfo(np.int64).max
        k = min(k, len(used) - len(busy))
        if k <= 0:
            return
        gone = used[np.argpartition(last, k - 1)[:k]]
        self.counts["evicted"] += k
        for h, s in zip(self.hash[gone].tolist(), gone.tolist(), strict=True):
            del self.index[h]
            self.peers.pop(s, None)
            self.ports.pop(s, None)
            self.names.pop(s, None)
            self.free.append(s)
        self.used[gone] = False
        for column in (self.sent, self.recv, self.apps):
            column[gone] = 0

    # -- from the flow table ---------------------------------------------------------------------

    def add_peers(self, orig: tuple[np.ndarray, np.ndarray], resp: tuple[np.ndarray, np.ndarray],
                  ver: np.ndarray) -> None:  # fmt: skip
        """Flows started: each end is a peer of the other."""
        if len(ver) == 0:
            return
        a = self.lookup(*orig, ver)
        b = self.lookup(*resp, ver)
        ha, hb = address_hash(*orig).tolist(), address_hash(*resp).tolist()
        for x, y, hx, hy in zip(a.tolist(), b.tolist(), ha, hb, strict=True):
            if x < 0 or y < 0:
                continue
            for s, other in ((x, hy), (y, hx)):
                peers = self.peers[s]
                if len(peers) < PEERS_MAX:
                    peers.add(other)
                self._minute_peers[s].add(other)

    def add_ports(self, rows: np.ndarray) -> None:
        """Ended flow rows: the responder served its port when it answered."""
        answered = rows[(rows["resp_pkts"] > 0) & (rows["has_ports"] != 0)]
        if len(answered) == 0:
            return
        slots = self.lookup(answered["resp_hi"], answered["resp_lo"], answered["ip_version"])
        for s, port in zip(slots.tolist(), answered["resp_port"].tolist(), strict=True):
            if s >= 0:
                ports = self.ports[s]
                if port not in ports and len(ports) < PORTS_MAX:
                    ports.append(port)
                self._minute_ports[s].add(port)

    def add_names(self, observed: list[tuple[str, str]]) -> None:
        """(address text, name) pairs observed (`FlowTable.names`)."""
        for address, name in dict.fromkeys(observed):
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                continue
            value = int(ip) if ip.version == 6 else 0xFFFF_0000_0000 | int(ip)
            hi, lo = np.array([value >> 64], np.uint64), np.array([value & (2**64 - 1)], np.uint64)
            (s,) = self.lookup(hi, lo, np.array([ip.version], np.uint8)).tolist()
            if s < 0:
                continue
            names = self.names[s]
            if name not in names and len(names) < NAMES_MAX:
                names.append(name)
            self._minute_names[s].add(name)

    # -- out -------------------------------------------------------------------------------------

    def host(self, s: int) -> Host:
        apps = {LABELS[i]: int(v) for i, v in enumerate(self.apps[s].tolist()) if v}
        return Host(
            ip=ip_text(int(self.hi[s]), int(self.lo[s]), int(self.ipver[s])),
            first_ns=int(self.first_ns[s]),
            last_ns=int(self.last_ns[s]),
            pkts_sent=int(self.sent[s, 0]),
            bytes_sent=int(self.sent[s, 1]),
            pkts_recv=int(self.recv[s, 0]),
            bytes_recv=int(self.recv[s, 1]),
            peers=len(self.peers.get(s, ())),
            apps=apps,
            ports_served=list(self.ports.get(s, [])),
            names=list(self.names.get(s, [])),
        )

    def top(self, n: int) -> list[Host]:
        """The `n` hosts with the most bytes (sent + received)."""
        used = np.flatnonzero(self.used)
        total = self.sent[used, 1] + self.recv[used, 1]
        if len(used) > n:
            used = used[np.argpartition(-total.astype(np.float64), n - 1)[:n]]
        order = np.argsort(-(self.sent[used, 1] + self.recv[used, 1]).astype(np.float64))
        return [self.host(int(s)) for s in used[order]]

    @property
    def active(self) -> int:
        return self.capacity - len(self.free)

    def _close_minute(self) -> None:
        minute_ns = self.minute * MINUTE_NS
        hosts: dict[int, HostMinute] = {}
        if self._minute_parts:
            slot, kind, label, wire = (
                np.concatenate([p[i] for p in self._minute_parts]) for i in range(4)
            )
            ok = slot >= 0
            slot, kind, label, wire = slot[ok], kind[ok], label[ok], wire[ok]
            uk, inv = np.unique(slot * 2 + kind, return_inverse=True)
            pk, by = np.bincount(inv), np.bincount(inv, weights=wire)
            for k, p, b in zip(uk.tolist(), pk.tolist(), by.tolist(), strict=True):
                s, recv = divmod(k, 2)
                m = hosts.get(s) or hosts.setdefault(s, self._minute_row(s, minute_ns))
                if recv:
                    m.pkts_recv, m.bytes_recv = int(p), int(b)
                else:
                    m.pkts_sent, m.bytes_sent = int(p), int(b)
            ua, ainv = np.unique(slot * N_LABELS + label, return_inverse=True)
            for k, b in zip(ua.tolist(), np.bincount(ainv, weights=wire).tolist(), strict=True):
                s, i = divmod(k, N_LABELS)
                hosts[s].apps[LABELS[i]] = hosts[s].apps.get(LABELS[i], 0) + int(b)
        for s, m in hosts.items():
            m.peers = sorted(self._peer_texts(self._minute_peers.get(s, set())))[:PEERS_MAX]
            m.ports_served = sorted(self._minute_ports.get(s, set()))[:PORTS_MAX]
            m.names = sorted(self._minute_names.get(s, set()))[:NAMES_MAX]
        apps = [
            AppMinute(minute_ns=minute_ns, app=LABELS[i], packets=int(p), bytes=int(b))
            for i, (p, b) in enumerate(self._minute_apps.tolist())
            if p
        ]
        self._closed.append((list(hosts.values()), apps))
        self._minute_parts = []
        self._minute_apps[:] = 0
        self._minute_peers.clear()
        self._minute_ports.clear()
        self._minute_names.clear()

    def _minute_row(self, s: int, minute_ns: int) -> HostMinute:
        ip = ip_text(int(self.hi[s]), int(self.lo[s]), int(self.ipver[s]))
        return HostMinute(minute_ns=minute_ns, ip=ip)

    def _peer_texts(self, hashes: set[int]) -> list[str]:
        found = [self.index.get(h) for h in hashes]
        return [
            ip_text(int(self.hi[s]), int(self.lo[s]), int(self.ipver[s]))
            for s in found
            if s is not None
        ]

    def close_quiet_minute(self, now_ns: int) -> None:
        """Close the open minute once `now_ns` is QUIET_GRACE_NS past its end: without it, the
        last busy minute before a quiet spell would wait for the next packet to be stored."""
        current = (now_ns - QUIET_GRACE_NS) // MINUTE_NS
        if self.minute < 0 or current <= self.minute:
            return
        if self._minute_busy():
            self._close_minute()
        self.minute = current

    def _minute_busy(self) -> bool:
        return bool(self._minute_parts or self._minute_peers or self._minute_names)

    def take_minutes(self, flush: bool = False) -> list[tuple[list[HostMinute], list[AppMinute]]]:
        """The minutes closed since the last call (and the open one too when `flush`)."""
        if flush and self.minute >= 0 and self._minute_busy():
            self._close_minute()
        closed, self._closed = self._closed, []
        return closed
