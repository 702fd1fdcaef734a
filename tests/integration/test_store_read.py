"""Reading the packet store through the API of a real sensor on a veth pair, with a ring far
smaller than the traffic (1024 records, 256 bytes each): once the ring has moved on, packet
detail of an old id comes whole from the store, an export of a time range is exactly the frames
sent (hash for hash), and Follow Stream of a TCP conversation of full-size segments reassembles
whole (no gaps) from the store."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dpkt
import pytest

from leireye.store.reader import PacketStore
from tests.accounts import users_yaml
from tests.http import Http
from tests.integration.test_store import wait_written
from tests.netns import VethPair, inject_frames, skip_unless_root, udp_frame, veth_pair
from tests.sensor import Sensor
from tests.waiting import wait_for
from tests.wsclient import client, recv, recv_type, run, send

pytestmark = [pytest.mark.root, skip_unless_root]
UDP_PORT, TCP_PORT = 9998, 9997
USERS = users_yaml({"ana": ("ANALYST", "analyst-pass-3")})


@pytest.fixture
def pair() -> Iterator[VethPair]:
    with veth_pair(ipv6=False) as p:
        yield p


def seconds(ts_ns: int) -> str:
    return f"{ts_ns // 10**9}.{ts_ns % 10**9:09d}"


def digests(frames: Iterator[bytes] | list[bytes]) -> list[str]:
    return [hashlib.sha256(f).hexdigest() for f in frames]


def tcp_exchange(pair: VethPair, rng: random.Random) -> tuple[int, bytes, bytes]:
    """A TCP conversation from the host end to a server in the namespace: the client's port,
    the bytes the client sent and the bytes the server sent (both full-size segments)."""
    to_server, to_client = rng.randbytes(150_000), rng.randbytes(250_000)
    listener = pair.open_socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((pair.ns_ip, TCP_PORT))
    listener.listen(1)
    got_by_server = bytearray()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(to_client)
            conn.shutdown(socket.SHUT_WR)
            while chunk := conn.recv(65536):
                got_by_server.extend(chunk)

    server = threading.Thread(target=serve)
    server.start()
    with socket.create_connection((pair.ns_ip, TCP_PORT), timeout=30) as client:
        port = client.getsockname()[1]
        client.sendall(to_server)
        client.shutdown(socket.SHUT_WR)
        got_by_client = bytearray()
        while chunk := client.recv(65536):
            got_by_client.extend(chunk)
    server.join(30)
    listener.close()
    assert bytes(got_by_client) == to_client and bytes(got_by_server) == to_server
    return port, to_server, to_client


def test_detail_export_and_follow_stream_read_whole_frames_from_the_store(
    pair: VethPair, tmp_path: Path
) -> None:
    sensor = Sensor(
        tmp_path, "--interface", pair.host_if,
        "--bpf", f"(udp and dst port {UDP_PORT}) or (tcp and port {TCP_PORT})",
        config="capture: {snaplen: 65535}\nring: {capacity: 1024, raw_bytes: 256}\n"
        "store: {max_gb: 1, file_mb: 4}\n", users=USERS,
    )  # fmt: skip
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        rng = random.Random(15)
        began = time.time_ns() - 10**9
        client_port, to_server, to_client = tcp_exchange(pair, rng)
        ended = time.time_ns() + 10**9
        frames = [
            udp_frame(pair, 30000 + i % 7, UDP_PORT,
                      i.to_bytes(4, "big") + rng.randbytes(rng.choice([10, 300, 1000, 1400])))
            for i in range(3000)
        ]  # fmt: skip
        inject_frames(pair.ns_if, frames, ns=pair.ns, interval=0.0002)
        wait_for(lambda: status.read().packets_captured + status.read().kernel_drops
                 >= len(frames), 60, "the capture to see every frame")  # fmt: skip
        assert status.read().kernel_drops == 0
        written = wait_written(sensor, status.read().packets_captured)
        assert written.frames_lost == 0

        store = PacketStore(sensor.state_dir / "store")
        wanted = set(digests(frames))
        udp = [f for f in store.between(0, 2**63 - 1) if digests([f.data])[0] in wanted]
        assert digests(f.data for f in udp) == digests(frames)

        http = Http(sensor.web_port())
        login = http.post("/api/auth/login", {"username": "ana", "password": "analyst-pass-3"})
        assert login.status == 200, login.body
        api = http.with_token(login.json["access_token"])

        # Detail of an id the ring has long overwritten, and of a frame the ring would cut.
        old = next(f for f in udp[:50] if len(f.data) > 256)
        body = api.get(f"/api/capture/packets/{old.id}").json
        assert body["source"] == "store" and body["raw_hex"] == old.data.hex()
        assert body["truncated"] is False and body["summary"]["dst_port"] == UDP_PORT

        # An export of the time range of the UDP frames: every one, whole, in order.
        reply = api.get(
            f"/api/export/packets?format=pcap&protocol=udp&port={UDP_PORT}"
            f"&from={seconds(udp[0].ts_ns)}&to={seconds(udp[-1].ts_ns)}"
        )
        assert reply.status == 200 and reply.headers["x-leireye-past-retention"] == "false"
        exported = [bytes(buf) for _, buf in dpkt.pcap.Reader(io.BytesIO(reply.body))]
        assert digests(exported) == digests(frames)

        # Follow Stream of the TCP conversation, long gone from the ring: whole, no gaps.
        ends = f"a={pair.host_ip}:{client_port}&b={pair.ns_ip}:{TCP_PORT}"
        window = f"from={seconds(began)}&to={seconds(ended)}"
        stream = api.get(f"/api/stream?transport=tcp&{ends}&{window}").json
        assert stream["source"] == "store" and stream["gap_bytes"] == 0, stream
        assert stream["client_bytes"] == len(to_server)
        assert stream["server_bytes"] == len(to_client)
        for direction, sent in (("client", to_server), ("server", to_client)):
            raw = api.get(f"/api/stream?transport=tcp&{ends}&{window}&format=raw"
                          f"&direction={direction}")  # fmt: skip
            assert raw.status == 200 and raw.headers["x-stream-gap-bytes"] == "0"
            assert hashlib.sha256(raw.body).digest() == hashlib.sha256(sent).digest()
    finally:
        sensor.kill()


async def _resume(url: str, since: int, from_store: bool, live: list[bytes], ns: str, ifname: str,
                  want: int) -> list[dict[str, Any]]:  # fmt: skip
    """Subscribe with `since`, send `live` frames while the replay runs; every message until
    `want` packets came."""
    got: list[dict[str, Any]] = []
    async with client(url) as ws:
        options = {"from_store": True} if from_store else {}
        await send(ws, type="subscribe", channel="packets", since=since, options=options,
                   filters={"port": UDP_PORT})  # fmt: skip
        await recv_type(ws, "subscribed")
        sending = asyncio.create_task(
            asyncio.to_thread(inject_frames, ifname, live, ns=ns, interval=0.0005)
        )
        count = 0
        while count < want:
            message = await recv(ws, 30)
            if message["type"] in ("packet", "dropped"):
                got.append(message)
                count += message["type"] == "packet"
        await sending
    return got


def test_a_websocket_resume_past_the_ring_comes_from_the_store_then_live(
    pair: VethPair, tmp_path: Path
) -> None:
    sensor = Sensor(
        tmp_path, "--interface", pair.host_if, "--bpf", f"udp and dst port {UDP_PORT}",
        config="ring: {capacity: 1024}\nstore: {max_gb: 1, file_mb: 4}\n", users=USERS,
    )  # fmt: skip
    try:
        status = sensor.status()
        sensor.wait_capturing(status)
        rng = random.Random(16)

        def frames(n: int, base: int) -> list[bytes]:
            return [udp_frame(pair, 30000, UDP_PORT, (base + i).to_bytes(4, "big")
                              + rng.randbytes(rng.choice([10, 300, 1400])))
                    for i in range(n)]  # fmt: skip

        old = frames(3000, 0)
        inject_frames(pair.ns_if, old, ns=pair.ns, interval=0.0002)
        wait_for(lambda: status.read().packets_captured >= len(old), 60, "the capture")
        wait_written(sensor, len(old))
        http = Http(sensor.web_port())
        login = http.post("/api/auth/login", {"username": "ana", "password": "analyst-pass-3"})
        url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={login.json['access_token']}"

        live = frames(300, 3000)
        got = run(_resume(url, 0, True, live, pair.ns, pair.ns_if, len(old) + len(live)))
        assert [m for m in got if m["type"] != "packet"] == []  # nothing dropped
        ids = [m["data"]["id"] for m in got]
        wait_written(sensor, len(old) + len(live))
        stored = [f.id for f in PacketStore(sensor.state_dir / "store").between(0, 2**63 - 1)]
        assert ids == stored  # every packet once, in order, the old ones and the live ones
        assert status.read().kernel_drops == 0

        # Without from_store: what the ring no longer holds is reported, as documented.
        more = frames(100, 3300)
        plain = run(_resume(url, 0, False, more, pair.ns, pair.ns_if, 1024 + len(more)))
        first = plain[0]
        assert (first["type"], first["reason"]) == ("dropped", "resume") and first["count"] > 0
        plain_ids = [m["data"]["id"] for m in plain[1:]]
        assert plain_ids == sorted(set(plain_ids)) and plain_ids[0] > ids[0]
    finally:
        sensor.kill()
