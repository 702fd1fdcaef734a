"""The fast path against the reference, field by field: on a generated mix, on every cut of some
of its frames, and on every capture under tests/data/ (recorded from real tools)."""

from __future__ import annotations

from pathlib import Path

import pcap
import pytest

from leireye.decode.decode import decode_batch
from leireye.decode.reference.decoder import reference_batch
from leireye.record import DecodeError, LinkType
from tests.decode_compare import first_mismatch
from tests.traffic.frames import tcp4, udp4
from tests.traffic.mix import generate, write_pcap

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTURES = sorted(DATA.glob("*.pcap"))


def _agree(frames: list[bytes], ts: list[int], wire: list[int], linktype: int, label: str) -> None:
    fast = decode_batch(frames, ts, wire, linktype)
    ref = reference_batch(frames, ts, wire, linktype)
    mismatch = first_mismatch(frames, fast.records, ref.records, label)
    assert mismatch is None, mismatch
    assert list(fast.errors) == list(ref.errors)
    assert not fast.errors[DecodeError.INTERNAL], label


def test_generated_mix() -> None:
    mix = generate(20_000, seed=11)
    _agree(mix.frames, mix.ts_ns, mix.wire_lens, LinkType.EN10MB, "mix seed 11")


def test_every_cut_of_some_mix_frames() -> None:
    mix = generate(60, seed=12)
    frames = [frame[:size] for frame in mix.frames for size in range(len(frame) + 1)]
    wire = [len(frame) for frame in mix.frames for _ in range(len(frame) + 1)]
    _agree(frames, list(range(len(frames))), wire, LinkType.EN10MB, "cuts of mix seed 12")


def test_the_same_mix_under_other_link_types() -> None:
    mix = generate(3000, seed=13)
    ts = list(range(len(mix.frames)))
    for linktype in LinkType:
        _agree(mix.frames, ts, mix.wire_lens, linktype, f"mix as link type {linktype.name}")
        stripped = [frame[14:] for frame in mix.frames]
        _agree(
            stripped,
            ts,
            [len(f) for f in stripped],
            linktype,
            f"mix without Ethernet as {linktype.name}",
        )


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_recorded_capture(path: Path) -> None:
    reader = pcap.pcap(str(path))
    linktype = reader.datalink()
    packets = [(round(ts * 1e9), bytes(buf)) for ts, buf in reader]
    reader.close()
    assert packets, f"{path.name} holds no packets"
    frames = [frame for _, frame in packets]
    _agree(frames, [ts for ts, _ in packets], [len(f) for f in frames], linktype, path.name)


def test_written_mix_reads_back(tmp_path: Path) -> None:
    mix = write_pcap(tmp_path / "mix.pcap", 500, seed=14)
    reader = pcap.pcap(str(tmp_path / "mix.pcap"))
    assert reader.datalink() == LinkType.EN10MB
    read = [(round(ts * 1e6) * 1000, bytes(buf)) for ts, buf in reader]
    reader.close()
    assert [frame for _, frame in read] == mix.frames
    assert [ts for ts, _ in read] == mix.ts_ns
    assert generate(500, seed=14).frames == mix.frames  # deterministic


def test_tls_handshake_headers_http_lines_and_dns_repeats() -> None:
    """The paths read in bulk or from caches: TLS handshake records of every short length and
    handshake type (only a whole ClientHello is read per packet), HTTP start lines seen again
    in the same and a later batch (with other headers, other ports, cut), DNS messages that
    differ only in their id, a malformed one repeated, and payloads on port 53 over TCP."""
    tls = []
    for kind in (0, 1, 2, 4, 11, 20, 99, 255):
        for record_len in (0, 1, 3, 4, 5, 300):
            for size in range(5, 12):
                header = bytes([22, 3, 1]) + record_len.to_bytes(2, "big")
                body = bytes([kind, 0, 0, 40]) + bytes(range(40))
                tls.append(tcp4(51000 + size, 443, payload=(header + body)[:size]))
    http = [
        tcp4(50000 + k, port, payload=line + rest)
        for k, (line, rest, port) in enumerate(
            [
                (b"GET /a HTTP/1.1", b"\r\nHost: x\r\n\r\n", 80),
                (b"GET /a HTTP/1.1", b"\r\nHost: y\r\n\r\n", 8080),
                (b"GET /a HTTP/1.1", b"", 80),
                (b"HTTP/1.1 200 OK", b"\r\n\r\n", 80),
                (b"HTTP/1.1 200 OK", b"\nServer: z\r\n", 9999),
                (b"HTTP/1.1 abc", b"\r\n", 80),
                (b"GET", b"\r\n", 80),
                (b"POSTX / HTTP/1.1", b"\r\n", 80),
                (b"HTTPX", b"", 80),
                (b"GET /ab", b"\n", 80),
                (b"GET /abc", b"", 80),  # no LF: the whole payload is the line
            ]
        )
    ]
    query = bytes.fromhex("01000001000000000000000003777777076578616d706c6503636f6d0000010001")
    dns = [udp4(40000 + k, 53, payload=k.to_bytes(2, "big") + query) for k in range(6)]
    dns += [udp4(53, 40000 + k, payload=k.to_bytes(2, "big") + b"\x81" + query[1:]) for k in (1, 2)]
    dns += [udp4(40000, 53, payload=b"\x00\x01\xff" * k) for k in (1, 1, 5, 5)]
    dns += [tcp4(40000, 53, payload=b"\x00\x21" + k.to_bytes(2, "big") + query) for k in (1, 2)]
    frames = tls + http * 2 + dns * 2
    for batch in (frames, list(reversed(frames)), http + dns, tls[:50] + http):
        ts, wire = list(range(len(batch))), [len(f) for f in batch]
        _agree(batch, ts, wire, LinkType.EN10MB, "handshakes, start lines, DNS repeats")
        cut = [f[: len(f) - 3] for f in batch]
        _agree(cut, ts, wire, LinkType.EN10MB, "the same, cut short")
