"""The reference for `bench_e2e.py`: "what many tools do" — tshark's JSON lines, one WebSocket
message each, broadcast to every connected client.

    tshark -T ek -l -i IF | .venv/bin/python benchmarks/reference_broadcaster.py [--port 0]

Prints `listening on PORT` on stdout once it accepts connections, then sends each stdin line
(except the Elasticsearch `{"index": ...}` lines) to all clients with `websockets.broadcast`,
which never waits for a slow client (its write buffer grows instead). No auth, no filters, no
batching. Exits at the end of stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve

INDEX_LINE = b'{"index"'


async def hold(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def pump(reader: asyncio.StreamReader, server: Server) -> int:
    sent = 0
    while line := await reader.readline():
        if not line.startswith(INDEX_LINE):
            broadcast(server.connections, line.rstrip(b"\n"), text=True)
            sent += 1
    return sent


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with serve(hold, "127.0.0.1", port, compression=None, max_size=None) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on {bound}", flush=True)
        sent = await pump(reader, server)
    print(f"broadcast {sent} lines", file=sys.stderr, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args().port))
