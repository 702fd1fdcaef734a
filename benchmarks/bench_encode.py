"""How fast ring rows become `packet` messages, and how fast filters mask a batch.

Encoding (µs per packet, best of `--repeat`, batches of `--batch` realistic records):
  naive json      a dict per packet + `json.dumps`: the obvious implementation
  dict + msgspec  the same dicts, `msgspec.json.encode`
  columns, dict + msgspec   columns to Python lists once, then a dict per packet and msgspec:
                  the best a generic encoder reaches here
  encode_packets  `leireye.web.encode`, warm memos (a worker's steady state)
  ... cold        a fresh encoder per batch (every address and info text new to it)
Masks (million records per second over `--records` rows) for a few typical filters.

    .venv/bin/python benchmarks/bench_encode.py [--batch 4096] [--records 65536] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from leireye.record import (
    F_HAS_ADDR,
    F_HAS_PORTS,
    NO_VLAN,
    RECORD_DTYPE,
    App,
    Proto,
    TcpFlag,
    halves_to_ip,
    tcp_flag_names,
)
from leireye.web.encode import PacketEncoder
from leireye.web.filters import PacketFilter, parse_filters

INFOS = [
    b"HTTPS [ACK]",
    b"TLS Application Data",
    b"DNS query A www.example.com",
    "51234 → 443 [ACK] len=1448".encode(),
    b"HTTP GET /index.html",
    b"QUIC 1-RTT",
]


def realistic(n: int, seed: int = 1, hosts: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.zeros(n, RECORD_DTYPE)
    r["seq"] = np.arange(1, n + 1)
    r["ts_ns"] = time.time_ns() + np.cumsum(rng.integers(0, 20_000, n))
    r["proto"] = rng.choice(
        [Proto.TCP, Proto.UDP, Proto.ICMP, Proto.ARP, Proto.ICMPV6],
        n,
        p=[0.62, 0.3, 0.03, 0.03, 0.02],
    )
    r["app"] = rng.choice([App.NONE, App.TLS, App.HTTP, App.DNS, App.QUIC], n)
    r["wire_len"] = np.where(rng.random(n) < 0.45, rng.integers(60, 100, n), 1514)
    v6 = rng.random(n) < 0.15
    for side in ("src", "dst"):
        host = np.minimum(rng.zipf(1.3, n), hosts).astype(np.uint64)
        r[f"{side}_hi"] = np.where(v6, 0x2001_0DB8_0000_0000, 0)
        r[f"{side}_lo"] = np.where(v6, host, 0xFFFF_0A00_0000 + host)
    r["ip_version"] = np.where(v6, 6, 4)
    ported = np.isin(r["proto"], [Proto.TCP, Proto.UDP])
    r["flags"] = F_HAS_ADDR | np.where(ported, F_HAS_PORTS, 0)
    r["src_port"] = rng.integers(1024, 65535, n)
    r["dst_port"] = rng.choice([443, 80, 53, 22, 8080], n)
    r["tcp_flags"] = np.where(r["proto"] == Proto.TCP, TcpFlag.ACK | TcpFlag.PSH, 0)
    r["vlan"] = NO_VLAN
    unique = np.array([f"{p} → 443 [ACK] len={p % 1500}".encode() for p in range(n)])
    r["info"] = np.where(rng.random(n) < 0.5, np.array(INFOS)[rng.integers(0, 6, n)], unique)
    return r


def as_dict(row: np.void) -> dict[str, Any]:
    flags, version = int(row["flags"]), int(row["ip_version"])
    has_addr, has_ports = flags & F_HAS_ADDR, flags & F_HAS_PORTS
    ms = int(row["ts_ns"]) // 1_000_000
    app, vlan = int(row["app"]), int(row["vlan"])
    return {
        "id": int(row["seq"]),
        "timestamp": str(np.datetime_as_string(np.datetime64(ms, "ms"))) + "Z",
        "src_ip": halves_to_ip(int(row["src_hi"]), int(row["src_lo"]), version)
        if has_addr
        else None,
        "dst_ip": halves_to_ip(int(row["dst_hi"]), int(row["dst_lo"]), version)
        if has_addr
        else None,
        "src_port": int(row["src_port"]) if has_ports else None,
        "dst_port": int(row["dst_port"]) if has_ports else None,
        "protocol": Proto(int(row["proto"])).label,
        "length": int(row["wire_len"]),
        "flags": tcp_flag_names(int(row["tcp_flags"])),
        "info": bytes(row["info"]).decode("utf-8", "replace"),
        "app": App(app).label or None,
        "ip_version": version or None,
        "vlan": None if vlan == NO_VLAN else vlan,
    }


def naive_json(records: np.ndarray) -> list[str]:
    return [json.dumps({"type": "packet", "data": as_dict(row)}) for row in records]


def dict_msgspec(records: np.ndarray) -> list[bytes]:
    encode = msgspec.json.encode
    return [encode({"type": "packet", "data": as_dict(row)}) for row in records]


def columns_dict_msgspec(records: np.ndarray) -> list[bytes]:
    """The best a generic encoder does here: columns to lists once, a dict per packet."""
    flags = records["flags"]
    has_addr, has_ports = (flags & F_HAS_ADDR) != 0, (flags & F_HAS_PORTS) != 0
    memo: dict[tuple[int, int, int], str] = {}

    def address(hi: int, lo: int, version: int, ok: bool) -> str | None:
        if not ok:
            return None
        key = (hi, lo, version)
        text = memo.get(key)
        if text is None:
            text = memo[key] = halves_to_ip(hi, lo, version)
        return text

    ms = records["ts_ns"] // 1_000_000
    stamps = [s + "Z" for s in np.datetime_as_string(ms.astype("datetime64[ms]")).tolist()]
    protos = [Proto(p).label for p in range(len(Proto))]
    apps = [App(a).label or None for a in range(len(App))]
    flag_lists = [tcp_flag_names(bits) for bits in range(512)]
    encode = msgspec.json.encode
    return [
        encode(
            {
                "type": "packet",
                "data": {
                    "id": pid,
                    "timestamp": stamp,
                    "src_ip": address(sh, sl, ver, ok),
                    "dst_ip": address(dh, dl, ver, ok),
                    "src_port": sp if hp else None,
                    "dst_port": dp if hp else None,
                    "protocol": protos[proto],
                    "length": length,
                    "flags": flag_lists[tf & 0x1FF],
                    "info": info.decode("utf-8", "replace"),
                    "app": apps[app],
                    "ip_version": ver or None,
                    "vlan": None if vlan == NO_VLAN else vlan,
                },
            }
        )
        for pid, stamp, sh, sl, dh, dl, ver, ok, sp, dp, hp, proto, length, tf, info, app, vlan in zip(  # noqa: E501
            records["seq"].tolist(),
            stamps,
            records["src_hi"].tolist(),
            records["src_lo"].tolist(),
            records["dst_hi"].tolist(),
            records["dst_lo"].tolist(),
            records["ip_version"].tolist(),
            has_addr.tolist(),
            records["src_port"].tolist(),
            records["dst_port"].tolist(),
            has_ports.tolist(),
            records["proto"].tolist(),
            records["wire_len"].tolist(),
            records["tcp_flags"].tolist(),
            records["info"].tolist(),
            records["app"].tolist(),
            records["vlan"].tolist(),
            strict=True,
        )
    ]


def best(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--records", type=int, default=65536)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    batch = realistic(args.batch)
    warm = PacketEncoder()
    print(f"encoding, {args.batch} records per batch (µs per packet, best of {args.repeat}):")
    rows = [
        ("naive json", lambda: naive_json(batch), max(1, args.repeat // 2)),
        ("dict + msgspec", lambda: dict_msgspec(batch), max(1, args.repeat // 2)),
        ("columns, dict + msgspec", lambda: columns_dict_msgspec(batch), args.repeat),
        ("encode_packets", lambda: warm.encode(batch), args.repeat),
        ("encode_packets, cold", lambda: PacketEncoder().encode(batch), args.repeat),
    ]
    for name, fn, repeat in rows:
        print(f"  {name:26s} {best(fn, repeat) / args.batch * 1e6:8.3f}")

    records = realistic(args.records, seed=2)
    filters: list[tuple[str, PacketFilter]] = []
    for spec in (
        {},
        {"protocol": "TCP", "port": 443},
        {"ip": "10.0.0.0/24"},
        {"src_ip": "2001:db8::/64", "min_length": 100},
        {"protocol": "DNS", "dst_ip": "10.0.0.1", "max_length": 512},
    ):
        parsed = parse_filters(spec)
        assert isinstance(parsed, PacketFilter)
        filters.append((json.dumps(spec), parsed))
    print(f"masks over {args.records} records (M records/s):")
    for text, flt in filters:
        seconds = best(lambda flt=flt: flt.mask(records), args.repeat)  # type: ignore[misc]
        matched = int(np.count_nonzero(flt.mask(records)))
        print(f"  {text:62s} {args.records / seconds / 1e6:8.1f}  ({matched} match)")


if __name__ == "__main__":
    main()
