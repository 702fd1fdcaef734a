"""The browser console against a real `leireye run` capturing on `lo`, in headless Chromium.

Each test logs in as a user of one role, sends UDP datagrams to 127.0.0.1 and watches them in
the page. Screenshots go to test-artifacts/screenshots/ (not committed).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

from tests.browser.conftest import PASSWORDS, PortMaker
from tests.browser.console import Console, skip_reason
from tests.http import Http, Reply
from tests.sensor import Sensor, send_udp
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.root,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]


def login(console: Console, user: str) -> None:
    console.login(user, PASSWORDS[user])


@contextmanager
def steady_udp(port: int, rate: float = 200) -> Iterator[None]:
    """UDP to `port` at `rate` datagrams/s in the background until the block ends."""
    stop = threading.Event()

    def run() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.wait(1 / rate):  # pacing the sender, not waiting on anything
                s.sendto(b"steady", ("127.0.0.1", port))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def test_the_page_is_served_with_security_headers(sensor: Sensor) -> None:
    base = f"http://127.0.0.1:{sensor.web_port()}"
    with urllib.request.urlopen(base + "/", timeout=10) as response:
        page = response.read().decode()
        headers = response.headers
    assert '<script type="module" src="/static/app/main.js">' in page
    assert "<script>" not in page and " style=" not in page  # no inline script or style
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    with urllib.request.urlopen(base + "/static/app/main.js", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    with urllib.request.urlopen(base + "/static/vendor/uplot/LICENSE", timeout=10) as response:
        assert b"MIT" in response.read()


def test_a_wrong_password_is_refused_on_the_login_page(console: Console) -> None:
    console.open()
    console.visible("#login-form")
    console.screenshot("01-login")
    console.fill("#login-username", "ana")
    console.fill("#login-password", "not-the-password")
    console.click("#login-submit")
    console.wait(lambda d: console.text("#login-error") != "", "the login error")
    assert console.text("#login-error") == "Wrong username or password."
    assert not console.driver.find_element(By.ID, "console").is_displayed()


def test_an_analyst_watches_filters_and_inspects_packets(
    console: Console, udp_port: PortMaker
) -> None:
    wanted, other = udp_port(), udp_port()
    login(console, "ana")
    assert console.text("#user-role") == "ANALYST"
    assert console.driver.find_element(By.ID, "export").is_displayed()
    assert not console.driver.find_element(By.ID, "capture-card").is_displayed()

    # Live packets appear, coloured by protocol.
    send_udp(wanted, 5, payload=b"wanted")
    send_udp(other, 5, payload=b"other")
    rows = console.wait_rows_to(wanted, 5)
    console.wait_rows_to(other, 5)
    assert {r["src"] for r in rows} == {"127.0.0.1"}
    assert all(r["proto"] == "UDP" and "p-udp" in r["cls"] for r in rows)
    assert console.text("#capture-state") == "Capturing"
    assert console.text("#capture-iface") == "lo"
    console.screenshot("02-live")

    # A filter on the port: only matching rows, the recent ones backfilled at once.
    console.apply_filter(port=wanted)
    console.wait(
        lambda d: console.rows() and all(r["dport"] == str(wanted) for r in console.rows()),
        "only rows to the filtered port",
    )
    send_udp(other, 5)
    send_udp(wanted, 3, payload=b"wanted-later")
    console.wait_rows_to(wanted, 8)
    assert all(r["dport"] == str(wanted) for r in console.rows())
    assert f"port={wanted}" in console.text("#sb-filter")

    # A filter the server refuses: its message next to the field, the old filter kept.
    console.fill("#f-port", "70000")
    console.click("#filter-apply")
    error = console.visible('.field[data-field="port"] .field-error')
    assert "70000" in error.text and "port" in error.text
    assert console.driver.find_element(By.ID, "f-port").get_attribute("aria-invalid") == "true"
    console.screenshot("03-bad-filter")
    console.fill("#f-port", str(wanted))  # typing clears the error
    console.hidden('.field[data-field="port"] .field-error')
    console.click("#filter-apply")

    # Details: the layers as a tree and the bytes as a hex dump.
    target = console.wait_rows_to(wanted, 1)[0]
    console.click(f'#packet-viewport .row[data-id="{target["id"]}"]')
    layers = console.visible("#detail-layers")
    console.wait(lambda d: "UDP" in layers.text, "the UDP layer in the tree")
    names = [e.text for e in layers.find_elements(By.CSS_SELECTOR, ".layer-name")]
    assert names[:3] == ["Ethernet", "IPv4", "UDP"]
    hex_lines = console.driver.find_elements(By.CSS_SELECTOR, "#detail-hex .hex-line")
    assert len(hex_lines) >= 3
    assert "wanted" in console.text("#detail-hex")
    console.screenshot("04-detail")
    console.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    console.hidden("#detail")

    # The chart takes the live `stats` messages: packets/s rises while traffic flows.
    with steady_udp(wanted, rate=200):
        console.wait(
            lambda d: float(console.js("return document.querySelector('#chart-pps')"
                                       ".dataset.latest || 0")) > 50,
            "the packets/s chart to show the traffic",
        )  # fmt: skip
        console.wait(lambda d: console.text("#protocols").startswith("UDP"), "UDP in protocols")
        console.screenshot("05-charts")
    points = int(console.js("return document.querySelector('#chart-pps').dataset.points"))
    assert points >= 2


def test_an_analyst_exports_the_filtered_packets(console: Console, udp_port: PortMaker) -> None:
    port = udp_port()
    login(console, "ana")
    send_udp(port, 4, payload=b"export-me")
    console.apply_filter(port=port)
    console.wait_rows_to(port, 4)
    console.driver.find_element(By.CSS_SELECTOR, "#export-format option[value=json]").click()
    console.click("#export-button")
    console.wait(lambda d: "Downloading" in console.text("#filter-message"), "the download")
    saved = wait_for(lambda: list(console.downloads.glob("leireye-*.json")), 10, "the file")
    text = saved[0].read_text()
    assert text.count(f'"dst_port":{port}') == 4 or text.count(f'"dst_port": {port}') == 4


def test_a_viewer_sees_packets_but_not_their_details(console: Console, udp_port: PortMaker) -> None:
    port = udp_port()
    login(console, "vic")
    assert console.text("#user-role") == "VIEWER"
    assert not console.driver.find_element(By.ID, "export").is_displayed()
    assert not console.driver.find_element(By.ID, "capture-card").is_displayed()
    send_udp(port, 3)
    row = console.wait_rows_to(port, 3)[0]
    console.click(f'#packet-viewport .row[data-id="{row["id"]}"]')
    note = console.visible("#detail-forbidden")
    assert "ANALYST role" in note.text and "VIEWER" in note.text
    console.screenshot("06-viewer")


def test_pause_holds_the_table_and_resume_catches_up(console: Console, udp_port: PortMaker) -> None:
    port = udp_port()
    login(console, "vic")
    send_udp(port, 2)
    console.wait_rows_to(port, 2)
    console.driver.find_element(By.TAG_NAME, "body").send_keys(" ")  # Space pauses
    console.wait(lambda d: console.text("#pause").startswith("Resume"), "the pause")
    send_udp(port, 3)
    console.wait(lambda d: console.text("#pause") == "Resume · 3 new", "3 packets held back")
    assert len(console.rows_to(port)) == 2
    console.click("#pause")
    console.wait_rows_to(port, 5)


def test_token_renewal_keeps_the_same_websocket_alive(
    console: Console, udp_port: PortMaker
) -> None:
    # Access tokens last 10 s here; a WebSocket not re-authenticated by then is closed (4003).
    port = udp_port()
    login(console, "vic")
    console.wait(
        lambda d: int(console.js("return document.querySelector('#console').dataset.renewals"
                                 " || 0")) >= 2,
        "two token renewals (past the first token's expiry)",
        timeout=30,
    )  # fmt: skip
    assert console.text("#conn-text") == "Live"
    assert console.js("return document.querySelector('#conn').dataset.opens") == "1"
    send_udp(port, 2)
    console.wait_rows_to(port, 2)


def test_a_reconnect_resumes_without_a_hole(
    console: Console, sensor: Sensor, udp_port: PortMaker
) -> None:
    port = udp_port()
    login(console, "vic")
    console.apply_filter(port=port)
    send_udp(port, 3)
    console.wait_rows_to(port, 3)
    workers = {int(line.split("pid=")[1]) for line in sensor.lines
               if "supervisor: web-" in line and "started pid=" in line}  # fmt: skip
    os.kill(max(workers), signal.SIGKILL)
    console.wait(lambda d: console.text("#conn-text") != "Live", "the console to see the loss")
    console.screenshot("07-reconnecting")
    send_udp(port, 4)  # while the console is away
    console.wait(lambda d: console.text("#conn-text") == "Live", "the reconnect", timeout=30)
    assert console.js("return document.querySelector('#conn').dataset.opens") == "2"
    send_udp(port, 2)
    rows = console.wait_rows_to(port, 9)
    ids = sorted(int(r["id"]) for r in rows)
    assert len(ids) == len(set(ids)) == 9  # all of them, none twice


def test_an_admin_manages_users_and_the_server_decides(console: Console, sensor: Sensor) -> None:
    """Add a user, change their role and password, see a refusal from the server, remove them;
    the new user's password works (and its replacement ends the old one) at the login API."""
    login(console, "admin")
    console.click("#users-open")
    console.visible("#users-dialog")
    console.wait(lambda d: console.js("return document.querySelector('#users-dialog')"
                                      ".dataset.users") == "3", "the user list")  # fmt: skip
    assert "(you)" in console.text('.user-row[data-username="admin"]')

    console.fill("#users-add-name", "carol")
    Select(console.driver.find_element(By.ID, "users-add-role")).select_by_value("VIEWER")
    console.fill("#users-add-password", "carol-pass-1")
    console.click("#users-add-submit")
    carol = '.user-row[data-username="carol"]'
    console.visible(carol)
    assert re.search(r"id \d+", console.text(carol))
    assert api_login(sensor, "carol", "carol-pass-1").status == 200

    # A name that is taken: the server's message, nothing added.
    console.fill("#users-add-name", "carol")
    console.fill("#users-add-password", "carol-pass-x")
    console.click("#users-add-submit")
    console.wait(lambda d: "exists" in console.text("#users-error"), "the conflict message")
    assert len(console.driver.find_elements(By.CSS_SELECTOR, carol)) == 1

    Select(console.driver.find_element(By.CSS_SELECTOR, f"{carol} select")).select_by_value(
        "ANALYST"
    )
    carol = '.user-row[data-username="carol"][data-role="ANALYST"]'  # as the server lists it
    console.visible(carol)
    assert console.text("#users-error") == ""
    console.click(f'{carol} button[data-action="password"]')
    console.fill(f"{carol} input[type=password]", "carol-pass-2")
    console.click(f'{carol} button[data-action="save"]')
    console.visible(f'{carol} button[data-action="password"]')
    assert api_login(sensor, "carol", "carol-pass-1").status == 401
    assert api_login(sensor, "carol", "carol-pass-2").status == 200
    console.screenshot("11-users")

    # The last ADMIN cannot be demoted: refused, and the list shows the role the file kept.
    admin_role = '.user-row[data-username="admin"] select'
    Select(console.driver.find_element(By.CSS_SELECTOR, admin_role)).select_by_value("VIEWER")
    console.wait(lambda d: console.text("#users-error") != "", "the refusal")
    assert "ADMIN" in console.text("#users-error")
    console.wait(
        lambda d: console.js("return document.querySelector(arguments[0]).value", admin_role)
        == "ADMIN",
        "the role put back",
    )  # fmt: skip

    remove = f'{carol} button[data-action="remove"]'
    console.click(remove)
    assert console.text(remove) == "Remove carol?"
    console.click(remove)
    console.hidden(carol)
    assert api_login(sensor, "carol", "carol-pass-2").status == 401
    console.click("#users-close")
    console.hidden("#users-dialog")


def test_a_new_password_sends_an_open_console_back_to_the_login(
    console: Console, sensor: Sensor
) -> None:
    """Set from elsewhere (here the API, as another ADMIN would): the console's WebSocket is
    closed (4001), its refresh token refused, and the page asks to sign in again."""
    token = api_login(sensor, "admin", PASSWORDS["admin"]).json["access_token"]
    admin = Http(sensor.web_port(), token)
    created = admin.post("/api/users", {"username": "dora", "role": "VIEWER",
                                        "password": "dora-pass-1"})  # fmt: skip
    assert created.status == 201, created.body
    try:
        console.login("dora", "dora-pass-1")
        edit = admin.request("PATCH", f"/api/users/{created.json['id']}",
                             {"password": "dora-pass-2"})  # fmt: skip
        assert edit.status == 200, edit.body
        console.visible("#login-form", timeout=30)
        assert console.text("#login-error") == "Your session ended: sign in again."
    finally:
        assert admin.request("DELETE", f"/api/users/{created.json['id']}").status == 204


def api_login(sensor: Sensor, username: str, password: str) -> Reply:
    return Http(sensor.web_port()).post(
        "/api/auth/login", {"username": username, "password": password}
    )


def test_an_admin_stops_and_starts_the_capture_then_logs_out(console: Console) -> None:
    login(console, "admin")
    console.visible("#capture-card")
    console.wait(
        lambda d: "lo" in [o.get_attribute("value") for o in
                           d.find_elements(By.CSS_SELECTOR, "#capture-interface option")],
        "the interface list",
    )  # fmt: skip
    assert (
        console.driver.find_element(By.ID, "capture-filter")
        .get_attribute("value")
        .startswith("udp and dst portrange")
    )
    console.screenshot("08-admin")
    console.click("#capture-stop")
    console.wait(
        lambda d: console.text("#capture-state") == "Stopped", "the capture to stop", timeout=30
    )
    assert console.js("return document.querySelector('#capture-chip').dataset.state") in (
        "stopped",
        "idle",
    )
    console.screenshot("09-stopped")
    console.click("#capture-start")
    console.wait(
        lambda d: console.text("#capture-state") == "Capturing", "the capture to start", timeout=30
    )
    assert console.text("#capture-iface") == "lo"
    # The top bar shows the filter the kernel runs: the sensor's own web traffic left out.
    shown = console.js("return document.querySelector('#capture-bpf').textContent")
    web_port = console.base_url.rsplit(":", 1)[1]
    assert shown.startswith("(udp and dst portrange ") and f"dst port {web_port} and" in shown
    assert "Your filter: udp and dst portrange" in console.js(
        "return document.querySelector('#capture-bpf').title"
    )

    # A BPF libpcap refuses: the server's message under the controls, capture unchanged.
    console.fill("#capture-filter", "not a valid ((( filter")
    console.click("#capture-start")
    console.wait(lambda d: console.text("#capture-error") != "", "the BPF error", timeout=30)
    assert console.text("#capture-state") == "Capturing"

    console.click("#logout")
    console.visible("#login-form")
    assert console.text("#login-error") == "You are signed out."
    console.screenshot("10-signed-out")
