"""The flow table agrees with tshark, conversation by conversation, and with Zeek's conn_state.

Each pcap is decoded with the sensor's decoder and fed to a `FlowTable` (no sensor); every TCP
and UDP conversation `tshark -z conv,tcp -z conv,udp` lists must be exactly one flow of ours
with the same frames and bytes each way, we must have no TCP/UDP flow tshark lacks, and each
flow's `conn_state` must be the one Zeek's rules give for that connection, written below per
connection. tshark's conversations have no VLAN: `vlan.pcap` carries the same conversations
over several VLAN ids, which are several flows of ours; there the flows of a conversation are
summed (and they must be one per VLAN id seen). The recorded test runs real servers and clients
between two network namespaces and records with tcpdump.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from leireye.flows.model import Flow
from tests.flowcheck import match, oriented, table_flows, tshark_conversations
from tests.netns import VethPair, skip_unless_root, veth_pair
from tests.waiting import scaled, wait_for

DATA = Path(__file__).resolve().parents[1] / "data"

# (transport, responder port) -> Zeek's conn_state of every such connection in the file.
EXPECTED: dict[str, dict[tuple[str, int], str]] = {
    "http.pcap": {("TCP", 80): "SF"},
    "dns.pcap": {("UDP", 53): "SF", ("TCP", 53): "SF"},
    "tls.pcap": {("TCP", 443): "SF"},
    "ssh-like.pcap": {("TCP", 22): "SF"},
    # the query to a closed port gets an ICMP error, no UDP answer: S0
    "icmp.pcap": {("UDP", 5300): "S0"},
    "lo-any.pcap": {("TCP", 80): "SF", ("UDP", 53): "SF"},
    "lo-any-sll.pcap": {("TCP", 80): "SF", ("UDP", 53): "SF"},
    "raw.pcap": {("TCP", 80): "SF", ("UDP", 53): "SF", ("TCP", 53): "SF", ("UDP", 5300): "S0"},
}


def check(path: Path, expected: dict[tuple[str, int], str], *, vlans: bool = False) -> list[Flow]:
    convs = tshark_conversations(path)
    assert convs, f"tshark lists no conversation in {path.name}"
    placed = match(table_flows(path), convs)
    for key, counts in convs.items():
        flows = placed[key]
        if vlans:
            assert len({f.vlan for f in flows}) == len(flows), (key, flows)
        else:
            assert len(flows) == 1, f"{path.name} {key}: {len(flows)} flows"
        summed = tuple(sum(c) for c in zip(*(oriented(f, key) for f in flows), strict=True))
        assert summed == counts, f"{path.name} {key}: ours {summed}, tshark {counts}"
        if not vlans:
            flow = flows[0]
            want = expected[(flow.transport, flow.resp_port or 0)]
            assert flow.conn_state == want, f"{path.name} {key}: {flow.history}"
    return [flow for flows in placed.values() for flow in flows]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tests_data_pcaps(name: str) -> None:
    check(DATA / name, EXPECTED[name])


def test_vlan_pcap_sums_per_conversation() -> None:
    check(DATA / "vlan.pcap", {}, vlans=True)


# -- recorded between namespaces ------------------------------------------------------------------

DNS_PORT, CLOSED_PORT, RESET_PORT = 53, 81, 82
RECORDED: dict[tuple[str, int], str] = {
    ("TCP", 80): "SF",  # HTTP keep-alive (two requests, one connection) and a long transfer
    ("TCP", 443): "SF",  # TLS (curl to openssl s_server)
    ("UDP", DNS_PORT): "SF",  # a query and its answer
    ("TCP", CLOSED_PORT): "REJ",  # SYN answered by RST
    ("TCP", RESET_PORT): "RSTR",  # established, then the server aborts (SO_LINGER 0)
}

_DNS_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    answer = b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04\\xc0\\x00\\x02\\x0a"
    s.sendto(q[:2] + b"\\x81\\x80" + q[4:6] + b"\\x00\\x01\\x00\\x00\\x00\\x00" + q[12:] + answer,
             peer)
"""

_RESET_SERVER = """
import socket, struct, sys
s = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.recv(100)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
"""


def _ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    assert "ready" in line, line


def _dns_query(server: str, name: str) -> None:
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    msg = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question + b"\0\x01\0\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(scaled(5))
        s.sendto(msg, (server, DNS_PORT))
        s.recvfrom(512)


def _clients(pair: VethPair, work: Path) -> None:
    ip = pair.ns_ip
    curl = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(scaled(30))]
    subprocess.run([*curl, f"http://{ip}/index.html", "-o", "/dev/null", f"http://{ip}/"],
                   check=True)  # fmt: skip
    subprocess.run([*curl, f"http://{ip}/big.bin"], check=True)
    subprocess.run([*curl, "-k", "--resolve", f"flows.test:443:{ip}", "https://flows.test/"],
                   check=True)  # fmt: skip
    _dns_query(ip, "flows.example.org")
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect((ip, CLOSED_PORT))
    with socket.create_connection((ip, RESET_PORT), timeout=scaled(5)) as s:
        s.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            while s.recv(100):
                pass


def _servers(pair: VethPair, work: Path) -> None:
    www = work / "www"
    www.mkdir()
    (www / "index.html").write_text("<html>flows</html>\n" * 20)
    (www / "big.bin").write_bytes(bytes(range(256)) * 16384)  # 4 MiB
    key, cert = work / "key.pem", work / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "1", "-subj", "/CN=flows.test"], check=True, capture_output=True)  # fmt: skip
    ip = pair.ns_ip
    pipe = {"stdout": subprocess.PIPE, "text": True}
    pair.popen([sys.executable, "-m", "http.server", "--protocol", "HTTP/1.1", "--bind", ip,
                "80"], cwd=www, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    pair.popen(["openssl", "s_server", "-quiet", "-accept", f"{ip}:443", "-cert", str(cert),
                "-key", str(key), "-www"], stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)  # fmt: skip
    _ready(pair.popen([sys.executable, "-c", _DNS_SERVER, ip, str(DNS_PORT)], **pipe))
    _ready(pair.popen([sys.executable, "-c", _RESET_SERVER, ip, str(RESET_PORT)], **pipe))
    for port in (80, 443):
        wait_for(lambda port=port: _listening(ip, port), 10.0, f"server on port {port}")


def _listening(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.root
@skip_unless_root
def test_recorded_between_namespaces(tmp_path: Path) -> None:
    pcap = tmp_path / "recorded.pcap"
    with veth_pair(ipv6=False) as pair:
        _servers(pair, tmp_path)
        dump = subprocess.Popen(
            ["tcpdump", "-i", pair.host_if, "-w", str(pcap), "-U", "--immediate-mode", "-n",
             "-s", "0", "-B", "65536", "tcp or udp"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        lines: list[str] = []
        assert dump.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(dump.stderr), daemon=True)
        reader.start()
        try:
            wait_for(lambda: any("listening" in line for line in lines), 10.0, "tcpdump")
            _clients(pair, tmp_path)
        finally:
            dump.terminate()
            dump.wait(scaled(10))
            reader.join(scaled(5))
            dump.stderr.close()
        assert any(line.startswith("0 packets dropped by kernel") for line in lines), lines
    flows = check(pcap, RECORDED)
    ports = sorted(f.resp_port or 0 for f in flows)
    assert ports == [53, 80, 80, 81, 82, 443], ports
    web = [f for f in flows if f.resp_port == 80]
    assert {(f.http_method, f.http_path, f.http_host) for f in web} == {
        ("GET", "/index.html", pair.ns_ip),
        ("GET", "/big.bin", pair.ns_ip),
    }
    assert max(f.resp_bytes for f in web) > 4 << 20  # the long transfer
    (tls,) = (f for f in flows if f.resp_port == 443)
    assert (tls.app, tls.tls_sni, tls.tls_alpn) == ("TLS", "flows.test", None)
    # curl's ClientHello puts ALPN past the 256 bytes the ring keeps by default; with more kept
    # (ring.raw_bytes), it is read
    (tls,) = (f for f in table_flows(pcap, raw_bytes=2048) if f.resp_port == 443)
    assert tls.tls_alpn is not None and "http/1.1" in tls.tls_alpn.split(","), tls
    (dns,) = (f for f in flows if f.transport == "UDP")
    assert (dns.dns_query, dns.dns_rcode, dns.history) == ("flows.example.org", "NOERROR", "Dd")
    (refused,) = (f for f in flows if f.resp_port == CLOSED_PORT)
    assert refused.history == "Sr"
