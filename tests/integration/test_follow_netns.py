"""Follow Stream against the truth: real TCP over a veth pair with netem loss, reordering,
duplication and delay, recorded by `tcpdump -w` inside the namespace; reassembling the pcap
(`leireye.store.follow`) gives back exactly the bytes each side sent.

The kernel here has no netem: `tests/impair.py` does the same in user space (5 % loss, 25 %
sent at once and the rest 10 ms later, 2 % duplicated), on a path between the client's namespace
and the server's. tcpdump runs on the server's end: the client's frames arrive there after the
loss and reordering (the lost ones never appear, their retransmissions do, out of order among the
rest, the duplicates twice); the server's frames are recorded as sent, retransmissions included.
Our own client and server record what they sent, and check they received it.
"""

from __future__ import annotations

import random
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import dpkt
import pytest

from leireye.store.follow import Conversation, Stream, follow
from leireye.store.payload import transport_payload
from tests.impair import impaired_path
from tests.netns import skip_unless_root
from tests.waiting import scaled, wait_for

pytestmark = [
    pytest.mark.root,
    skip_unless_root,
    pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump"),
]

Exchange = Callable[[socket.socket, socket.socket, random.Random], tuple[bytes, bytes]]


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, "the peer closed early"
        got += chunk
    return bytes(got)


def _read_to_eof(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(65536):
        into += chunk


def http_like(
    client: socket.socket, server: socket.socket, rng: random.Random
) -> tuple[bytes, bytes]:
    """Keep-alive requests and responses of random sizes; returns (client sent, server sent)."""
    pads = [b"p" * rng.randint(0, 3000) for _ in range(25)]
    requests = [b"GET /item/%d HTTP/1.1\r\nHost: test\r\nX-Pad: %s\r\n\r\n" % (i, pad)
                for i, pad in enumerate(pads)]  # fmt: skip
    bodies = [rng.randbytes(rng.randint(0, 40000)).hex().encode()[: rng.randint(0, 60000)]
              for _ in requests]  # fmt: skip
    responses = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b) for b in bodies]

    def serve() -> None:
        buf = b""
        for response in responses:
            while b"\r\n\r\n" not in buf:
                chunk = server.recv(65536)
                assert chunk
                buf += chunk
            buf = buf.split(b"\r\n\r\n", 1)[1]
            server.sendall(response)
        assert server.recv(1) == b""
        server.close()

    thread = threading.Thread(target=serve)
    thread.start()
    for request, response in zip(requests, responses, strict=True):
        client.sendall(request)
        assert _read_exactly(client, len(response)) == response
    client.shutdown(socket.SHUT_WR)
    thread.join(scaled(60))
    client.close()
    return b"".join(requests), b"".join(responses)


def binary(client: socket.socket, server: socket.socket, rng: random.Random) -> tuple[bytes, bytes]:
    """Both sides send random bytes at once, in random-size writes, then half-close."""
    sent = {"client": rng.randbytes(400_000), "server": rng.randbytes(300_000)}
    received = {"client": bytearray(), "server": bytearray()}
    socks = {"client": client, "server": server}

    def side(name: str) -> None:
        sock = socks[name]
        reader = threading.Thread(target=_read_to_eof, args=(sock, received[name]))
        reader.start()
        data, at, local = sent[name], 0, random.Random(name)
        while at < len(data):
            size = local.randint(1, 20000)
            sock.sendall(data[at : at + size])
            at += size
        sock.shutdown(socket.SHUT_WR)
        reader.join(scaled(60))
        sock.close()

    threads = [threading.Thread(target=side, args=(name,)) for name in socks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(90))
    assert received["server"] == sent["client"] and received["client"] == sent["server"]
    return sent["client"], sent["server"]


def _read_pcap(path: Path) -> list[tuple[int, int, bytes]]:
    frames = []
    try:
        with path.open("rb") as f:
            reader = dpkt.pcap.Reader(f)
            for ts, buf in reader:
                frames.append((int(ts * 1e9), reader.datalink(), bytes(buf)))
    except (dpkt.NeedData, dpkt.UnpackError, ValueError):
        pass  # the last record is being written: what came before is whole
    return frames


def _out_of_order(frames: list[tuple[int, int, bytes]]) -> int:
    """Data frames whose sequence number is below one already seen in the same direction."""
    high: dict[tuple[str, int], int] = {}
    count = 0
    for _, linktype, buf in frames:
        p = transport_payload(buf, linktype)
        if p is None or not p.data:
            continue
        key = (p.src, p.sport)
        if key in high and (p.seq - high[key]) % 2**32 > 2**31:
            count += 1
        else:
            high[key] = p.seq
    return count


@pytest.mark.parametrize(
    ("exchange", "family"),
    [(http_like, socket.AF_INET), (binary, socket.AF_INET6)],
    ids=["http-ipv4", "binary-ipv6"],
)
def test_reassembly_of_a_lossy_reordered_capture_gives_what_each_side_sent(
    tmp_path: Path, exchange: Exchange, family: int
) -> None:
    pcap, log = tmp_path / "cap.pcap", tmp_path / "tcpdump.log"
    with impaired_path(loss=0.05, reorder=0.25, duplicate=0.02, delay=0.010) as path, \
            log.open("w") as log_f:  # fmt: skip
        client_pair, server_pair = path.a, path.b
        v4 = family == socket.AF_INET
        server_ip = server_pair.ns_ip if v4 else server_pair.ns_ip6
        listener = server_pair.open_socket(family, socket.SOCK_STREAM)
        listener.bind((server_ip, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        tcpdump = server_pair.popen(
            ["tcpdump", "-Z", "root", "-n", "-U", "--immediate-mode", "-B", "32768", "-s", "0",
             "-i", server_pair.ns_if, "-w", str(pcap), "tcp", "port", str(port)],
            stdout=log_f, stderr=log_f,
        )  # fmt: skip
        wait_for(lambda: "listening on" in log.read_text(), 10, "tcpdump to start")
        client = client_pair.open_socket(family, socket.SOCK_STREAM)
        client.settimeout(scaled(60))
        client.connect((server_ip, port))
        server, _ = listener.accept()
        server.settimeout(scaled(60))
        listener.close()
        client_end = client.getsockname()[:2]
        client_sent, server_sent = exchange(client, server, random.Random(15))

        def reassembled() -> Stream | None:
            st = follow(_read_pcap(pcap), Conversation("TCP", client_end, (server_ip, port)))
            complete = st.data("client") == client_sent and st.data("server") == server_sent
            return st if complete and len(st.ended) == 2 else None

        stream = wait_for(reassembled, 30, "the pcap to reassemble to what was sent")
        tcpdump.terminate()
        tcpdump.wait(scaled(10))
        counts = dict(path.counts)
    assert stream.client == client_end and stream.gap_bytes() == 0 and not stream.truncated
    assert stream.ended == {"client": "fin", "server": "fin"}
    # the conditions were as asked: frames lost and duplicated on the way, the capture shows
    # retransmitted and duplicated bytes and segments out of order
    assert counts["lost"] > 0 and counts["dup"] > 0, counts
    assert stream.retransmitted > 0, "no retransmission or duplicate in the capture"
    assert _out_of_order(_read_pcap(pcap)) > 0, "no reordering in the capture"
    assert "0 packets dropped by kernel" in log.read_text()
