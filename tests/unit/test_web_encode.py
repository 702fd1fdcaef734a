from __future__ import annotations

import ipaddress
import json
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leireye.record import (
    F_HAS_ADDR,
    F_HAS_PORTS,
    INFO_BYTES,
    NO_VLAN,
    RECORD_DTYPE,
    App,
    Proto,
    TcpFlag,
)
from leireye.web.encode import (
    PACKET_MESSAGE_BOUND,
    PACKET_PREFIX,
    PacketEncoder,
    batch_messages,
    encode_packets,
    flag_names,
    iso_ms,
    packet_data,
    utf8_size,
)
from leireye.wire import PacketMessage, PacketsMessage
from tests.records import ip_to_halves

SPEC_TS_NS = 1705746601_123_000_000  # 2024-01-20T10:30:01.123Z


def make(n: int = 1, **columns: Any) -> np.ndarray:
    """Rows with addresses and ports given as text/ints; flags set to match."""
    r = np.zeros(n, RECORD_DTYPE)
    r["vlan"] = NO_VLAN
    for name in ("src", "dst"):
        address = columns.pop(name, None)
        if address is not None:
            hi, lo = ip_to_halves(address)
            r[f"{name}_hi"], r[f"{name}_lo"] = hi, lo
            r["flags"] |= F_HAS_ADDR
            r["ip_version"] = ipaddress.ip_address(address).version
    if "src_port" in columns or "dst_port" in columns:
        r["flags"] |= F_HAS_PORTS
    for key, value in columns.items():
        r[key] = value
    return r


def spec_record() -> np.ndarray:
    return make(
        seq=42,
        ts_ns=SPEC_TS_NS,
        src="192.168.1.100",
        dst="142.250.185.14",
        src_port=54321,
        dst_port=443,
        proto=Proto.TCP,
        wire_len=1500,
        tcp_flags=TcpFlag.ACK | TcpFlag.PSH,
        info=b"HTTPS",
    )


def test_the_spec_example_exactly() -> None:
    message = json.loads(encode_packets(spec_record())[0])
    assert message == {
        "type": "packet",
        "data": {
            "id": 42,
            "timestamp": "2024-01-20T10:30:01.123Z",
            "src_ip": "192.168.1.100",
            "dst_ip": "142.250.185.14",
            "src_port": 54321,
            "dst_port": 443,
            "protocol": "TCP",
            "length": 1500,
            "flags": ["ACK", "PSH"],
            "info": "HTTPS",
            "app": None,
            "ip_version": 4,
            "vlan": None,
        },
    }
    spec_keys = ["id", "timestamp", "src_ip", "dst_ip", "src_port", "dst_port", "protocol"]
    assert list(message["data"])[:7] == spec_keys


def test_ipv6_addresses_are_compressed_text() -> None:
    r = make(src="2001:db8::1", dst="fe80::1:2", src_port=1, dst_port=2, proto=Proto.UDP)
    data = json.loads(encode_packets(r)[0])["data"]
    assert (data["src_ip"], data["dst_ip"], data["ip_version"]) == ("2001:db8::1", "fe80::1:2", 6)


def test_a_real_ipv6_address_of_the_mapped_form_stays_ipv6() -> None:
    r = make(src="::ffff:10.0.0.1", dst="::1")
    assert json.loads(encode_packets(r)[0])["data"]["src_ip"] == "::ffff:a00:1"


def test_no_ports_and_no_addresses_give_null() -> None:
    r = make(proto=Proto.OTHER, info=b"LLDP")
    data = json.loads(encode_packets(r)[0])["data"]
    assert data["src_ip"] is data["dst_ip"] is data["src_port"] is data["dst_port"] is None
    assert data["ip_version"] is None
    assert data["flags"] == []


def test_icmp_has_addresses_but_no_ports() -> None:
    r = make(src="10.0.0.1", dst="10.0.0.2", proto=Proto.ICMP)
    data = json.loads(encode_packets(r)[0])["data"]
    assert (data["src_port"], data["dst_port"], data["protocol"]) == (None, None, "ICMP")


def test_arp_shows_its_protocol_addresses() -> None:
    r = make(src="10.0.0.1", dst="10.0.0.254", proto=Proto.ARP, ip_version=0)
    data = json.loads(encode_packets(r)[0])["data"]
    assert (data["src_ip"], data["dst_ip"], data["ip_version"]) == ("10.0.0.1", "10.0.0.254", None)


def test_flags_come_in_header_order() -> None:
    assert flag_names(0x1FF) == ["NS", "CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN"]
    assert flag_names(TcpFlag.SYN | TcpFlag.ACK) == ["ACK", "SYN"]
    r = make(tcp_flags=TcpFlag.FIN | TcpFlag.ACK)
    assert json.loads(encode_packets(r)[0])["data"]["flags"] == ["ACK", "FIN"]


def test_extras_app_vlan_and_labels() -> None:
    r = make(2, proto=[Proto.UDP, 200], app=[App.MDNS, 250], vlan=[42, NO_VLAN])
    first, second = (json.loads(m)["data"] for m in encode_packets(r))
    assert (first["protocol"], first["app"], first["vlan"]) == ("UDP", "mDNS", 42)
    assert (second["protocol"], second["app"], second["vlan"]) == ("OTHER", None, None)


def test_info_is_escaped_and_decoded_leniently() -> None:
    infos = [b'say "hi"\\', b"tab\there\x01", "DNS → é".encode(), b"\xff\xfebad", b""]
    r = make(len(infos), info=infos)
    got = [json.loads(m)["data"]["info"] for m in encode_packets(r)]
    assert got == ['say "hi"\\', "tab\there\x01", "DNS → é", "\ufffd\ufffdbad", ""]


def test_lengths_past_65535_and_large_ids() -> None:
    r = make(2, wire_len=[65535, 262_144], seq=[2**63, 2**64 - 1])
    a, b = (json.loads(m)["data"] for m in encode_packets(r))
    assert (a["length"], b["length"]) == (65535, 262_144)
    assert (a["id"], b["id"]) == (2**63, 2**64 - 1)


def test_timestamps_before_1970_and_extreme() -> None:
    r = make(3, ts_ns=[-1, 0, np.iinfo(np.int64).min])
    got = [json.loads(m)["data"]["timestamp"] for m in encode_packets(r)]
    assert got[:2] == ["1969-12-31T23:59:59.999Z", "1970-01-01T00:00:00.000Z"]
    assert got[2].startswith("1677-09-21T")
    assert iso_ms(SPEC_TS_NS) == "2024-01-20T10:30:01.123Z"


def test_empty_batch() -> None:
    assert encode_packets(np.zeros(0, RECORD_DTYPE)) == []


def test_worst_case_record_stays_under_the_bound() -> None:
    worst = make(
        seq=2**64 - 1,
        ts_ns=np.iinfo(np.int64).max,
        src="ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff1",
        dst="ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff2",
        src_port=65535,
        dst_port=65535,
        wire_len=2**32 - 1,
        tcp_flags=0xFFFF,
        app=App.KERBEROS,
        vlan=4094,
        info=b"\x01" * INFO_BYTES,
    )
    message = encode_packets(worst)[0]
    msgspec.json.decode(message, type=PacketMessage, strict=True)
    assert utf8_size(message) <= PACKET_MESSAGE_BOUND


def test_memos_stay_bounded_and_correct() -> None:
    encoder = PacketEncoder(memo_size=4)
    r = make(50, info=[f"i{i}".encode() for i in range(50)], src="10.0.0.1", dst="::1")
    r["src_lo"] += np.arange(50, dtype=np.uint64)
    r["ip_version"] = 4
    for _ in range(2):
        data = [json.loads(m)["data"] for m in encoder.encode(r)]
        assert [d["info"] for d in data] == [f"i{i}" for i in range(50)]
        assert data[49]["src_ip"] == "10.0.0.50"
    assert len(encoder._infos) <= 4 and len(encoder._addresses) <= 4


def reference(row: np.void) -> dict[str, Any]:
    """The plain, slow encoding the fast path must agree with."""
    flags = int(row["flags"])
    version = int(row["ip_version"])

    def address(side: str) -> str | None:
        if not flags & F_HAS_ADDR:
            return None
        value = (int(row[f"{side}_hi"]) << 64) | int(row[f"{side}_lo"])
        ip = ipaddress.IPv6Address(value)
        if version != 6 and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ip)

    ms = int(row["ts_ns"]) // 1_000_000
    proto, app, vlan = int(row["proto"]), int(row["app"]), int(row["vlan"])
    return {
        "id": int(row["seq"]),
        "timestamp": str(np.datetime_as_string(np.datetime64(ms, "ms"))) + "Z",
        "src_ip": address("src"),
        "dst_ip": address("dst"),
        "src_port": int(row["src_port"]) if flags & F_HAS_PORTS else None,
        "dst_port": int(row["dst_port"]) if flags & F_HAS_PORTS else None,
        "protocol": Proto(proto).label if proto < len(Proto) else "OTHER",
        "length": int(row["wire_len"]),
        "flags": flag_names(int(row["tcp_flags"])),
        "info": bytes(row["info"]).decode("utf-8", "replace"),
        "app": App(app).label if 0 < app < len(App) else None,
        "ip_version": version if version in (4, 6) else None,
        "vlan": None if vlan == NO_VLAN else vlan,
    }


def random_records(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=n * RECORD_DTYPE.itemsize, dtype=np.uint8)
    r = raw.view(RECORD_DTYPE).copy()
    mapped = rng.random(n) < 0.6
    for side in ("src", "dst"):
        r[f"{side}_hi"] = np.where(mapped, 0, r[f"{side}_hi"])
        lo = 0xFFFF_0000_0000 | rng.integers(0, 2**32, n, dtype=np.uint64)
        r[f"{side}_lo"] = np.where(mapped, lo, r[f"{side}_lo"])
    r["ip_version"] = rng.choice([0, 4, 6, 9], n)
    r["vlan"] = np.where(rng.random(n) < 0.7, NO_VLAN, r["vlan"])
    r["wire_len"] = np.where(rng.random(n) < 0.9, r["wire_len"] % 70000, r["wire_len"])
    r["info"] = [bytes(x).rstrip(b"\0")[: rng.integers(0, 60)] for x in r["info"]]
    return r


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 300), st.integers(0, 2**32))
def test_agrees_with_the_reference_on_random_rows(n: int, seed: int) -> None:
    r = random_records(n, seed)
    messages = PacketEncoder().encode(r)
    assert len(messages) == n
    decoder = msgspec.json.Decoder(PacketMessage, strict=True)
    for message, row in zip(messages, r, strict=True):
        decoder.decode(message)
        assert json.loads(message) == {"type": "packet", "data": reference(row)}
        assert "\n" not in message and utf8_size(message) <= PACKET_MESSAGE_BOUND


def test_packet_data_strips_the_envelope() -> None:
    message = encode_packets(spec_record())[0]
    assert message.startswith(PACKET_PREFIX)
    assert json.loads(packet_data(message))["id"] == 42


@pytest.mark.parametrize("max_bytes", [2100, 4096, 65536])
def test_batches_keep_order_and_size(max_bytes: int) -> None:
    r = random_records(500, 7)
    r["seq"] = np.arange(1, 501)
    messages = encode_packets(r)
    batches = batch_messages(messages, max_bytes)
    ids: list[int] = []
    for text, count in batches:
        assert utf8_size(text) <= max_bytes
        decoded = msgspec.json.decode(text, type=PacketsMessage, strict=True)
        assert len(decoded.data) == count
        ids += [p.id for p in decoded.data]
    assert ids == list(range(1, 501))
    assert batch_messages([], max_bytes) == []


def test_utf8_size() -> None:
    assert utf8_size("abc") == 3
    assert utf8_size("→") == 3
