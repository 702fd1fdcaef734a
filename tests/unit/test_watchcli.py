"""`leireye watch` / `leireye stats`: line formatting and where the credentials come from."""

from __future__ import annotations

import argparse
import io

import pytest

from leireye.cli.watch import (
    WatchError,
    client_options,
    format_gap,
    format_packet,
    format_stats,
    sensor_filter,
)
from leireye.client import Gap
from leireye.wire import PacketData, StatsData


def packet(**kw: object) -> PacketData:
    base: dict[str, object] = {
        "id": 42, "timestamp": "2024-01-20T10:30:01.123Z", "src_ip": "192.168.1.100",
        "dst_ip": "142.250.185.14", "src_port": 54321, "dst_port": 443, "protocol": "TCP",
        "length": 1500, "flags": ["ACK", "PSH"], "info": "TLS Application Data", "app": "TLS",
        "ip_version": 4, "vlan": None,
    }  # fmt: skip
    base.update(kw)
    return PacketData(**base)  # type: ignore[arg-type]


def test_a_tcp_packet_reads_like_tcpdump() -> None:
    assert format_packet(packet()) == (
        "10:30:01.123 192.168.1.100.54321 > 142.250.185.14.443: TCP/TLS [PSH, ACK] "
        "length 1500: TLS Application Data"
    )


def test_flags_read_the_same_on_the_line_as_in_info() -> None:
    """The wire lists flags in header order (["ACK", "RST"]); the line shows them in the one
    form the decoder's `info` uses."""
    reset = packet(flags=["ACK", "RST"], app=None, info="54321 → 443 [RST, ACK]")
    assert format_packet(reset) == (
        "10:30:01.123 192.168.1.100.54321 > 142.250.185.14.443: TCP [RST, ACK] "
        "length 1500: 54321 → 443 [RST, ACK]"
    )


def test_packets_without_ports_flags_or_addresses() -> None:
    icmp = packet(protocol="ICMP", src_port=None, dst_port=None, flags=[], app=None,
                  info="Echo request", length=98)  # fmt: skip
    assert format_packet(icmp) == (
        "10:30:01.123 192.168.1.100 > 142.250.185.14: ICMP length 98: Echo request"
    )
    v6 = packet(src_ip="fe80::1", dst_ip="ff02::fb", src_port=5353, dst_port=5353,
                protocol="UDP", app="mDNS", flags=[], info="mDNS")  # fmt: skip
    assert "fe80::1.5353 > ff02::fb.5353: UDP/mDNS length" in format_packet(v6)
    bare = packet(src_ip=None, dst_ip=None, src_port=None, dst_port=None, protocol="OTHER",
                  app=None, flags=[])  # fmt: skip
    assert " - > -: OTHER length 1500" in format_packet(bare)


def test_a_centrals_packet_names_its_sensor_and_only_there() -> None:
    assert format_packet(packet(sensor="branch-7")) == (
        "10:30:01.123 branch-7 192.168.1.100.54321 > 142.250.185.14.443: TCP/TLS [PSH, ACK] "
        "length 1500: TLS Application Data"
    )
    assert format_packet(packet(sensor=None)).startswith("10:30:01.123 - 192.168.1.100.54321 >")
    assert format_packet(packet()).startswith("10:30:01.123 192.168.1.100.54321 >")


def test_the_sensor_option_is_a_name_or_names() -> None:
    assert sensor_filter(None) is None
    assert sensor_filter("east") == "east"
    assert sensor_filter("east, west") == ["east", "west"]
    with pytest.raises(WatchError, match="empty name"):
        sensor_filter("east,,west")


def test_stats_line() -> None:
    s = StatsData(1567, 45, 125_000, {"UDP": 10, "TCP": 35}, 2_500_000, {}, 0, 0, 0, 0, 0, 3,
                  "2024-01-20T10:30:01.200Z")  # fmt: skip
    assert format_stats(s) == (
        "10:30:01 45 pkt/s 125.0 kB/s total 1567 | TCP 35 UDP 10 | "
        "drops kernel=0 if=0 ring=0 stream=0 client=3"
    )


def test_gap_line() -> None:
    assert "unknown number" in format_gap(Gap("reconnect", None, "x", None))
    assert "1200 packets missed (slow_consumer)" in format_gap(Gap("slow_consumer", 1200, "x", 7))


def args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**{"token": None, "user": None, "password_stdin": False, **kw})


def test_credentials_from_option_environment_or_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEIREYE_TOKEN", raising=False)
    assert client_options(args(token="abc")) == {"token": "abc"}
    with pytest.raises(WatchError, match="no token"):
        client_options(args())
    monkeypatch.setenv("LEIREYE_TOKEN", "from-env")
    assert client_options(args()) == {"token": "from-env"}
    stdin = io.StringIO("s3cret pass\nignored\n")
    assert client_options(args(user="bob", password_stdin=True), stdin) == {
        "username": "bob", "password": "s3cret pass",
    }  # fmt: skip
    with pytest.raises(WatchError, match="not both"):
        client_options(args(user="bob", token="abc"))
