"""Feeding a pcap to the flow table, and what tshark says of the same file (tests and benchmarks).

`table_flows(path)` decodes a pcap with the sensor's own decoder (`leireye.decode`), hands the
records and the frames' first bytes to a `FlowTable` in ring-sized batches, and ends every flow
at the end of the file. `tshark_conversations(path)` runs `tshark -q -z conv,tcp -z conv,udp` and
reads its table: the peer the agreement tests compare with.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np

from leireye.config import FlowsConfig
from leireye.decode.decode import decode_batch
from leireye.flows.model import Flow
from leireye.flows.rows import to_flows
from leireye.flows.table import FlowTable

RAW_BYTES = 256
DATA_DIR = Path(__file__).resolve().parent / "data"
Counts = tuple[int, int, int, int]  # frames and bytes A->B, frames and bytes B->A
ConvKey = tuple[str, str, int, str, int]  # transport, address A, port A, address B, port B


def read_frames(path: Path) -> tuple[int, list[int], list[int], list[bytes]]:
    """(link type, ts_ns, wire lengths, frames) of a classic pcap file; the wire length is the
    record's `orig_len` (a frame cut by a snaplen, or by `editcap -C`, keeps its wire length)."""
    data = path.read_bytes()
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    ts, wire, frames = [], [], []
    at = 24
    while at + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack_from(order + "IIII", data, at)
        at += 16
        frames.append(data[at : at + incl])
        at += incl
        ts.append(sec * 1_000_000_000 + (frac if nano else frac * 1000))
        wire.append(orig)
    return linktype, ts, wire, frames


def raw_rows(frames: list[bytes], width: int = RAW_BYTES) -> np.ndarray:
    """The first `width` bytes of each frame, as the ring keeps them."""
    raw = np.zeros((len(frames), width), dtype=np.uint8)
    for i, frame in enumerate(frames):
        head = frame[:width]
        raw[i, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    return raw


def table_flows(
    path: Path, batch: int = 4096, config: FlowsConfig | None = None, raw_bytes: int = RAW_BYTES
) -> list[Flow]:
    linktype, ts, wire, frames = read_frames(path)
    table = FlowTable(config or FlowsConfig(max_active=65536))
    for lo in range(0, len(frames), batch):
        hi = lo + batch
        records = decode_batch(frames[lo:hi], ts[lo:hi], wire[lo:hi], linktype).records
        table.ingest(records, raw_rows(frames[lo:hi], raw_bytes))
        table.expire()
    table.end_all()
    return to_flows(table.take_ended())


_SIZE = r"(\d+) (\d+) (bytes|kB|MB|GB)"
_LINE = re.compile(rf"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+{_SIZE}\s+{_SIZE}")
_UNITS = {"bytes": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def _tshark(path: Path, *args: str) -> str:
    tshark = shutil.which("tshark")
    assert tshark is not None, "tshark is needed (apt-get install tshark)"
    return subprocess.run(
        [tshark, "-n", "-r", str(path), *args],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def tshark_conversations(path: Path) -> dict[ConvKey, Counts]:
    """tshark's TCP and UDP conversations: (A->B frames, bytes, B->A frames, bytes) each.

    tshark 4 shows a byte count of 10 000 or more rounded with a unit (`4201 kB`); those are
    taken from tshark's own frame lengths per direction (`-T fields`), and checked to round to
    what the conversation table shows (to its last digit)."""
    out = _tshark(path, "-q", "-z", "conv,tcp", "-z", "conv,udp")
    convs: dict[ConvKey, Counts] = {}
    shown: dict[ConvKey, tuple[int, str, int, str]] = {}
    transport = ""
    for line in out.splitlines():
        if line.endswith("Conversations"):
            transport = line.split()[0]
            continue
        if "<->" not in line:
            continue
        m = _LINE.match(line)
        assert m is not None, f"cannot read tshark's line {line!r}"
        a, pa, b, pb, back_f, back_b, back_u, fwd_f, fwd_b, fwd_u = m.groups()
        key = (transport, a, int(pa), b, int(pb))
        convs[key] = (int(fwd_f), int(fwd_b), int(back_f), int(back_b))
        if back_u != "bytes" or fwd_u != "bytes":
            shown[key] = (int(fwd_b), fwd_u, int(back_b), back_u)
    if shown:
        exact = _frame_bytes(path)
        for key, (fwd, fwd_u, back, back_u) in shown.items():
            t, a, pa, b, pb = key
            there, back_again = exact[(t, a, pa, b, pb)], exact[(t, b, pb, a, pa)]
            assert abs(there / _UNITS[fwd_u] - fwd) < 1, (key, there, fwd, fwd_u)
            assert abs(back_again / _UNITS[back_u] - back) < 1, (key, back_again, back, back_u)
            frames = convs[key]
            convs[key] = (frames[0], there, frames[2], back_again)
    return convs


def _frame_bytes(path: Path) -> dict[ConvKey, int]:
    """Frame bytes per TCP/UDP direction, summed from tshark's fields (ICMP errors, which
    quote a UDP header, left out as the conversation table leaves them)."""
    out = _tshark(path, "-Y", "(tcp or udp) and not icmp and not icmpv6", "-T", "fields",
                  "-E", "separator=,", "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst",
                  "-e", "ipv6.dst", "-e", "tcp.srcport", "-e", "tcp.dstport", "-e",
                  "udp.srcport", "-e", "udp.dstport", "-e", "frame.len")  # fmt: skip
    sums: dict[ConvKey, int] = defaultdict(int)
    for line in out.splitlines():
        s4, s6, d4, d6, ts_, td, us, ud, size = line.split(",")
        transport = "TCP" if ts_ else "UDP"
        sport, dport = (ts_, td) if ts_ else (us, ud)
        sums[(transport, s4 or s6, int(sport), d4 or d6, int(dport))] += int(size)
    return sums


def by_conversation(flows: list[Flow]) -> dict[ConvKey, list[Flow]]:
    """Our TCP and UDP flows under tshark's key (which has no VLAN): both orders are looked up."""
    found: dict[ConvKey, list[Flow]] = defaultdict(list)
    for flow in flows:
        if flow.transport in ("TCP", "UDP"):
            assert flow.orig_port is not None and flow.resp_port is not None
            key = (flow.transport, flow.orig_ip, flow.orig_port, flow.resp_ip, flow.resp_port)
            found[key].append(flow)
    return found


def oriented(flow: Flow, key: ConvKey) -> Counts:
    """The flow's counts in the direction of tshark's key."""
    if (flow.orig_ip, flow.orig_port) == (key[1], key[2]):
        return flow.orig_pkts, flow.orig_bytes, flow.resp_pkts, flow.resp_bytes
    return flow.resp_pkts, flow.resp_bytes, flow.orig_pkts, flow.orig_bytes


def match(flows: list[Flow], convs: dict[ConvKey, Counts]) -> dict[ConvKey, list[Flow]]:
    """tshark's key -> our flows of that conversation (every flow of ours placed once)."""
    ours = by_conversation(flows)
    placed: dict[ConvKey, list[Flow]] = {}
    for key in convs:
        t, a, pa, b, pb = key
        placed[key] = ours.pop(key, []) + ours.pop((t, b, pb, a, pa), [])
    assert not ours, f"flows tshark does not list: {sorted(ours)}"
    return placed
