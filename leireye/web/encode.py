"""Ring rows to `packet` messages: each row encoded once per worker, however many clients get it.

Why it is shaped so
-------------------
A worker streams the same packet to every connection whose filter matches it, so the JSON text of
a packet is made once, shared, and only queued per connection. Making it is the hot path (a dict
per packet plus `json.dumps` costs ~30 µs/packet here, a dict plus msgspec ~1.9 µs), so the text is
assembled from pieces instead:

* every field that takes few values comes from a table made once: ports and lengths below 65536,
  the 1000 millisecond suffixes, the 512 TCP flag combinations, the protocol labels, and the
  tail `"app", "ip_version", "vlan"` (keyed by one integer made of the three columns);
* the seconds of a timestamp are formatted once per distinct second in the batch
  (`np.unique` + `np.datetime_as_string`), the milliseconds come from the table;
* addresses are formatted once per distinct value (IPv4 vectorised through `np.unique`, IPv6
  through a memo) and `info` texts through a bounded memo (`json.encoder.encode_basestring`,
  C, escapes what JSON needs);
* each message is then one `"".join` of 18 pieces: every piece is either a constant or valid
  JSON, so the result is valid JSON without a generic encoder.

The messages are `str`, not bytes: an ASGI server sends a WebSocket text frame from a `str`, so
bytes would only be decoded again per connection. Tests decode every message back with
`protocol.PacketMessage` (strict) and compare with a plain reference encoder.

Text frames carry UTF-8: an `info` with non-ASCII text makes a message's byte size larger than
its `len`; `utf8_size` gives the byte size cheaply (`str.isascii` is O(1) in CPython).
"""

from __future__ import annotations

import json.encoder
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from leireye.record import (
    APP_LABELS,
    F_HAS_ADDR,
    F_HAS_PORTS,
    NO_VLAN,
    PROTO_LABELS,
    TcpFlag,
    halves_to_ip,
)

_encode_str = json.encoder.encode_basestring  # the C version when available: '"a\\"b"'

PACKET_PREFIX: Final = '{"type":"packet","data":'
PACKETS_PREFIX: Final = '{"type":"packets","data":['
PACKET_MESSAGE_BOUND: Final = 2048
"""No packet message is longer (in UTF-8 bytes), whatever the record holds: the worst case is
an `info` of control characters, each escaped to six bytes (~1.5 KB in all)."""

FLAG_ORDER: Final = (
    TcpFlag.NS,
    TcpFlag.CWR,
    TcpFlag.ECE,
    TcpFlag.URG,
    TcpFlag.ACK,
    TcpFlag.PSH,
    TcpFlag.RST,
    TcpFlag.SYN,
    TcpFlag.FIN,
)
"""TCP flag names in the order of the header's bits, most significant first: ["ACK", "PSH"]."""


def flag_names(bits: int) -> list[str]:
    return [f.name or "" for f in FLAG_ORDER if bits & f]


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_NUMBERS: Final = np.array([str(i) for i in range(65536)] + ["null"], dtype=object)
_NULL_PORT: Final = 65536
_MS: Final = np.array([f'.{ms:03d}Z","src_ip":' for ms in range(1000)], dtype=object)
_FLAGS: Final = np.array(
    [f',"flags":{_json(flag_names(b))},"info":' for b in range(512)], dtype=object
)
_PROTOS: Final = np.array(
    [f'"{PROTO_LABELS[p] if p < len(PROTO_LABELS) else "OTHER"}","length":' for p in range(256)],
    dtype=object,
)
_APP_JSON: Final = [_json(APP_LABELS[a] if 0 < a < len(APP_LABELS) else None) for a in range(256)]
_VERSION_JSON: Final = {4: "4", 6: "6"}


def _tail(key: int) -> str:
    app, version, vlan = key & 0xFF, (key >> 8) & 0xFF, key >> 16
    return (
        f',"app":{_APP_JSON[app]},"ip_version":{_VERSION_JSON.get(version, "null")},'
        f'"vlan":{"null" if vlan == NO_VLAN else vlan}}}}}'
    )


class PacketEncoder:
    """Encodes RECORD_DTYPE rows into `packet` messages. Keeps bounded memos of address and
    info texts across batches: use one per worker, from one thread."""

    def __init__(self, memo_size: int = 16384) -> None:
        self._memo_size = memo_size
        self._addresses: dict[int | tuple[int, int, bool], str] = {}
        self._infos: dict[bytes, str] = {}
        self._tails: dict[int, str] = {}
        self._sensor_tails: dict[tuple[int, str], str] = {}

    def encode(self, records: np.ndarray, sensor_names: Sequence[str] | None = None) -> list[str]:
        """One `{"type":"packet","data":{...}}` message per row, in order. At a fleet central,
        `sensor_names` (`sensors.SensorDirectory.json_names`: the JSON text of each index's
        name) adds `"sensor"` last: `null` for an index it does not hold."""
        n = len(records)
        if n == 0:
            return []
        flags = records["flags"]
        has_ports = (flags & F_HAS_PORTS) != 0
        null_port = np.int32(_NULL_PORT)  # past u2: the index of "null"
        src, dst = self._addresses_of(records, (flags & F_HAS_ADDR) != 0)
        seconds, ms = np.divmod(records["ts_ns"] // 1_000_000, 1000)
        unique_s, which_s = np.unique(seconds, return_inverse=True)
        second_text = np.datetime_as_string(unique_s.astype("datetime64[s]")).astype(object)
        wire_len = records["wire_len"]
        lengths = _NUMBERS[np.minimum(wire_len, 65535)]
        for i in np.flatnonzero(wire_len > 65535).tolist():
            lengths[i] = str(int(wire_len[i]))
        tail_keys = (
            records["app"].astype(np.int64)
            | (records["ip_version"].astype(np.int64) << 8)
            | (records["vlan"].astype(np.int64) << 16)
        )
        if sensor_names is not None:
            tail_keys |= records["sensor"].astype(np.int64) << 32
        unique_t, which_t = np.unique(tail_keys, return_inverse=True)
        tail = self._tail if sensor_names is None else self._sensor_tail(sensor_names)
        tails = np.array([tail(k) for k in unique_t.tolist()], dtype=object)
        join = "".join
        return [
            join(
                (
                    '{"type":"packet","data":{"id":',
                    pid,
                    ',"timestamp":"',
                    sec,
                    msec,
                    s,
                    ',"dst_ip":',
                    d,
                    ',"src_port":',
                    sp,
                    ',"dst_port":',
                    dp,
                    ',"protocol":',
                    proto,
                    length,
                    fl,
                    info,
                    tail,
                )
            )
            for pid, sec, msec, s, d, sp, dp, proto, length, fl, info, tail in zip(
                map(str, records["seq"].tolist()),
                second_text[which_s].tolist(),
                _MS[ms].tolist(),
                src,
                dst,
                _NUMBERS[np.where(has_ports, records["src_port"], null_port)].tolist(),
                _NUMBERS[np.where(has_ports, records["dst_port"], null_port)].tolist(),
                _PROTOS[records["proto"]].tolist(),
                lengths.tolist(),
                _FLAGS[records["tcp_flags"] & 0x1FF].tolist(),
                self._infos_of(records["info"]),
                tails[which_t].tolist(),
                strict=True,
            )
        ]

    def _tail(self, key: int) -> str:
        text = self._tails.get(key)
        if text is None:
            if len(self._tails) >= self._memo_size:
                self._tails.clear()
            text = self._tails[key] = _tail(key)
        return text

    def _sensor_tail(self, names: Sequence[str]) -> Callable[[int], str]:
        def tail(key: int) -> str:
            index = key >> 32
            name = names[index] if index < len(names) else "null"
            memo_key = (key, name)
            text = self._sensor_tails.get(memo_key)
            if text is None:
                if len(self._sensor_tails) >= self._memo_size:
                    self._sensor_tails.clear()
                base = _tail(key & 0xFFFF_FFFF)
                text = self._sensor_tails[memo_key] = f'{base[:-2]},"sensor":{name}}}}}'
            return text

        return tail

    def _addresses_of(
        self, records: np.ndarray, has: npt.NDArray[np.bool_]
    ) -> tuple[list[str], list[str]]:
        """The JSON of each row's source and destination ("null" without addresses), through
        the memo: IPv4 (and ARP) keyed by the mapped `lo`, others by (hi, lo, is IPv6)."""
        v6 = records["ip_version"] == 6
        memo = self._addresses
        columns = []
        for side in ("src", "dst"):
            hi, lo = records[f"{side}_hi"], records[f"{side}_lo"]
            mapped = has & ~v6 & (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
            keys = np.where(mapped, lo, np.uint64(0)).tolist()  # 0: "null" for now
            column = [memo.get(key) or self._v4(key) for key in keys]
            other = np.flatnonzero(has & ~mapped)
            if other.size:
                for i, h, low, is_v6 in zip(
                    other.tolist(),
                    hi[other].tolist(),
                    lo[other].tolist(),
                    v6[other].tolist(),
                    strict=True,
                ):
                    column[i] = self._other(h, low, is_v6)
            columns.append(column)
        return columns[0], columns[1]

    def _v4(self, lo: int) -> str:
        if lo == 0:
            return "null"
        if len(self._addresses) >= self._memo_size:
            self._addresses.clear()
        text = self._addresses[lo] = f'"{halves_to_ip(0, lo, 4)}"'
        return text

    def _other(self, hi: int, lo: int, v6: bool) -> str:
        key = (hi, lo, v6)
        text = self._addresses.get(key)
        if text is None:
            if len(self._addresses) >= self._memo_size:
                self._addresses.clear()
            text = self._addresses[key] = f'"{halves_to_ip(hi, lo, 6 if v6 else 0)}"'
        return text

    def _infos_of(self, column: np.ndarray) -> list[str]:
        memo = self._infos
        out = []
        for raw in column.tolist():
            text = memo.get(raw)
            if text is None:
                if len(memo) >= self._memo_size:
                    memo.clear()
                text = memo[raw] = _encode_str(raw.decode("utf-8", "replace"))
            out.append(text)
        return out


_default: Final = PacketEncoder()


def encode_packets(records: np.ndarray, sensor_names: Sequence[str] | None = None) -> list[str]:
    """`PacketEncoder.encode` with a module-wide encoder (one thread only)."""
    return _default.encode(records, sensor_names)


def packet_data(message: str) -> str:
    """The `data` object of a `packet` message made by this module."""
    return message[len(PACKET_PREFIX) : -1]


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def batch_messages(messages: Sequence[str], max_bytes: int) -> list[tuple[str, int]]:
    """`packet` messages regrouped as `packets` messages of at most `max_bytes` each:
    `(message, packets in it)`, in order. `max_bytes` must exceed PACKET_MESSAGE_BOUND."""
    out: list[tuple[str, int]] = []
    room = max_bytes - len(PACKETS_PREFIX) - 2  # "]}"
    chunk: list[str] = []
    size = 0
    for message in messages:
        data = packet_data(message)
        cost = utf8_size(data) + 1
        if chunk and size + cost > room:
            out.append((PACKETS_PREFIX + ",".join(chunk) + "]}", len(chunk)))
            chunk, size = [], 0
        chunk.append(data)
        size += cost
    if chunk:
        out.append((PACKETS_PREFIX + ",".join(chunk) + "]}", len(chunk)))
    return out


def iso_ms(ns: int) -> str:
    """Unix ns as ISO-8601 UTC with milliseconds and Z: "2024-01-20T10:30:01.123Z"."""
    return str(np.datetime_as_string(np.datetime64(ns // 1_000_000, "ms"), unit="ms")) + "Z"
