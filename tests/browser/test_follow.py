"""The Follow Stream dialog in headless Chromium, against a real `leireye run` capturing one TCP
port on `lo`: a conversation of our own client and server, followed from the packet detail."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.browser.conftest import PASSWORDS, console_page, users_file
from tests.browser.console import Console, skip_reason
from tests.sensor import Sensor
from tests.waiting import scaled, wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.root,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]

REQUEST = b"GET /follow-me HTTP/1.1\r\nHost: sensor.test\r\nUser-Agent: leireye-test\r\n\r\n"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 900\r\n\r\n"
BODY = (b"the quick brown fox jumps over the lazy dog\n" * 21)[:900]


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory, listener: socket.socket) -> Iterator[Sensor]:
    port = listener.getsockname()[1]
    config = "web: {port: 0, workers: 1}\n"
    s = Sensor(tmp_path_factory.mktemp("follow"), "--interface", "lo", "--bpf",
               f"tcp port {port}", config=config, users=users_file())  # fmt: skip
    s.web_port()
    s.wait_capturing(s.status())
    yield s
    s.kill()


@pytest.fixture
def console(sensor: Sensor, request: pytest.FixtureRequest) -> Iterator[Console]:
    with console_page(f"http://127.0.0.1:{sensor.web_port()}", request) as page:
        yield page


def converse(listener: socket.socket) -> None:
    """One request and its response (the body in a frame longer than the ring keeps)."""

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            got = b""
            while b"\r\n\r\n" not in got:
                got += conn.recv(4096)
            conn.sendall(HEAD)
            conn.sendall(BODY)
            conn.recv(1)

    thread = threading.Thread(target=serve)
    thread.start()
    with socket.create_connection(listener.getsockname(), timeout=scaled(10)) as client:
        client.sendall(REQUEST)
        got = b""
        while len(got) < len(HEAD) + len(BODY):
            got += client.recv(65536)
    thread.join(scaled(10))


def test_follow_tcp_stream_from_the_packet_detail(
    console: Console, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    console.login("ana", PASSWORDS["ana"])
    console.apply_filter(port=port)
    converse(listener)
    row = console.wait_rows_to(port, 2)[0]
    console.click(f'#packet-viewport .row[data-id="{row["id"]}"]')
    console.visible("#detail-follow").click()
    body = console.visible("#follow-body")
    console.wait(lambda d: "GET /follow-me" in body.text, "the request in the stream")
    client = [e.text for e in body.find_elements(By.CSS_SELECTOR, ".seg-client")]
    server = "".join(e.text for e in body.find_elements(By.CSS_SELECTOR, ".seg-server"))
    assert client == [REQUEST.decode().replace("\r\n", "\n").rstrip("\n")]
    assert server.startswith("HTTP/1.1 200 OK") and "the quick brown fox" in server
    # the ring keeps 256 bytes a frame: the body's frame is cut, and says so
    gaps = body.find_elements(By.CSS_SELECTOR, ".seg-gap")
    assert gaps and "bytes missing" in gaps[0].text
    assert "cut at 256 bytes" in console.text("#follow-incomplete")
    colours = {
        console.js("return getComputedStyle(arguments[0]).color", e)
        for e in body.find_elements(By.CSS_SELECTOR, ".seg-client, .seg-server")
    }
    assert len(colours) == 2
    console.screenshot("follow-01-ascii")

    console.click('#follow-dialog [data-view="hex"]')
    console.wait(lambda d: body.text.startswith("00000000  47 45 54 20"), "the hex dump")
    console.screenshot("follow-02-hex")
    console.click('#follow-dialog [data-view="raw"]')
    console.wait(lambda d: body.text.startswith(REQUEST[:8].hex()), "the raw hex")

    Select(console.driver.find_element(By.ID, "follow-direction")).select_by_value("server")
    console.wait(lambda d: "GET" not in body.text and "474554" not in body.text, "server only")
    console.click("#follow-download")
    saved = wait_for(lambda: _finished(console.downloads), 10, "the download")
    data = saved.read_bytes()
    assert data.startswith(HEAD) and BODY.startswith(data[len(HEAD) :]) and len(data) > len(HEAD)


def _finished(downloads: Path) -> Path | None:
    done = [p for p in downloads.glob("stream-*.bin")]
    return done[0] if done else None
