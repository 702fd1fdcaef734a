"""Packet sources: replay of files the tests write, pacing, looping, errors, interface choice."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import dpkt
import pytest

from leireye.capture.ownfilter import OwnTraffic, kernel_filter
from leireye.capture.pcapfile import write_pcap as write_frames
from leireye.capture.source import (
    CapturedFrames,
    LiveSource,
    OfflineSource,
    PacketSource,
    default_route_interface,
    open_source,
    resolve_interface,
    wire_length,
    wire_lengths,
)
from leireye.config import CaptureConfig, ReplayConfig
from leireye.errors import CaptureError
from leireye.record import LinkType

T0 = 1_600_000_000_000_000_000  # file timestamps, ns
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root")
DATA = Path(__file__).resolve().parents[1] / "data"


def udp_frame(i: int, dport: int = 5353, payload_len: int = 20) -> bytes:
    udp = dpkt.udp.UDP(sport=40000 + i, dport=dport, data=bytes([i % 256]) * payload_len)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(
        src=socket.inet_aton("10.0.0.1"), dst=socket.inet_aton("10.0.0.2"), p=17, data=udp
    )
    ip.len = len(ip)
    eth = dpkt.ethernet.Ethernet(
        src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02", data=ip
    )
    return bytes(eth)


def write_pcap(path: Path, gaps_ns: list[int], dport: int = 5353) -> list[bytes]:
    """A nanosecond pcap: one UDP frame per entry, each `gap` after the previous. (Not dpkt's
    pcap.Writer: it takes float seconds, which cannot hold nanoseconds since 1970.)"""
    frames = [udp_frame(i, dport) for i in range(len(gaps_ns))]
    ts_ns = list(itertools.accumulate(gaps_ns, initial=T0))[1:]
    lengths = [len(frame) for frame in frames]
    write_frames(path, ts_ns, lengths, frames, LinkType.EN10MB, 1600, nanoseconds=True)
    return frames


def config(path: Path | None = None, **kw: object) -> CaptureConfig:
    replay = ReplayConfig(
        speed=kw.pop("speed", "max"),  # type: ignore[arg-type]
        loop=bool(kw.pop("loop", False)),
    )
    return CaptureConfig(pcap=str(path) if path else None, replay=replay, **kw)  # type: ignore[arg-type]


def drain(source: PacketSource, limit: int = 1_000_000) -> list[CapturedFrames]:
    batches = []
    total = 0
    while not source.finished and total < limit:
        batch = source.poll(0.05)
        batches.append(batch)
        total += len(batch.frames)
    return batches


def flat(batches: list[CapturedFrames]) -> tuple[list[int], list[int], list[bytes]]:
    ts = [t for b in batches for t in b.ts_ns]
    wl = [n for b in batches for n in b.wire_lens]
    frames = [f for b in batches for f in b.frames]
    return ts, wl, frames


# -- offline replay ---------------------------------------------------------------------------


def test_max_speed_replays_every_frame_in_order(tmp_path: Path) -> None:
    gaps = [1_000 * (i % 7 + 1) for i in range(500)]
    frames = write_pcap(tmp_path / "a.pcap", gaps)
    before = time.time_ns()
    source = open_source(config(tmp_path / "a.pcap", batch_max=64))
    assert isinstance(source, OfflineSource)
    assert source.linktype == LinkType.EN10MB
    batches = drain(source)
    ts, wire_lens, got = flat(batches)
    assert got == frames
    assert wire_lens == [len(f) for f in frames]
    assert all(len(b.frames) <= 64 for b in batches)
    # shifted to "now" at replay start, spacing kept exactly
    assert before <= ts[0] <= time.time_ns()
    assert [b - a for a, b in itertools.pairwise(ts)] == gaps[1:]
    assert source.finished
    assert source.poll(0.01).frames == []
    assert source.stats() == (500, 0, 0)
    source.close()


def test_loop_keeps_timestamps_increasing_across_passes(tmp_path: Path) -> None:
    gaps = [1_000_000] * 10
    frames = write_pcap(tmp_path / "a.pcap", gaps)
    source = open_source(config(tmp_path / "a.pcap", loop=True, batch_max=7))
    batches = drain(source, limit=35)
    ts, _, got = flat(batches)
    assert not source.finished
    assert got[:30] == frames * 3
    assert all(b > a for a, b in itertools.pairwise(ts))
    # a pass starts one mean gap after the previous pass's last packet
    assert ts[10] - ts[9] == 1_000_000
    source.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 5_000_000_000
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += int(seconds * 1e9)


@pytest.mark.parametrize("speed", ["original", 4.0, 0.5])
def test_paced_replay_emits_no_frame_before_it_is_due(tmp_path: Path, speed: object) -> None:
    gaps = [0, 10_000_000, 0, 30_000_000, 5_000_000, 200_000_000, 1_000_000]
    write_pcap(tmp_path / "a.pcap", gaps)
    clock = FakeClock()
    source = OfflineSource(
        str(tmp_path / "a.pcap"), config(speed=speed), clock=clock, sleep=clock.sleep
    )
    factor = 1.0 if speed == "original" else float(speed)  # type: ignore[arg-type]
    start = clock.now
    emitted: list[tuple[int, int]] = []  # (clock at emission, ts)
    while not source.finished:
        batch = source.poll(0.05)
        emitted += [(clock.now, t) for t in batch.ts_ns]
        assert all(s <= 0.05 + 1e-9 for s in clock.slept)  # never sleeps past the poll timeout
    offsets = [sum(gaps[: i + 1]) - gaps[0] for i in range(len(gaps))]
    assert len(emitted) == len(gaps)
    for (at, ts), offset in zip(emitted, offsets, strict=True):
        assert at - start >= int(offset / factor)  # not early
        assert ts - emitted[0][1] == pytest.approx(offset / factor, abs=1)
    source.close()


def test_original_speed_takes_at_least_the_file_duration(tmp_path: Path) -> None:
    gaps = [20_000_000] * 10  # 180 ms between the first and the last frame
    write_pcap(tmp_path / "a.pcap", gaps)
    source = open_source(config(tmp_path / "a.pcap", speed="original"))
    start = time.monotonic()
    arrivals = []
    while not source.finished:
        batch = source.poll(0.05)
        arrivals += [time.monotonic()] * len(batch.frames)
    assert len(arrivals) == 10
    assert arrivals[-1] - start >= 0.9 * 0.18
    assert arrivals == sorted(arrivals)
    source.close()


def test_bpf_applies_to_a_replay(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    with path.open("wb") as f:
        writer = dpkt.pcap.Writer(f, nano=True)
        for i in range(20):
            writer.writepkt_time(udp_frame(i, dport=53 if i % 2 else 123), 1.0 + i)
    source = open_source(config(path, bpf="udp dst port 53"))
    _, _, frames = flat(drain(source))
    assert len(frames) == 10
    source.close()


def test_a_pcapng_file_is_read_too(tmp_path: Path) -> None:
    if shutil.which("editcap") is None:
        pytest.skip("editcap (wireshark-common) not installed")
    frames = write_pcap(tmp_path / "a.pcap", [1000] * 5)
    subprocess.run(
        ["editcap", "-F", "pcapng", str(tmp_path / "a.pcap"), str(tmp_path / "a.pcapng")],
        check=True,
        capture_output=True,
    )
    source = open_source(config(tmp_path / "a.pcapng"))
    assert flat(drain(source))[2] == frames
    source.close()


def test_a_truncated_file_ends_the_replay_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_pcap(tmp_path / "a.pcap", [1000] * 5)
    data = (tmp_path / "a.pcap").read_bytes()
    (tmp_path / "a.pcap").write_bytes(data[:-10])
    source = open_source(config(tmp_path / "a.pcap"))
    assert len(flat(drain(source))[2]) == 4
    assert "truncated" in caplog.text
    source.close()


def test_bad_bpf_on_a_file_is_a_capture_error_with_libpcap_text(tmp_path: Path) -> None:
    write_pcap(tmp_path / "a.pcap", [1000])
    with pytest.raises(CaptureError, match=r"invalid BPF filter 'udp and port'.*syntax error"):
        open_source(config(tmp_path / "a.pcap", bpf="udp and port"))


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), (b"not a capture at all", "not a pcap or pcapng file")],
)
def test_unusable_files_are_capture_errors(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "x.pcap"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CaptureError, match=message):
        open_source(config(path))


def test_check_reopen_fails_when_the_file_is_gone(tmp_path: Path) -> None:
    write_pcap(tmp_path / "a.pcap", [1000])
    source = open_source(config(tmp_path / "a.pcap", loop=True))
    source.check_reopen()
    (tmp_path / "a.pcap").unlink()
    with pytest.raises(CaptureError, match=r"replay\.loop"):
        source.check_reopen()
    source.close()


# -- live -------------------------------------------------------------------------------------


@root_only
def test_bad_bpf_on_an_interface_is_a_capture_error_with_libpcap_text() -> None:
    with pytest.raises(CaptureError, match="syntax error"):
        open_source(CaptureConfig(interface="lo", bpf="udp and port"))


@root_only
def test_a_live_source_runs_the_filter_with_the_sensors_traffic_left_out() -> None:
    own = OwnTraffic(8000, ("127.0.0.1",))
    source = open_source(CaptureConfig(interface="lo", bpf="udp"), own=own)
    try:
        assert source.bpf == kernel_filter("udp", own, source.linktype)
        assert source.bpf.startswith("(udp) and not (tcp and ")
    finally:
        source.close()
    replay = CaptureConfig(pcap=str(DATA / "dns.pcap"), bpf="udp")
    with contextlib.closing(open_source(replay, own=own)) as offline:
        assert offline.bpf == "udp"  # a replay is not the sensor's traffic


@root_only
def test_a_bad_bpf_error_names_the_users_filter_not_the_composed_one() -> None:
    own = OwnTraffic(8000, ("127.0.0.1",))
    with pytest.raises(CaptureError, match=r"^invalid BPF filter 'udp and port': .*syntax error"):
        open_source(CaptureConfig(interface="lo", bpf="udp and port"), own=own)
    # Valid alone, empty once the sensor's port is left out: the error says why.
    with pytest.raises(CaptureError, match="include_own_traffic") as caught:
        open_source(CaptureConfig(interface="lo", bpf="tcp port 8000"), own=OwnTraffic(8000))
    assert "rejects all packets" in str(caught.value)


@root_only
def test_a_missing_interface_is_a_capture_error() -> None:
    with pytest.raises(CaptureError, match="cannot capture on 'nosuchif0': No such device"):
        open_source(CaptureConfig(interface="nosuchif0"))


@root_only
def test_permission_denied_is_a_capture_error_with_a_hint() -> None:
    code = (
        "from leireye.capture.source import open_source\n"
        "from leireye.config import CaptureConfig\n"
        "from leireye.errors import CaptureError\n"
        "try:\n"
        "    open_source(CaptureConfig(interface='lo'))\n"
        "except CaptureError as exc:\n"
        "    print(exc)\n"
    )
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c"]
    result = subprocess.run([*cmd, code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "cannot capture on 'lo'" in result.stdout
    assert "not permitted" in result.stdout and "CAP_NET_RAW" in result.stdout


def test_an_interface_name_that_is_also_a_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lo").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CaptureError, match="also a file"):
        LiveSource("lo", CaptureConfig())


@root_only
def test_live_frames_are_copies_with_nanosecond_timestamps() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        after_open: list[int] = []
        source = open_source(
            CaptureConfig(interface="lo", bpf=f"udp and port {port}", snaplen=128),
            after_open=after_open.append,
        )
        assert after_open == [source.fileno()]
        assert source.poll(0.01).frames == []  # idle: returns, does not hang
        before = time.time_ns()
        s.sendto(b"x" * 300, ("127.0.0.1", port))
        frames: list[bytes] = []
        ts: list[int] = []
        wire: list[int] = []
        deadline = time.monotonic() + 5
        while not frames and time.monotonic() < deadline:
            batch = source.poll(0.05)
            frames += batch.frames
            ts += batch.ts_ns
            wire += batch.wire_lens
        source.close()
    assert len(frames) == 1 and type(frames[0]) is bytes
    assert len(frames[0]) == 128
    assert wire == [14 + 20 + 8 + 300]  # cut at snaplen: the IP header tells the real length
    assert before - 10**9 < ts[0] < time.time_ns() + 10**9


# -- interface resolution ---------------------------------------------------------------------

ROUTE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t010200C0\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
IPV6_ROUTE = (
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     wlan0\n"
    "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
    "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
)


def test_auto_prefers_the_lowest_metric_ipv4_default_route() -> None:
    assert default_route_interface(ROUTE, IPV6_ROUTE) == "eth0"


def test_auto_falls_back_to_the_ipv6_default_route_and_skips_reject_routes() -> None:
    header = ROUTE.splitlines()[0] + "\n"
    assert default_route_interface(header, IPV6_ROUTE) == "wlan0"
    assert default_route_interface(header, IPV6_ROUTE.splitlines()[1]) is None


def test_resolve_interface(tmp_path: Path) -> None:
    assert resolve_interface("eth7", tmp_path) == "eth7"
    assert resolve_interface("auto", tmp_path) == "lo"  # no route files at all
    (tmp_path / "route").write_text(ROUTE)
    assert resolve_interface("auto", tmp_path) == "eth0"


def test_resolve_interface_on_this_machine() -> None:
    name = resolve_interface("auto")
    assert name == "lo" or Path("/sys/class/net", name).exists()


# -- wire length ------------------------------------------------------------------------------


def _cut(frame: bytes, snaplen: int) -> bytes:
    return frame[:snaplen]


def test_wire_length_of_whole_frames_is_their_length() -> None:
    frame = udp_frame(1, payload_len=100)
    assert wire_length(frame, LinkType.EN10MB, 1600) == len(frame)


@pytest.mark.parametrize(
    ("linktype", "prefix"),
    [
        (LinkType.EN10MB, b""),
        (LinkType.LINUX_SLL, b""),
        (LinkType.RAW, b""),
        (LinkType.NULL, struct.pack("<I", 2)),
    ],
)
def test_wire_length_of_cut_frames_comes_from_the_ip_header(
    linktype: LinkType, prefix: bytes
) -> None:
    eth = udp_frame(1, payload_len=1000)
    ip = eth[14:]
    frame = {
        LinkType.EN10MB: eth,
        LinkType.LINUX_SLL: b"\x00\x00\x03\x04\x00\x06" + bytes(8) + b"\x08\x00" + ip,
        LinkType.RAW: ip,
        LinkType.NULL: prefix + ip,
    }[linktype]
    header = len(frame) - len(ip)
    assert wire_length(_cut(frame, 96), linktype, 96) == header + len(ip)


def test_wire_length_through_vlan_tags_and_ipv6() -> None:
    ip6 = dpkt.ip6.IP6(src=bytes(16), dst=bytes(16), nxt=17, hlim=64, data=b"\x00" * 500, plen=500)
    tagged = b"\x02" * 12 + b"\x81\x00\x00\x05" + b"\x86\xdd" + bytes(ip6)
    assert wire_length(tagged[:100], LinkType.EN10MB, 100) == 18 + 40 + 500
    arp_like = b"\x02" * 12 + b"\x08\x06" + bytes(200)
    assert wire_length(arp_like[:64], LinkType.EN10MB, 64) == 64


@pytest.mark.parametrize("snaplen", [64, 96, 1600])
@pytest.mark.parametrize("linktype", [LinkType.EN10MB, LinkType.RAW, LinkType.LINUX_SLL])
def test_wire_lengths_of_a_batch_are_each_frames_wire_length(
    linktype: LinkType, snaplen: int
) -> None:
    """The batch shortcut (no frame cut: their lengths) and the walk of the cut frames give
    what `wire_length` gives frame by frame, for whole, cut, empty and garbage frames."""
    frames = [udp_frame(i, payload_len=i * 37 % 1400)[:snaplen] for i in range(60)]
    frames += [b"", b"\x45", b"\xff" * snaplen, b"\x60" + bytes(snaplen - 1), bytes(snaplen)]
    for batch in (frames, frames[:3], [f for f in frames if len(f) < snaplen], []):
        expected = [wire_length(f, linktype, snaplen) for f in batch]
        assert wire_lengths(batch, linktype, snaplen) == expected


@pytest.mark.parametrize("speed", ["max", 4.0, 0.5])
def test_replay_timestamps_follow_the_file_at_any_speed(tmp_path: Path, speed: object) -> None:
    """The replay's timestamps are the file's spacing divided by the speed factor ("max": 1),
    whatever the batch boundaries."""
    gaps = [1_000 * (i % 5 + 1) for i in range(300)]
    frames = write_pcap(tmp_path / "a.pcap", gaps)
    clock = FakeClock()
    source = OfflineSource(
        str(tmp_path / "a.pcap"),
        config(tmp_path / "a.pcap", speed=speed, batch_max=7),
        clock=clock,
        sleep=lambda s: setattr(clock, "now", clock.now + int(s * 1e9) + 1),
    )
    ts, _, got = flat(drain(source))
    factor = 1.0 if speed == "max" else float(speed)  # type: ignore[arg-type]
    offsets = list(itertools.accumulate(gaps[1:], initial=0))
    assert got == frames
    assert [t - ts[0] for t in ts] == [int(o / factor) for o in offsets]
    source.close()
