"""Exports of real decoded records through a real ring: the pcap read back by tshark and tcpdump,
the CSV by the csv module, the JSON by json.loads; and no writer accumulates batches."""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dpkt
import numpy as np
import pytest

from leireye.decode.decode import decode_batch
from leireye.record import RECORD_DTYPE, LinkType
from leireye.ring.layout import RingLayout
from leireye.ring.ring import Ring, RingWriter
from leireye.web.encode import PacketEncoder, packet_data
from leireye.web.export import CSV_COLUMNS, csv_stream, iso_us, json_stream, pcap_stream

DATA = Path(__file__).resolve().parent.parent / "data"
RAW_BYTES = 256
SNAPLEN = 262144


class Capture:
    """A pcap of tests/data decoded into a ring, read back in batches like the API will."""

    def __init__(self, name: str, batch: int = 7, linktype: int | None = None) -> None:
        with (DATA / name).open("rb") as f:
            reader = dpkt.pcap.Reader(f)
            self.linktype = reader.datalink() if linktype is None else linktype
            packets = [(round(ts * 1e6) * 1000, bytes(buf)) for ts, buf in reader]
        self.frames = [frame for _, frame in packets]
        self.ts_ns = [ts for ts, _ in packets]
        records = decode_batch(
            self.frames, self.ts_ns, [len(f) for f in self.frames], self.linktype
        ).records
        layout = RingLayout(capacity=1024, raw_bytes=RAW_BYTES)
        self.ring = Ring.over(bytearray(layout.size), layout)
        RingWriter(self.ring).write(records, self.frames)
        self.batch = batch

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = self.ring.write_seq
        for first in range(1, last + 1, self.batch):
            read = self.ring.copy_range(first, min(last, first + self.batch - 1), with_raw=True)
            assert read.raw is not None
            yield read.records, read.raw


def _write(tmp_path: Path, capture: Capture) -> Path:
    path = tmp_path / "export.pcap"
    with path.open("wb") as f:
        for chunk in pcap_stream(capture.batches(), capture.linktype, SNAPLEN):
            f.write(chunk)
    return path


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} is not installed (apt-get install {name}); cannot read the export back"
        )
    return path


@pytest.mark.parametrize("name", ["mixed.pcap", "lo-any.pcap", "lo-any-sll.pcap", "raw.pcap"])
def test_pcap_reads_back_with_tshark(tmp_path: Path, name: str) -> None:
    capture = Capture(name)
    path = _write(tmp_path, capture)
    fields = ["frame.len", "frame.cap_len", "frame.time_epoch", "ip.src", "ipv6.src"]
    out = subprocess.run(
        [_tool("tshark"), "-r", str(path), "-T", "fields", *(a for f in fields for a in ("-e", f))],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert len(out) == len(capture.frames)
    for line, frame, ts in zip(out, capture.frames, capture.ts_ns, strict=True):
        wire, stored, epoch, ip_src, ip6_src = line.split("\t")
        assert int(wire) == len(frame)
        assert int(stored) == min(len(frame), RAW_BYTES)
        assert round(float(epoch) * 1e6) == ts // 1000
        expected = _source_address(frame[:RAW_BYTES], capture.linktype)
        if expected is not None:
            assert expected in (ip_src.split(",")[0], ip6_src.split(",")[0])


def _source_address(frame: bytes, linktype: int) -> str | None:
    offset = {LinkType.EN10MB: 14, LinkType.LINUX_SLL: 16, LinkType.LINUX_SLL2: 20}.get(
        LinkType(linktype), 0
    )
    ethertype = frame[offset - 2 : offset] if offset else None
    if linktype == LinkType.LINUX_SLL2:
        ethertype = frame[0:2]
    version = frame[offset] >> 4 if len(frame) > offset else 0
    if ethertype not in (None, b"\x08\x00", b"\x86\xdd"):
        return None
    if version == 4:
        return ".".join(str(b) for b in frame[offset + 12 : offset + 16])
    if version == 6:
        return str(ipaddress.IPv6Address(frame[offset + 8 : offset + 24]))
    return None


def test_pcap_reads_back_with_tcpdump(tmp_path: Path) -> None:
    capture = Capture("mixed.pcap")
    path = _write(tmp_path, capture)
    result = subprocess.run(
        [_tool("tcpdump"), "-r", str(path), "-n", "-tt"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == len(capture.frames)
    assert "link-type EN10MB" in result.stderr
    assert any("10.77.1.1.53" in line or "10.77.1.2.53" in line for line in lines)
    assert any("fd77:1::1" in line for line in lines)
    first_ts = lines[0].split()[0]
    assert first_ts == f"{capture.ts_ns[0] // 10**9}.{capture.ts_ns[0] // 1000 % 10**6:06d}"


def test_pcap_bytes_match_the_stored_frames() -> None:
    capture = Capture("http.pcap", batch=5)
    data = b"".join(pcap_stream(capture.batches(), capture.linktype, SNAPLEN))
    reader = dpkt.pcap.Reader(io.BytesIO(data))
    assert reader.datalink() == capture.linktype
    assert reader.snaplen == SNAPLEN
    read = [bytes(buf) for _, buf in reader]
    assert read == [f[:RAW_BYTES] for f in capture.frames]


def test_pcap_of_a_dlt_raw_capture_is_linktype_raw(tmp_path: Path) -> None:
    """libpcap on Linux reports a raw-IP interface as DLT_RAW = 12, a number that means
    something else in a file: there raw IP is LINKTYPE_RAW = 101, which tshark decodes."""
    capture = Capture("raw.pcap", linktype=LinkType.RAW_OLD)
    data = b"".join(pcap_stream(capture.batches(), capture.linktype, SNAPLEN))
    reader = dpkt.pcap.Reader(io.BytesIO(data))
    assert reader.datalink() == LinkType.RAW
    assert [bytes(buf) for _, buf in reader] == [f[:RAW_BYTES] for f in capture.frames]
    path = tmp_path / "raw.pcap"
    path.write_bytes(data)
    out = subprocess.run(
        [
            _tool("tshark"),
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.encap_type",
            "-e",
            "ip.src",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert len(out) == len(capture.frames)
    assert {line.split("\t")[0] for line in out} == {"7"}  # WTAP_ENCAP_RAW_IP


def test_pcap_snaplen_below_raw_bytes_cuts_further() -> None:
    capture = Capture("tls.pcap")
    data = b"".join(pcap_stream(capture.batches(), capture.linktype, 64))
    read = [bytes(buf) for _, buf in dpkt.pcap.Reader(io.BytesIO(data))]
    assert read == [f[:64] for f in capture.frames]


def test_pcap_without_raw_bytes_is_refused() -> None:
    records = np.zeros(2, dtype=RECORD_DTYPE)
    stream = pcap_stream([(records, None)], 1, 256)
    next(stream)
    with pytest.raises(ValueError, match="raw bytes"):
        next(stream)


def test_csv_reads_back() -> None:
    capture = Capture("mixed.pcap")
    text = b"".join(csv_stream(capture.batches())).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == len(capture.frames)
    messages = _packets(capture)
    for row, message, ts in zip(rows, messages, capture.ts_ns, strict=True):
        assert int(row["id"]) == message["id"]
        assert row["time"] == iso_us(np.array([ts]))[0]
        assert row["time"][:23] == message["timestamp"][:23]
        assert row["src"] == (message["src_ip"] or "")
        assert row["dst"] == (message["dst_ip"] or "")
        assert row["src_port"] == ("" if message["src_port"] is None else str(message["src_port"]))
        assert row["protocol"] == message["protocol"]
        assert int(row["length"]) == message["length"]
        assert row["flags"].split() == message["flags"]
        assert row["info"] == message["info"]
        assert row["vlan"] == ("" if message["vlan"] is None else str(message["vlan"]))
    assert {"TCP", "UDP", "ICMP", "ICMPv6", "ARP"} <= {row["protocol"] for row in rows}


def _packets(capture: Capture) -> list[dict[str, Any]]:
    encoder = PacketEncoder()
    return [json.loads(packet_data(m)) for r, _ in capture.batches() for m in encoder.encode(r)]


def test_csv_guards_against_formulas_and_quotes_text() -> None:
    records = np.zeros(2, dtype=RECORD_DTYPE)
    records["seq"] = [1, 2]
    records["info"] = [b'=HYPERLINK("x")', b'a,b "c"\nd']
    text = b"".join(csv_stream([(records, None)])).decode()
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert rows[0]["info"] == '\'=HYPERLINK("x")'
    assert rows[1]["info"] == 'a,b "c"\nd'
    assert rows[0]["time"] == "1970-01-01T00:00:00.000000Z"


def test_json_reads_back_as_the_websocket_packets() -> None:
    capture = Capture("dns.pcap", batch=3)
    parsed = json.loads(b"".join(json_stream(capture.batches())))
    assert parsed == _packets(capture)
    assert json.loads(b"".join(json_stream([]))) == []
    empty = np.zeros(0, dtype=RECORD_DTYPE)
    assert json.loads(b"".join(json_stream([(empty, None), (empty, None)]))) == []


def _counted(batches: int, consumed: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    records = np.zeros(100, dtype=RECORD_DTYPE)
    records["wire_len"] = records["cap_len"] = 60
    raw = np.zeros((100, RAW_BYTES), dtype=np.uint8)
    for i in range(batches):
        consumed.append(i)
        records["seq"] = np.arange(i * 100 + 1, i * 100 + 101)
        yield records, raw


@pytest.mark.parametrize("writer", ["pcap", "csv", "json"])
def test_writers_yield_each_batch_before_reading_the_next(writer: str) -> None:
    consumed: list[int] = []
    source = _counted(2000, consumed)
    stream = {
        "pcap": lambda: pcap_stream(source, 1, 65535),
        "csv": lambda: csv_stream(source),
        "json": lambda: json_stream(source),
    }[writer]()
    next(stream)  # the file header, before any batch
    assert consumed == []
    largest = 0
    for n, chunk in enumerate(stream, start=1):
        largest = max(largest, len(chunk))
        assert len(consumed) <= n  # never more than one batch ahead of what it yielded
    assert len(consumed) == 2000
    assert largest < 100 * 400  # one batch's worth, whatever the export's total size
