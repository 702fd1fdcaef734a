"""How fast Follow Stream reassembles a TCP conversation (MB/s of payload), against plain
concatenation of the same frames' payloads.

One conversation of `--mb` MB (90 % server to client, 10 % client to server, 1448-byte
segments, Ethernet + IPv4 + TCP with timestamps like Linux sends), in four shapes:
  concat reference   slice each frame's payload at its known offset and join: the floor
  headers only       `transport_payload` on every frame (the header walk follow does)
  follow, in order   `follow` on the frames as sent
  follow, impaired   5 % of segments lost then retransmitted later, 2 % duplicated, 25 % swapped
                     with their neighbour
Best of `--repeat`; ratios are to the concat reference of the same run.

    .venv/bin/python benchmarks/bench_follow.py [--mb 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the frame builder lives beside the tests
    sys.path.insert(0, str(ROOT))

from leireye.record import LinkType
from leireye.store.follow import Conversation, follow
from leireye.store.payload import transport_payload
from tests.tcpframes import ACK, FIN, SYN, frame

MSS = 1448
C, S = ("10.1.0.1", 51000), ("10.1.0.2", 443)
Frame = tuple[int, int, bytes]


def conversation(total: int, seed: int = 1) -> tuple[list[Frame], dict[str, bytes], int]:
    rng = random.Random(seed)
    sent = {"client": rng.randbytes(total // 10), "server": rng.randbytes(total - total // 10)}
    frames = [frame(C, S, 100, flags=SYN), frame(S, C, 7000, flags=SYN | ACK)]
    offsets = {"client": 0, "server": 0}
    isn = {"client": 101, "server": 7001}
    ends = {"client": (C, S), "server": (S, C)}
    while any(offsets[d] < len(sent[d]) for d in sent):
        d = "client" if rng.random() < 0.1 and offsets["client"] < len(sent["client"]) else "server"
        if offsets[d] >= len(sent[d]):
            d = "client" if d == "server" else "server"
        at = offsets[d]
        src, dst = ends[d]
        frames.append(frame(src, dst, isn[d] + at, sent[d][at : at + MSS]))
        offsets[d] = min(at + MSS, len(sent[d]))
    for d in sent:
        src, dst = ends[d]
        frames.append(frame(src, dst, isn[d] + len(sent[d]), flags=FIN | ACK))
    # Linux adds 12 bytes of TCP timestamps: pad the header the same way (data offset 8)
    stamped = [_with_timestamps(f) for f in frames]
    return [(i * 1000, LinkType.EN10MB, f) for i, f in enumerate(stamped)], sent, 66


def _with_timestamps(buf: bytes) -> bytes:
    ip_len = int.from_bytes(buf[16:18], "big") + 12
    tcp = bytearray(buf[34:])
    tcp[12] = 8 << 4
    options = b"\x01\x01\x08\x0a" + bytes(8)
    out = bytearray(buf[:34]) + tcp[:20] + options + tcp[20:]
    out[16:18] = ip_len.to_bytes(2, "big")
    return bytes(out)


def impaired(frames: list[Frame], seed: int = 2) -> list[Frame]:
    rng = random.Random(seed)
    out: list[Frame] = []
    later: list[Frame] = []
    for f in frames:
        if rng.random() < 0.05:
            later.append(f)  # lost, retransmitted a little later
            continue
        out.append(f)
        if rng.random() < 0.02:
            out.append(f)
        if len(later) > 3 or (later and rng.random() < 0.1):
            out.append(later.pop(0))
        if len(out) > 2 and rng.random() < 0.25:
            out[-1], out[-2] = out[-2], out[-1]
    return out + later


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=32.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    total = int(args.mb * 1e6)
    frames, sent, header = conversation(total)
    shuffled = impaired(frames)
    conv = Conversation("TCP", C, S)
    cap = 2 * total

    def concat() -> bytes:
        return b"".join(f[2][header:] for f in frames)

    def headers() -> int:
        return sum(len(p.data) for f in frames if (p := transport_payload(f[2], f[1])))

    def in_order() -> None:
        st = follow(frames, conv, cap)
        assert st.data("server") == sent["server"] and st.data("client") == sent["client"]

    def with_impairment() -> None:
        st = follow(shuffled, conv, cap)
        assert st.data("server") == sent["server"] and st.data("client") == sent["client"]

    print(f"conversation: {total / 1e6:.1f} MB payload, {len(frames)} frames "
          f"({len(shuffled)} impaired), best of {args.repeat}")  # fmt: skip
    reference = best(concat, args.repeat)
    shapes: list[tuple[str, Callable[[], object]]] = [
        ("concat reference", concat),
        ("headers only", headers),
        ("follow, in order", in_order),
        ("follow, impaired", with_impairment),
    ]
    for name, fn in shapes:
        seconds = reference if fn is concat else best(fn, args.repeat)
        rate = total / seconds / 1e6
        print(f"  {name:<18} {rate:9.1f} MB/s  {reference / seconds:6.3f}x of concat")


if __name__ == "__main__":
    main()
