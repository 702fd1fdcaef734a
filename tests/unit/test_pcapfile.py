"""The one pcap writer: headers as the format says, read back by dpkt (and libpcap via pypcap)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import dpkt
import pytest

from leireye.capture.pcapfile import (
    FILE_HEADER,
    MAGIC_NS,
    MAGIC_US,
    file_header,
    file_linktype,
    packet_records,
    pcap_chunks,
    write_pcap,
)
from leireye.record import LinkType

TS_NS = [1_700_000_000_123_456_789, 1_700_000_001_000_000_001]
FRAMES = [b"\x45" + bytes(39), b"\x60" + bytes(59)]


def test_dlt_raw_is_written_as_linktype_raw_and_the_rest_unchanged() -> None:
    assert file_linktype(12) == LinkType.RAW == 101
    for dlt in (LinkType.EN10MB, LinkType.LINUX_SLL, LinkType.LINUX_SLL2, LinkType.RAW, 147):
        assert file_linktype(dlt) == dlt
    header = FILE_HEADER.unpack(file_header(12, 262144))
    assert header == (MAGIC_US, 2, 4, 0, 0, 262144, 101)
    assert FILE_HEADER.unpack(file_header(1, 96, nanoseconds=True))[0] == MAGIC_NS


@pytest.mark.parametrize("nanoseconds", [False, True])
def test_records_read_back_with_their_times_and_lengths(nanoseconds: bool) -> None:
    data = b"".join(pcap_chunks([(TS_NS, [40, 1500], FRAMES)], 12, 1600, nanoseconds=nanoseconds))
    reader = dpkt.pcap.Reader(io.BytesIO(data))
    assert reader.datalink() == LinkType.RAW and reader.snaplen == 1600
    packets = list(reader)
    assert [bytes(buf) for _, buf in packets] == FRAMES
    scale = 1 if nanoseconds else 1000
    assert struct.unpack_from("<IIII", data, 24) == (
        TS_NS[0] // 10**9,
        TS_NS[0] % 10**9 // scale,
        40,
        40,
    )
    second = 24 + 16 + len(FRAMES[0])
    assert struct.unpack_from("<IIII", data, second) == (
        TS_NS[1] // 10**9,
        TS_NS[1] % 10**9 // scale,
        60,
        1500,
    )


def test_wire_length_is_never_less_than_what_is_stored() -> None:
    data = packet_records([0], [10], [bytes(30)])
    assert struct.unpack_from("<IIII", data, 0) == (0, 0, 30, 30)
    assert packet_records([], [], []) == b""


def test_chunks_are_lazy_and_skip_empty_batches() -> None:
    chunks = pcap_chunks(iter([([], [], []), (TS_NS[:1], [40], FRAMES[:1])]), 1, 65535)
    assert len(next(chunks)) == FILE_HEADER.size
    assert len(next(chunks)) == 16 + 40
    assert next(chunks, None) is None


def test_write_pcap_replaces_unless_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    write_pcap(path, TS_NS, [40, 60], FRAMES, LinkType.EN10MB, 65535)
    write_pcap(path, TS_NS[:1], [40], FRAMES[:1], LinkType.EN10MB, 65535)
    with path.open("rb") as f:
        assert len(list(dpkt.pcap.Reader(f))) == 1
    with pytest.raises(FileExistsError):
        write_pcap(path, TS_NS, [40, 60], FRAMES, LinkType.EN10MB, 65535, exclusive=True)


def test_libpcap_reads_linktype_raw_back_as_dlt_raw(tmp_path: Path) -> None:
    pcap = pytest.importorskip("pcap")
    path = tmp_path / "raw.pcap"
    write_pcap(path, TS_NS, [40, 60], FRAMES, 12, 65535, nanoseconds=True)
    handle = pcap.pcap(name=str(path), timestamp_in_ns=True)
    try:
        assert handle.datalink() == 12
        assert [bytes(buf) for _, buf in handle] == FRAMES
    finally:
        handle.close()
