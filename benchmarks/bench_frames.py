"""Delivery of one ring read to a filter group, in-process: the formats and the send paths.

    .venv/bin/python benchmarks/bench_frames.py [--batch 4096] [--subs 10] [--repeat 5]

Per batch of `--batch` realistic records (`bench_encode.realistic`) and a group of `--subs`
batch subscribers, µs per packet (best of `--repeat`) on the server:

  per-session   what the worker did before: the batch frames made per session
                (`encode.batch_messages`) and each connection's text UTF-8 encoded and framed
                by wsproto (`FrameProtocol.send_data`): the reference
  shared        the frames made once per group (`frames.PacketRun`), their bytes framed once
                (`Frame.wire`) and written to each connection
  wsproto       the shared frames, but each connection's text framed by wsproto (what
                uvicorn's wsproto implementation does per `websocket.send`)
  websockets    the shared frames, but each connection's text framed by websockets'
                `Frame.serialize` (what uvicorn's websockets implementation does per send)
  columns       the binary format (`columns.column_batches`), framed once
  msgpack rows  msgpack with one map per packet (`PacketData` structs, msgspec), framed once

and on the client, per packet: JSON batches to `PacketData` (msgspec), msgpack rows to
`PacketData`, columns to `PacketData` (`client.columns.packets_of`) and to arrays
(`arrays_of`). The JSON text of the packets (`encode_packets`) is made once per read in every
JSON case and counted apart. Figures are ratios to the reference of the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_encode import realistic
from leireye.client.columns import arrays_of, decode_columns, packets_of
from leireye.web.columns import column_batches
from leireye.web.encode import batch_messages, encode_packets
from leireye.web.frames import Frame, PacketRun
from leireye.wire import PacketData, PacketsMessage

MAX_BYTES = 65536


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--subs", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from websockets.frames import Frame as WsFrame
    from websockets.frames import Opcode
    from wsproto.frame_protocol import FrameProtocol

    records = realistic(args.batch)
    n, subs = len(records), args.subs
    messages = encode_packets(records)
    sink: list[bytes] = []

    def per_session() -> None:
        for _ in range(subs):
            proto = FrameProtocol(client=False, extensions=[])
            for text, _count in batch_messages(messages, MAX_BYTES):
                sink.append(proto.send_data(text, fin=True))

    def shared() -> None:
        run = PacketRun(records["seq"], messages)
        frames = run.json_batches(MAX_BYTES)
        for _ in range(subs):
            sink.extend(f.wire() for f in frames)

    def wsproto_framing() -> None:
        frames = PacketRun(records["seq"], messages).json_batches(MAX_BYTES)
        for _ in range(subs):
            proto = FrameProtocol(client=False, extensions=[])
            for f in frames:
                sink.append(proto.send_data(f.payload, fin=True))

    def websockets_framing() -> None:
        frames = PacketRun(records["seq"], messages).json_batches(MAX_BYTES)
        for _ in range(subs):
            for f in frames:
                assert isinstance(f.payload, str)
                data = f.payload.encode()
                sink.append(WsFrame(Opcode.TEXT, data).serialize(mask=False, extensions=[]))

    def columns() -> None:
        frames = [Frame(b, c) for b, c in column_batches(records, MAX_BYTES)]
        for _ in range(subs):
            sink.extend(f.wire() for f in frames)

    rows_encoder = msgspec.msgpack.Encoder()
    json_decoder = msgspec.json.Decoder(PacketsMessage)

    def msgpack_rows() -> list[bytes]:
        # The server's own cost of a row format: one struct per packet from the columns.
        data = [json_decoder.decode(t).data for t, _ in batch_messages(messages, MAX_BYTES)]
        frames = [Frame(rows_encoder.encode(d), len(d)) for d in data]
        for _ in range(subs):
            sink.extend(f.wire() for f in frames)
        return [f.payload for f in frames if isinstance(f.payload, bytes)]

    encode_s = best(lambda: encode_packets(records), args.repeat)
    server = {
        "per-session (reference)": best(per_session, args.repeat),
        "shared": best(shared, args.repeat),
        "wsproto framing": best(wsproto_framing, args.repeat),
        "websockets framing": best(websockets_framing, args.repeat),
        "columns": best(columns, args.repeat),
    }
    rows_s = best(msgpack_rows, args.repeat)
    json_frames = [t for t, _ in batch_messages(messages, MAX_BYTES)]
    column_frames = [b for b, _ in column_batches(records, MAX_BYTES)]
    row_frames = msgpack_rows()
    row_decoder = msgspec.msgpack.Decoder(list[PacketData])
    client = {
        "JSON batches -> PacketData (reference)": best(
            lambda: [json_decoder.decode(t) for t in json_frames], args.repeat
        ),
        "msgpack rows -> PacketData": best(
            lambda: [row_decoder.decode(b) for b in row_frames], args.repeat
        ),
        "columns -> PacketData": best(
            lambda: [packets_of(decode_columns(b)) for b in column_frames], args.repeat
        ),
        "columns -> arrays": best(
            lambda: [arrays_of(decode_columns(b)) for b in column_frames], args.repeat
        ),
    }
    sizes = {
        "JSON": sum(len(t.encode()) for t in json_frames),
        "msgpack rows": sum(map(len, row_frames)),
        "columns": sum(map(len, column_frames)),
    }
    load = os.getloadavg()[0]
    print(f"# bench_frames: batch {n}, {subs} subscribers in one group, load {load:.2f}")
    per = encode_s / n * 1e6
    print(f"encode_packets (JSON text, once per read, not in the rows below): {per:.2f} µs/packet")
    ref = server["per-session (reference)"]
    print("server, per packet of the read, all subscribers:")
    for name, s in server.items():
        print(f"  {name:28s} {s / n * 1e6:7.2f} µs   x{ref / s:5.1f} faster than the reference")
    print(f"  {'msgpack rows (+ structs)':28s} {rows_s / n * 1e6:7.2f} µs   x{ref / rows_s:5.1f}")
    ref = client["JSON batches -> PacketData (reference)"]
    print("client, per packet:")
    for name, s in client.items():
        print(f"  {name:40s} {s / n * 1e6:7.2f} µs   x{ref / s:5.1f}")
    print("bytes per packet: " + ", ".join(f"{k} {v / n:.0f}" for k, v in sizes.items()))
    assert np.array_equal(arrays_of(decode_columns(column_frames[0]))["id"][:1], records["seq"][:1])


if __name__ == "__main__":
    main()
