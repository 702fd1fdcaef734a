"""`web.tls: auto` on a real sensor: https and wss with a self-signed certificate, trusted by its
pinned fingerprint or as its own CA; plain HTTP and a wrong pin are refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import msgspec
import pytest

from leireye.client import CertificateMismatch, ConnectionFailed, LeirEyeClient, PacketData
from leireye.text import fingerprint
from tests.clientenv import PASSWORD, Live
from tests.integration.test_js_client import Node, needs_node
from tests.sensor import send_udp
from tests.waiting import scaled, wait_for

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    env = Live(tmp_path_factory.mktemp("tls"), tls="auto")
    yield env
    env.sensor.kill()


def cli(live: Live, *args: str) -> str:
    cmd = [sys.executable, "-m", "leireye.cli", *args, "-c", str(live.sensor.config_path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout


def pin(live: Live) -> str:
    return cli(live, "tls-fingerprint").strip()


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, scaled(60)))  # type: ignore[arg-type]


async def first(stream: object) -> PacketData:
    async for packet in stream:  # type: ignore[attr-defined]
        return packet  # type: ignore[no-any-return]
    raise AssertionError("the stream ended")


def test_the_fingerprint_is_the_served_certificate_and_shown_once_at_first_run(
    live: Live,
) -> None:
    assert live.cafile is not None
    served = ssl.get_server_certificate(("127.0.0.1", live.web))
    printed = pin(live)
    assert printed == fingerprint(ssl.PEM_cert_to_DER_cert(served))
    assert sum(printed in line for line in live.sensor.lines) == 1  # the console, not the log
    assert printed in cli(live, "check-config")
    assert (live.cafile.parent / "tls-key.pem").stat().st_mode & 0o777 == 0o600


def test_a_pinned_client_logs_in_over_https_and_streams_over_wss(live: Live) -> None:
    async def go() -> None:
        options = {"username": "watcher", "password": PASSWORD, "fingerprint": pin(live)}
        async with LeirEyeClient(live.url, **options) as c:  # type: ignore[arg-type]
            assert c.user is not None and c.user.username == "watcher"
            head = await asyncio.to_thread(live.ring_head)
            receiving = asyncio.create_task(first(c.packets(port=live.port, since=head)))
            await asyncio.to_thread(send_udp, live.port, 1, b"over tls")
            packet = await asyncio.wait_for(receiving, scaled(10))
        assert (packet.dst_ip, packet.dst_port, packet.protocol) == ("127.0.0.1", live.port, "UDP")
        assert not live.sensor.late_imports()  # serving TLS imported nothing after the drop

    with live.sensor.explained():
        run(go())


def test_the_certificate_file_as_ca_verifies_the_sensor(live: Live) -> None:
    async def go() -> None:
        async with LeirEyeClient(live.url, token=live.token(), cafile=str(live.cafile)) as c:
            assert c.user is not None

    run(go())
    assert live.ring_head() >= -1  # urllib with the certificate as the only CA


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_with_the_certificate_as_cacert_verifies_the_sensor(live: Live) -> None:
    for host in ("127.0.0.1", "localhost"):
        url = f"https://{host}:{live.web}/health"
        cmd = ["curl", "-sS", "--fail", "--cacert", str(live.cafile), url]
        answer = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0, answer.stderr
        assert '"status"' in answer.stdout


def test_a_wrong_pin_is_refused_for_the_websocket_and_the_login(live: Live) -> None:
    wrong = ":".join(["00"] * 32)

    async def websocket() -> None:
        with pytest.raises(CertificateMismatch, match="not the pinned"):
            async with LeirEyeClient(live.url, token=live.token(), fingerprint=wrong):
                pass

    async def login() -> None:
        options = {"username": "watcher", "password": PASSWORD, "fingerprint": wrong}
        with pytest.raises(CertificateMismatch, match="not the pinned"):
            async with LeirEyeClient(live.url, **options):  # type: ignore[arg-type]
                pass

    run(websocket())
    run(login())


def test_no_ca_and_no_pin_refuses_the_self_signed_certificate(live: Live) -> None:
    async def go() -> None:
        with pytest.raises(ConnectionFailed, match="CERTIFICATE_VERIFY_FAILED"):
            async with LeirEyeClient(live.url, token=live.token(), reconnect=False):
                pass

    run(go())


def test_plain_ws_and_http_to_the_tls_port_fail(live: Live) -> None:
    async def go() -> None:
        plain = live.url.replace("wss://", "ws://")
        with pytest.raises(ConnectionFailed):
            async with LeirEyeClient(plain, token=live.token(), open_timeout=scaled(5)):
                pass

    run(go())
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{live.web}/health", timeout=scaled(5))


def watch(live: Live, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "leireye.cli", "watch", "--url", live.url, *args]
    env = {**os.environ, "LEIREYE_TOKEN": live.token()}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=scaled(30))


def test_leireye_watch_over_wss_with_a_pin_or_the_ca_file(live: Live) -> None:
    head = live.ring_head()
    send_udp(live.port, 1, b"watch over tls")
    wait_for(lambda: live.ring_head() > head, 10, "the packet in the ring")
    since = ["--since", str(head), "--count", "1", "--json", "--port", str(live.port)]
    for trust in (["--fingerprint", pin(live)], ["--cafile", str(live.cafile)]):
        out = watch(live, *trust, *since)
        assert out.returncode == 0, f"{out.stderr}\n{live.sensor.notable()}"
        assert msgspec.json.decode(out.stdout, type=PacketData).id == head + 1


def test_leireye_watch_with_a_wrong_pin_exits_with_one_line(live: Live) -> None:
    out = watch(live, "--fingerprint", "AA" * 32, "--count", "1")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "not the pinned" in out.stderr, out.stderr
    bad = watch(live, "--fingerprint", "AA", "--count", "1")
    assert bad.returncode == 2 and "--fingerprint" in bad.stderr, bad.stderr


@needs_node
def test_node_streams_over_wss_trusting_the_certificate_by_node_extra_ca_certs(
    live: Live,
) -> None:
    node = Node(live, 2, env={"NODE_EXTRA_CA_CERTS": str(live.cafile)})
    wait_for(lambda: "ready" in node.lines or node.proc.poll() is not None, 20, "node")
    send_udp(live.port, 2, b"node over wss")
    assert node.finish() == 0, node.lines
    assert [p["dst_port"] for p in node.packets()] == [live.port] * 2


@needs_node
def test_node_refuses_the_self_signed_certificate_without_it(live: Live) -> None:
    node = Node(live, 1)
    # connect() rejects (stream.mjs swallows it) and the script ends without subscribing.
    assert node.finish() != 0
    assert "ready" not in node.lines and not node.packets(), node.lines
