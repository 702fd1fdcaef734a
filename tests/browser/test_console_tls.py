"""The console over https and wss (`web.tls: auto`): Chromium trusts exactly the sensor's
self-signed certificate (`--ignore-certificate-errors-spki-list` with its public key's hash, no
blanket `--ignore-certificate-errors`), logs in and sees live packets."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.browser.conftest import PASSWORDS, PORTS, console_page, users_file
from tests.browser.console import Console, skip_reason
from tests.sensor import Sensor, send_udp

pytestmark = [
    pytest.mark.browser,
    pytest.mark.root,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]


@pytest.fixture(scope="module")
def tls_sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    tmp = tmp_path_factory.mktemp("browser-tls")
    bpf = f"udp and dst portrange {PORTS[0]}-{PORTS[1]}"
    config = "web: {port: 0, workers: 1, tls: auto}\n"
    s = Sensor(tmp, "--interface", "lo", "--bpf", bpf, config=config, users=users_file())
    s.web_port()
    s.wait_capturing(s.status())
    yield s
    s.kill()


def spki_hash(sensor: Sensor) -> str:
    """What Chromium's --ignore-certificate-errors-spki-list takes: base64 SHA-256 of the
    certificate's SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate((sensor.state_dir / "tls-cert.pem").read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def tls_console(tls_sensor: Sensor, request: pytest.FixtureRequest) -> Iterator[Console]:
    base = f"https://127.0.0.1:{tls_sensor.web_port()}"
    flag = f"--ignore-certificate-errors-spki-list={spki_hash(tls_sensor)}"
    with console_page(base, request, flag) as page:
        yield page


def test_an_analyst_logs_in_over_https_and_sees_packets_over_wss(tls_console: Console) -> None:
    port = PORTS[1] - 1
    tls_console.login("ana", PASSWORDS["ana"])
    assert tls_console.js("return location.protocol") == "https:"
    send_udp(port, 3, payload=b"over-wss")
    # The rows come over the WebSocket, and an https page may open only a wss:// one (a ws://
    # one is blocked as mixed content).
    rows = tls_console.wait_rows_to(port, 3)
    assert all(r["proto"] == "UDP" for r in rows)
    tls_console.screenshot("tls-01-live")
