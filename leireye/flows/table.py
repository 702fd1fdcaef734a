"""The flow table: batches of ring records in, bidirectional flows out. Pure: no clock, no I/O.

Why it is shaped so
-------------------
At half a million records a second there is no room for a Python step per packet, so the table
is columns (numpy arrays indexed by a *slot*, one slot per active flow) and a dict from a 64-bit
key hash to the slot. A batch is handled as a whole:

1. the key of every record (VLAN, IP protocol, the two address/port pairs in a canonical order;
   for ICMP the type folded with its answer's, echo request and reply being one flow, and the
   ICMP identifier of the messages that carry one, so that two pings at once are two flows) is
   hashed to 64 bits; a stable argsort groups the records by key; every record is checked to
   carry the same key as the first of its group (a 64-bit collision inside a batch, never seen
   in practice, drops and counts the records that differ);
2. one dict lookup per distinct flow of the batch finds its slot; new flows take free slots (when
   there are none, the longest idle flows are ended early: "evicted", counted);
3. packets and bytes per direction, last seen and the first application label are summed per
   group with `bincount`/`reduceat` and added to the slots in one fancy-indexed step;
4. Zeek's history letters (`tcpstate`): every record gives a bit per letter and direction; only
   the first occurrence of a letter not yet in the flow is an event, so a flow sees at most 12 in
   its life; they are applied in rounds (the k-th event of every flow at once) through a
   transition table;
5. the few records that can carry a first application field (a DNS answer, the first
   ClientHello, HTTP request or SSH banner of a flow) are picked with masks over the first bytes
   of `info`, and only they are read one by one (`appfields.read_fields`).

Time is the packets' own (`ts_ns`), so a pcap replayed at any speed gives the same flows;
`expire(now_ns)` ends the flows that went idle, were torn down a linger ago, or ran past the
active timeout. Ended flows come out as `FLOW_ROW` rows (`take_ended`).
"""

from __future__ import annotations

import os
from typing import Final

import numpy as np

from leireye.config import FlowsConfig
from leireye.record import F_HAS_ADDR, F_HAS_ICMP, F_HAS_ICMP_ID, F_HAS_PORTS, Proto

from . import tcpstate as ts
from .appfields import read_fields
from .rows import END_INDEX, FLOW_ROW, ip_text, table_rows

_K: Final = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB],
    dtype=np.uint64,
)  # fmt: skip
_SYN, _ACK, _FIN, _RST = 0x02, 0x10, 0x01, 0x04
Columns = dict[str, np.ndarray]
_NO_ROOM: Final = -3  # the slot of a new flow the table had no room for, even after evicting
NO_ICMP_ID: Final = -1  # `icmp_id` of a flow keyed without an ICMP identifier
_KEY: Final = ("a_hi", "a_lo", "b_hi", "b_lo", "a_port", "b_port", "vlan", "ipp", "icmp_id")


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (numpy 2's hash-based `unique` was ~10x slower on these)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


def _icmp_fold() -> np.ndarray:
    """`[v6, type]` -> the type that keys the flow: a reply keyed as its request."""
    fold = np.tile(np.arange(256, dtype=np.uint16), (2, 1))
    for request, reply in ((8, 0), (13, 14), (15, 16), (17, 18)):
        fold[0, reply] = request
    for request, reply in ((128, 129), (133, 134), (135, 136)):
        fold[1, reply] = request
    return fold


_ICMP_FOLD: Final = _icmp_fold()
# Idle timeout class by record.Proto: 0 tcp, 1 udp, 2 icmp, 3 other.
_IDLE_CLASS: Final = np.array([3, 0, 1, 2, 2, 3, 3, 3, 3] + [3] * 247, dtype=np.intp)


class FlowTable:
    def __init__(self, config: FlowsConfig, *, uid_prefix: int | None = None) -> None:
        self.config = config
        cap = self.capacity = config.max_active
        idle = config.idle_timeout_s
        idle_s = [idle.tcp, idle.udp, idle.icmp, idle.other]
        self.idle_ns = (np.array(idle_s) * 1e9).astype(np.int64)
        self.close_ns = int(config.tcp_close_s * 1e9)
        self.active_ns = int(config.active_timeout_s * 1e9)
        prefix = int.from_bytes(os.urandom(3)) if uid_prefix is None else uid_prefix
        self._uid_next = (prefix & 0xFFFFFF) << 40
        self.index: dict[int, int] = {}
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.n_free = cap
        z = np.zeros
        self.hash, self.uid = z(cap, np.uint64), z(cap, np.uint64)
        self.a_hi, self.a_lo, self.b_hi, self.b_lo = (z(cap, np.uint64) for _ in range(4))
        self.a_port, self.b_port, self.vlan = (z(cap, np.uint16) for _ in range(3))
        self.icmp_tc = z((cap, 2), np.uint8)
        self.icmp_id = np.full(cap, NO_ICMP_ID, dtype=np.int32)
        self.ipp, self.ipver, self.proto, self.app = (z(cap, np.uint8) for _ in range(4))
        self.has_ports, self.orig_a, self.flipped = (z(cap, bool) for _ in range(3))
        self.first_ns, self.last_ns, self.closed_ns = (z(cap, np.int64) for _ in range(3))
        self.pkts, self.bytes = z((cap, 2), np.uint64), z((cap, 2), np.uint64)
        self.seen, self.state = z(cap, np.uint16), z(cap, np.uint8)
        self.hist, self.hist_len = z((cap, 12), np.uint8), z(cap, np.uint8)
        self.fmask = z(cap, np.uint8)
        self.used = z(cap, bool)
        self.fields: dict[int, dict[str, str]] = {}
        self.ended: list[np.ndarray] = []
        self.started: list[np.ndarray] = []  # slots of the flows started since `take_started`
        self.names: list[tuple[str, str]] = []  # (address, name) observed, for the hosts
        self.now_ns = 0
        self.ip_columns: Columns = {}
        self.counts = dict.fromkeys(
            ("records", "not_ip", "started", "ended", "evicted", "collisions", "overflow"), 0
        )

    # -- ingest ----------------------------------------------------------------------------------

    def ingest(self, records: np.ndarray, raw: np.ndarray | None = None) -> None:
        """Add a batch of RECORD_DTYPE rows (and their kept raw bytes, for HTTP Host and ALPN)."""
        n_all = len(records)
        if n_all == 0:
            return
        self.counts["records"] += n_all
        ip = ((records["flags"] & F_HAS_ADDR) != 0) & (records["ip_version"] != 0)
        idx = np.flatnonzero(ip)
        self.counts["not_ip"] += n_all - len(idx)
        if len(idx) == 0:
            return
        col = {name: records[name][idx] for name in ("src_hi", "src_lo", "dst_hi", "dst_lo",
               "src_port", "dst_port", "vlan", "ip_proto", "ip_version", "proto", "flags",
               "tcp_flags", "icmp_type", "icmp_code", "ts_ns", "wire_len", "app")}  # fmt: skip
        key = self._keys(col)
        h = key["hash"]
        order = np.argsort(h, kind="stable")
        hs = h[order]
        brk = np.flatnonzero(hs[1:] != hs[:-1]) + 1
        starts = np.concatenate(([0], brk))
        step = np.zeros(len(h), dtype=np.int64)
        step[brk] = 1
        grp = np.empty(len(h), dtype=np.int64)
        grp[order] = np.cumsum(step)
        first = order[starts]
        same = np.ones(len(h), dtype=bool)
        for name in _KEY:
            same &= key[name] == key[name][first][grp]
        if not same.all():
            self.counts["collisions"] += int((~same).sum())
        slots = self._slots(hs[starts], first, key, col)
        rslot = slots[grp]
        keep = same & (rslot >= 0)
        if not keep.all():
            full = rslot == _NO_ROOM
            self.counts["overflow"] += int((full & same).sum())
            self.counts["collisions"] += int((~keep & same & ~full).sum())
            idx, grp, rslot = idx[keep], grp[keep], rslot[keep]
            col = {k: v[keep] for k, v in col.items()}
            key = {k: v[keep] for k, v in key.items()}
        self.ip_columns = col  # for the hosts, fed the same records
        direction = self._count(col, key, grp, slots, rslot, len(starts))
        info = records["info"][idx]
        self._letters(col, rslot, direction, info)
        read_fields(self, col["app"], rslot, info, raw[idx] if raw is not None else None)
        batch_now = int(col["ts_ns"].max()) if len(idx) else self.now_ns
        if batch_now > self.now_ns:
            self.now_ns = batch_now

    def _keys(self, col: Columns) -> Columns:
        ports = (col["flags"] & F_HAS_PORTS) != 0
        icmp = (col["flags"] & F_HAS_ICMP) != 0
        sp = np.where(ports, col["src_port"], 0).astype(np.uint16)
        dp = np.where(ports, col["dst_port"], 0).astype(np.uint16)
        folded = _ICMP_FOLD[(col["ip_version"] == 6).astype(np.intp), col["icmp_type"]]
        sp = np.where(icmp, folded, sp)
        dp = np.where(icmp, folded, dp)
        with_id = icmp & ((col["flags"] & F_HAS_ICMP_ID) != 0)  # src_port holds the id
        icmp_id = np.where(with_id, col["src_port"].astype(np.int32), np.int32(NO_ICMP_ID))
        s_hi, s_lo, d_hi, d_lo = col["src_hi"], col["src_lo"], col["dst_hi"], col["dst_lo"]
        src_a = (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (sp <= dp))))
        a_hi, a_lo = np.where(src_a, s_hi, d_hi), np.where(src_a, s_lo, d_lo)
        b_hi, b_lo = np.where(src_a, d_hi, s_hi), np.where(src_a, d_lo, s_lo)
        a_port, b_port = np.where(src_a, sp, dp), np.where(src_a, dp, sp)
        vlan, ipp = col["vlan"], col["ip_proto"]
        small = (vlan.astype(np.uint64) << np.uint64(40)) | (ipp.astype(np.uint64) << np.uint64(32))
        small |= (a_port.astype(np.uint64) << np.uint64(16)) | b_port.astype(np.uint64)
        h = a_hi * _K[0] ^ a_lo * _K[1] ^ b_hi * _K[2] ^ b_lo * _K[3] ^ small * _K[4]
        h ^= (icmp_id.astype(np.int64) + 1).astype(np.uint64) * _K[6]
        h ^= h >> np.uint64(31)
        h *= _K[5]
        h ^= h >> np.uint64(29)
        return {"hash": h, "src_a": src_a, "a_hi": a_hi, "a_lo": a_lo, "b_hi": b_hi,
                "b_lo": b_lo, "a_port": a_port, "b_port": b_port, "vlan": vlan, "ipp": ipp,
                "icmp_id": icmp_id, "ports": ports}  # fmt: skip

    def _slots(
        self, hashes: np.ndarray, first: np.ndarray, key: Columns, col: Columns
    ) -> np.ndarray:
        get = self.index.get
        slots = np.fromiter((get(k, -1) for k in hashes.tolist()), np.int64, len(hashes))
        known = np.flatnonzero(slots >= 0)
        if len(known):
            s, f = slots[known], first[known]
            wrong = np.zeros(len(known), dtype=bool)
            for name in _KEY:
                wrong |= getattr(self, name)[s] != key[name][f]
            slots[known[wrong]] = -2  # a live flow with the same hash: dropped, counted
            pure_syn = (col["tcp_flags"][f] & (_SYN | _ACK | _RST | _FIN)) == _SYN
            reused = ~wrong & (self.closed_ns[s] != 0) & pure_syn
            if reused.any():  # a new connection on the 5-tuple of one torn down
                self._end(s[reused], self._close_reasons(s[reused]))
                slots[known[reused]] = -1
        new = np.flatnonzero(slots == -1)
        if len(new):
            busy = slots[slots >= 0]
            slots[new] = self._create(hashes[new], first[new], key, col, busy)
        return slots

    def _create(
        self,
        hashes: np.ndarray,
        first: np.ndarray,
        key: Columns,
        col: Columns,
        busy: np.ndarray,
    ) -> np.ndarray:
        wanted = len(hashes)
        if wanted > self.n_free:
            self._evict(wanted - self.n_free + self.capacity // 100, busy)
        k = min(wanted, self.n_free)  # more new flows in one batch than the table holds
        hashes, first = hashes[:k], first[:k]
        s = self.free[self.n_free - k : self.n_free][::-1].copy()
        self.n_free -= k
        self.index.update(zip(hashes.tolist(), s.tolist(), strict=True))
        self.used[s] = True
        self.hash[s] = hashes
        self.uid[s] = np.arange(self._uid_next, self._uid_next + k, dtype=np.uint64)
        self._uid_next += k
        for name in _KEY:
            getattr(self, name)[s] = key[name][first]
        self.has_ports[s] = key["ports"][first]
        self.ipver[s], self.proto[s] = col["ip_version"][first], col["proto"][first]
        self.icmp_tc[s, 0], self.icmp_tc[s, 1] = col["icmp_type"][first], col["icmp_code"][first]
        synack = (col["tcp_flags"][first] & (_SYN | _ACK | _RST | _FIN)) == (_SYN | _ACK)
        flipped = synack & (col["proto"][first] == Proto.TCP)
        self.flipped[s] = flipped
        self.orig_a[s] = key["src_a"][first] != flipped
        self.first_ns[s] = self.last_ns[s] = col["ts_ns"][first]
        self.counts["started"] += k
        self.started.append(s)
        slots: np.ndarray = np.r_[s, np.full(wanted - k, _NO_ROOM, dtype=np.int64)]
        return slots

    def _count(
        self,
        col: Columns,
        key: Columns,
        grp: np.ndarray,
        slots: np.ndarray,
        rslot: np.ndarray,
        g: int,
    ) -> np.ndarray:
        direction: np.ndarray = (key["src_a"] != self.orig_a[rslot]).astype(np.int64)
        gi = grp * 2 + direction
        live = np.flatnonzero(np.bincount(grp, minlength=g))
        s = slots[live]
        cnt = np.bincount(gi, minlength=2 * g).reshape(g, 2)[live]
        size = np.bincount(gi, weights=col["wire_len"], minlength=2 * g).reshape(g, 2)[live]
        self.pkts[s] += cnt.astype(np.uint64)
        self.bytes[s] += size.astype(np.uint64)
        last = np.full(g, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, grp, col["ts_ns"])
        self.last_ns[s] = np.maximum(self.last_ns[s], last[live])
        app = col["app"]
        nz = np.flatnonzero(app != 0)
        if len(nz):
            fs, at = np.unique(rslot[nz], return_index=True)
            unset = self.app[fs] == 0
            self.app[fs[unset]] = app[nz[at[unset]]]
        return direction

    def _letters(
        self, col: Columns, rslot: np.ndarray, direction: np.ndarray, info: np.ndarray
    ) -> None:
        proto, flags = col["proto"], col["tcp_flags"]
        tcp = proto == Proto.TCP
        syn, ack = (flags & _SYN) != 0, (flags & _ACK) != 0
        fin, rst = (flags & _FIN) != 0, (flags & _RST) != 0
        data = tcp & (col["app"] != 0)
        plain = np.flatnonzero(tcp & ~data)
        if len(plain):
            data[plain] = np.char.find(info[plain], b" len=") >= 0
        bits = (syn & ~ack).astype(np.uint16) | ((syn & ack).astype(np.uint16) << 1)
        bits |= (ack & ~syn & ~fin & ~rst & ~data).astype(np.uint16) << 2
        bits |= (data.astype(np.uint16) << 3) | (fin.astype(np.uint16) << 4)
        bits |= rst.astype(np.uint16) << 5
        bits = np.where(tcp, bits, np.where(proto == Proto.UDP, 1 << ts.D, 0)).astype(np.uint16)
        bits <<= (6 * direction).astype(np.uint16)
        new = bits & ~self.seen[rslot]
        cand = np.flatnonzero(new)
        if len(cand) == 0:
            return
        rec, bit = np.nonzero((new[cand, None] >> np.arange(12, dtype=np.uint16)) & 1)
        ev_slot = rslot[cand[rec]]
        _, at = np.unique(ev_slot * 16 + bit, return_index=True)
        at.sort()  # first occurrence of each (flow, letter), in record order
        ev_slot, ev_bit = ev_slot[at], bit[at].astype(np.intp)
        by_slot = np.argsort(ev_slot, kind="stable")
        sorted_slots = ev_slot[by_slot]
        run = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
        run_len = np.diff(np.r_[run, len(sorted_slots)])
        rank = np.empty(len(ev_slot), dtype=np.int64)
        rank[by_slot] = np.arange(len(sorted_slots)) - np.repeat(run, run_len)
        for r in range(int(rank.max()) + 1):
            pick = rank == r
            s, b = ev_slot[pick], ev_bit[pick]
            self.state[s] = ts.TRANSITIONS[self.state[s], b]
            self.hist[s, self.hist_len[s]] = b
            self.hist_len[s] += 1
            self.seen[s] |= (1 << b).astype(np.uint16)
        touched = distinct(ev_slot)
        down = ts.CLOSED_STATES[self.state[touched]] & (self.closed_ns[touched] == 0)
        down &= self.proto[touched] == Proto.TCP
        self.closed_ns[touched[down]] = self.last_ns[touched[down]]

    def endpoints(
        self, slots: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], np.ndarray]:
        """((orig hi, lo), (resp hi, lo), ip_version) of the flows in `slots`."""
        a = self.orig_a[slots]
        ahi, alo, bhi, blo = (c[slots] for c in (self.a_hi, self.a_lo, self.b_hi, self.b_lo))
        orig = (np.where(a, ahi, bhi), np.where(a, alo, blo))
        resp = (np.where(a, bhi, ahi), np.where(a, blo, alo))
        return orig, resp, self.ipver[slots]

    def resp_ip(self, slot: int) -> str:
        a = bool(self.orig_a[slot])
        hi, lo = (self.b_hi, self.b_lo) if a else (self.a_hi, self.a_lo)
        return ip_text(int(hi[slot]), int(lo[slot]), int(self.ipver[slot]))

    # -- ending ----------------------------------------------------------------------------------

    def expire(self, now_ns: int | None = None) -> None:
        """End the flows idle past their transport's timeout, torn down `tcp_close_s` ago, or
        (reported and continued) older than the active timeout, at packet time `now_ns`."""
        now = self.now_ns if now_ns is None else max(now_ns, self.now_ns)
        used = np.flatnonzero(self.used)
        if len(used) == 0:
            return
        idle = now - self.last_ns[used] > self.idle_ns[_IDLE_CLASS[self.proto[used]]]
        closed_at = self.closed_ns[used]
        down = (closed_at != 0) & (now - closed_at >= self.close_ns) & ~idle
        if idle.any():
            self._end(used[idle], END_INDEX["idle"])
        if down.any():
            self._end(used[down], self._close_reasons(used[down]))
        if self.active_ns:
            rest = used[~idle & ~down]
            long = rest[now - self.first_ns[rest] >= self.active_ns]
            if len(long):
                self._report(long, END_INDEX["active"])
                self.first_ns[long] = self.last_ns[long]
                self.pkts[long] = 0
                self.bytes[long] = 0

    def end_all(self) -> None:
        """End every flow ("shutdown"): the process is stopping."""
        used = np.flatnonzero(self.used)
        if len(used):
            self._end(used, END_INDEX["shutdown"])

    def _close_reasons(self, slots: np.ndarray) -> np.ndarray:
        o, r = np.divmod(self.state[slots], ts.N_STATES)
        reset = (o == ts.RESET) | (r == ts.RESET)
        return np.where(reset, END_INDEX["rst"], END_INDEX["fin"]).astype(np.uint8)

    def _evict(self, k: int, busy: np.ndarray) -> None:
        """End the `k` flows idle the longest, but none of `busy` (flows of the batch)."""
        used = np.flatnonzero(self.used)
        last = self.last_ns[used]
        last[np.isin(used, busy)] = np.iinfo(np.int64).max
        k = min(k, len(used) - len(busy))
        if k <= 0:
            return
        oldest = used[np.argpartition(last, k - 1)[:k]]
        self.counts["evicted"] += k
        self._end(oldest, END_INDEX["evicted"])

    def _report(self, slots: np.ndarray, reason: int | np.ndarray) -> None:
        rows = self.rows(slots)
        rows["end_reason"] = reason
        self.ended.append(rows)

    def _end(self, slots: np.ndarray, reason: int | np.ndarray) -> None:
        self._report(slots, reason)
        self.counts["ended"] += len(slots)
        index, fields = self.index, self.fields
        for h in self.hash[slots].tolist():
            del index[h]
        for slot in slots[self.fmask[slots] != 0].tolist():
            fields.pop(slot, None)
        self.used[slots] = False
        for column in (self.pkts, self.bytes, self.seen, self.state, self.hist_len, self.fmask,
                       self.closed_ns, self.app):  # fmt: skip
            column[slots] = 0
        self.free[self.n_free : self.n_free + len(slots)] = slots
        self.n_free += len(slots)

    def take_ended(self) -> np.ndarray:
        """The rows of the flows ended (or reported by the active timeout) since the last call."""
        rows = np.concatenate(self.ended) if self.ended else np.empty(0, FLOW_ROW)
        self.ended = []
        return rows

    def take_started(self) -> np.ndarray:
        slots = np.concatenate(self.started) if self.started else np.empty(0, np.int64)
        self.started = []
        return slots[self.used[slots]]

    # -- rows ------------------------------------------------------------------------------------

    @property
    def active(self) -> int:
        return self.capacity - self.n_free

    def top_rows(self, n: int) -> np.ndarray:
        """FLOW_ROW rows of the `n` active flows with the most bytes, most first."""
        used = np.flatnonzero(self.used)
        total = (self.bytes[used, 0] + self.bytes[used, 1]).astype(np.float64)
        if len(used) > n:
            keep = np.argpartition(-total, n - 1)[:n]
            used, total = used[keep], total[keep]
        return self.rows(used[np.argsort(-total, kind="stable")])

    def touched_since(self, since_ns: int) -> np.ndarray:
        """Slots of the active flows with a packet after `since_ns` (packet time)."""
        return np.flatnonzero(self.used & (self.last_ns > since_ns))

    def rows(self, slots: np.ndarray) -> np.ndarray:
        """FLOW_ROW copies of the flows in `slots` (active ones: `end_reason` 0)."""
        return table_rows(self, slots)
