from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.record import F_HAS_ADDR, F_HAS_PORTS, NO_VLAN, RECORD_DTYPE, App, Proto
from leireye.web.filters import FilterError, PacketFilter, parse_filters, protocol_names
from tests.unit.test_web_encode import make


def ok(obj: Any) -> PacketFilter:
    parsed = parse_filters(obj)
    assert isinstance(parsed, PacketFilter), parsed
    return parsed


def error(obj: Any) -> FilterError:
    parsed = parse_filters(obj)
    assert isinstance(parsed, FilterError), parsed
    return parsed


# -- parsing --------------------------------------------------------------------------------------


def test_spec_filters_echo_as_given() -> None:
    spec = {
        "protocol": "TCP",
        "src_ip": "192.168.1.100",
        "dst_ip": "8.8.8.8",
        "port": 443,
        "min_length": 100,
    }
    assert ok(spec).as_dict() == spec
    assert ok({"protocol": "TCP", "port": 443}).as_dict() == {"protocol": "TCP", "port": 443}


def test_none_and_empty_mean_no_filter() -> None:
    assert ok(None) == PacketFilter() and ok({}) == PacketFilter()
    assert ok({"protocol": None, "port": None}) == PacketFilter()
    assert ok({}).as_dict() == {}


def test_canonical_forms_compare_equal_and_hash_equal() -> None:
    a = ok({"protocol": "tcp", "ip": "10.1.2.3/8", "src_ip": "2001:DB8:0::1/64"})
    b = ok({"src_ip": "2001:db8::/64", "ip": "10.0.0.0/8", "protocol": "TCP"})
    assert a == b and hash(a) == hash(b)
    assert a.as_dict() == {"protocol": "TCP", "src_ip": "2001:db8::/64", "ip": "10.0.0.0/8"}
    assert len({a, b, ok({"protocol": "UDP"})}) == 2


@pytest.mark.parametrize(
    ("given", "label"),
    [("icmpv6", "ICMPv6"), ("ipv4", "IPv4"), ("other", "OTHER"), ("dns", "DNS"), ("MDNS", "mDNS")],
)
def test_protocol_labels_any_case(given: str, label: str) -> None:
    assert ok({"protocol": given}).as_dict() == {"protocol": label}


def test_every_label_is_accepted() -> None:
    for name in protocol_names():
        assert ok({"protocol": name}).protocol == name


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"protcol": "TCP"}, "protcol"),
        ({"protocol": "HTTPS"}, "protocol"),
        ({"protocol": 6}, "protocol"),
        ({"src_ip": "999.1.1.1"}, "src_ip"),
        ({"dst_ip": "10.0.0.0/33"}, "dst_ip"),
        ({"ip": "example.com"}, "ip"),
        ({"ip": 167772161}, "ip"),
        ({"port": 65536}, "port"),
        ({"port": -1}, "port"),
        ({"port": "443"}, "port"),
        ({"port": 443.0}, "port"),
        ({"port": True}, "port"),
        ({"src_port": 70000}, "src_port"),
        ({"dst_port": [1]}, "dst_port"),
        ({"min_length": -5}, "min_length"),
        ({"max_length": 2**32}, "max_length"),
        ({"min_length": 100, "max_length": 50}, "max_length"),
        ([1, 2], "filters"),
        ("TCP", "filters"),
    ],
)
def test_bad_filters_name_the_field(obj: Any, field: str) -> None:
    problem = error(obj)
    assert problem.field == field
    assert field in problem.message


def test_error_messages_stay_short_for_huge_values() -> None:
    problem = error({"x" * 10_000: 1})
    assert len(problem.field) < 80 and len(problem.message) < 400
    assert len(error({"ip": "1" * 10_000}).message) < 200


# -- masks ----------------------------------------------------------------------------------------


def rows() -> np.ndarray:
    parts = [
        make(
            src="192.168.1.100",
            dst="8.8.8.8",
            src_port=5000,
            dst_port=443,
            proto=Proto.TCP,
            app=App.TLS,
            wire_len=1500,
        ),
        make(
            src="8.8.8.8",
            dst="192.168.1.100",
            src_port=53,
            dst_port=5000,
            proto=Proto.UDP,
            app=App.DNS,
            wire_len=90,
        ),
        make(
            src="2001:db8::1",
            dst="2001:db8:1::2",
            src_port=443,
            dst_port=6000,
            proto=Proto.TCP,
            wire_len=60,
        ),
        make(src="10.0.0.1", dst="10.0.0.2", proto=Proto.ICMP, wire_len=84),
        make(src="10.0.0.1", dst="10.0.0.254", proto=Proto.ARP, ip_version=0, wire_len=42),
        make(proto=Proto.OTHER, wire_len=64),
        make(proto=77, wire_len=64),  # a value with no label: shown as OTHER
        make(src="::ffff:10.0.0.1", dst="::1", proto=Proto.IPV6, wire_len=100),
    ]
    return np.concatenate(parts)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [0, 1, 2, 3, 4, 5, 6, 7]),
        ({"protocol": "TCP"}, [0, 2]),
        ({"protocol": "dns"}, [1]),
        ({"protocol": "TLS"}, [0]),
        ({"protocol": "OTHER"}, [5, 6]),
        ({"protocol": "arp"}, [4]),
        ({"port": 443}, [0, 2]),
        ({"src_port": 443}, [2]),
        ({"dst_port": 5000}, [1]),
        ({"port": 0}, []),  # rows without ports hold 0 but have no ports
        ({"src_ip": "192.168.1.100"}, [0]),
        ({"ip": "192.168.1.100"}, [0, 1]),
        ({"ip": "10.0.0.0/8"}, [3, 4]),  # ARP addresses match IPv4 networks
        ({"dst_ip": "10.0.0.254/32"}, [4]),
        ({"ip": "0.0.0.0/0"}, [0, 1, 3, 4]),  # every IPv4 address, no IPv6 one
        ({"ip": "::/0"}, [2, 7]),  # every IPv6 address, no IPv4 one
        ({"src_ip": "2001:db8::/32"}, [2]),
        ({"dst_ip": "2001:db8:1::/48"}, [2]),
        ({"src_ip": "::ffff:10.0.0.1"}, [7]),
        ({"src_ip": "::ffff:0:0/96"}, [7]),
        ({"min_length": 90}, [0, 1, 7]),
        ({"max_length": 64}, [2, 5, 6, 4]),
        ({"min_length": 60, "max_length": 64}, [2, 5, 6]),
        ({"protocol": "TCP", "ip": "2001:db8::/32", "port": 443}, [2]),
    ],
)
def test_masks(filters: dict[str, Any], expected: list[int]) -> None:
    mask = ok(filters).mask(rows())
    assert mask.dtype == np.bool_
    assert sorted(np.flatnonzero(mask).tolist()) == sorted(expected)


def test_mask_of_an_empty_batch() -> None:
    assert ok({"ip": "10.0.0.0/8"}).mask(np.zeros(0, RECORD_DTYPE)).shape == (0,)


# -- masks against a per-record reference, on random rows ---------------------------------------

ADDRESSES = [
    "10.0.0.1",
    "10.0.0.200",
    "10.1.0.1",
    "192.168.1.1",
    "2001:db8::1",
    "2001:db9::1",
    "::ffff:10.0.0.1",
    "fe80::1",
]
NETWORKS = [
    "10.0.0.0/8",
    "10.0.0.0/24",
    "10.0.0.1",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "2001:db8::/32",
    "::/0",
    "::ffff:0:0/96",
    "fe80::/10",
    "2001:db8::1",
]


def random_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n):
        fields: dict[str, Any] = {
            "proto": int(rng.integers(0, 12)),
            "app": int(rng.integers(0, 32)),
            "wire_len": int(rng.integers(0, 3000)),
            "vlan": NO_VLAN,
        }
        if rng.random() < 0.8:
            fields["src"] = ADDRESSES[rng.integers(len(ADDRESSES))]
            fields["dst"] = ADDRESSES[rng.integers(len(ADDRESSES))]
        if rng.random() < 0.7:
            fields["src_port"] = int(rng.choice([0, 53, 443, 5000]))
            fields["dst_port"] = int(rng.choice([0, 53, 443, 5000]))
        row = make(**fields)
        if rng.random() < 0.1:  # ARP: addresses without an IP version
            row["ip_version"] = 0
        if rng.random() < 0.1:  # ports present but not valid
            row["flags"] &= ~np.uint8(F_HAS_PORTS)
        parts.append(row)
    return np.concatenate(parts) if parts else np.zeros(0, RECORD_DTYPE)


def naive(filters: dict[str, Any], row: np.void) -> bool:
    flags, version = int(row["flags"]), int(row["ip_version"])

    def address(side: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        if not flags & F_HAS_ADDR:
            return None
        ip = ipaddress.IPv6Address((int(row[f"{side}_hi"]) << 64) | int(row[f"{side}_lo"]))
        if version != 6:
            return ip.ipv4_mapped  # None for a non-mapped value: matches nothing IPv4
        return ip

    def inside(ip: Any, net: str) -> bool:
        network = ipaddress.ip_network(net, strict=False)
        return ip is not None and ip.version == network.version and ip in network

    proto, app = int(row["proto"]), int(row["app"])
    label = Proto(proto).label if proto < len(Proto) else "OTHER"
    app_label = App(app).label if 0 < app < len(App) else None
    has_ports = bool(flags & F_HAS_PORTS)
    sp, dp, length = int(row["src_port"]), int(row["dst_port"]), int(row["wire_len"])
    checks: dict[str, Callable[[Any], bool]] = {
        "protocol": lambda v: v.upper() in (label.upper(), (app_label or "").upper()),
        "src_ip": lambda v: inside(address("src"), v),
        "dst_ip": lambda v: inside(address("dst"), v),
        "ip": lambda v: inside(address("src"), v) or inside(address("dst"), v),
        "port": lambda v: has_ports and v in (sp, dp),
        "src_port": lambda v: has_ports and sp == v,
        "dst_port": lambda v: has_ports and dp == v,
        "min_length": lambda v: length >= v,
        "max_length": lambda v: length <= v,
    }
    return all(checks[key](value) for key, value in filters.items())


filter_objects = st.fixed_dictionaries(
    {},
    optional={
        "protocol": st.sampled_from(["tcp", "UDP", "OTHER", "ARP", "IPv6", "DNS", "tls"]),
        "src_ip": st.sampled_from(NETWORKS),
        "dst_ip": st.sampled_from(NETWORKS),
        "ip": st.sampled_from(NETWORKS),
        "port": st.sampled_from([0, 53, 443, 5000, 9]),
        "src_port": st.sampled_from([0, 53, 443]),
        "dst_port": st.sampled_from([0, 443, 5000]),
        "min_length": st.integers(0, 3000),
        "max_length": st.integers(0, 3000),
    },
)


@settings(max_examples=200, deadline=None)
@given(filter_objects, st.integers(0, 60), st.integers(0, 2**32))
def test_mask_matches_the_per_record_reference(filters: dict[str, Any], n: int, seed: int) -> None:
    parsed = parse_filters(filters)
    if isinstance(parsed, FilterError):
        assert parsed.field == "max_length"
        return
    r = random_rows(n, seed)
    assert parsed.mask(r).tolist() == [naive(filters, row) for row in r]
