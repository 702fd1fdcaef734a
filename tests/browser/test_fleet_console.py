"""The console at a fleet central (docs/browser.md, "At a fleet central"): the sensor selector,
the Sensor column, the sensors panel with a silent sensor marked, a sensor's own rates; and on a
lone sensor none of it shows.

The central is a real `leireye run` with `central.enabled: true` whose sensor table
(`<state_dir>/central/sensors.json`) the test writes and keeps fresh, as the central's ingest
would: `edge-a` (index 0: the packets this sensor captures on `lo` carry sensor 0) live,
`edge-b` silent with 7 ids lost, `edge-c` never heard from.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from leireye.fleet.model import SENSOR_TABLE_FILE, SensorState, SensorTable, write_sensor_table
from tests.browser.conftest import PASSWORDS, PortMaker, console_page, users_file
from tests.browser.console import Console, skip_reason
from tests.sensor import Sensor, send_udp

pytestmark = [
    pytest.mark.browser,
    pytest.mark.root,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]

FLEET_GROUPS = {
    "filter bar": "#filter-bar .field, #filter-apply, #filter-clear, #preset-select,"
    " #preset-save, #preset-delete, #filter-message, #pause, #order, #export-format,"
    " #export-button, #history-from, #history-to, #history-show",
    "sensors": "#sensors-card h2 > *, #sensors .sensor-row > *:not(:empty)",
    "table header": "#packet-table .row.header > span",
    "top bar": ".topbar .brand, #capture-chip, .topbar-rates, #user-name, #user-role, #logout",
}


def fleet_table(lost_b: int = 7) -> SensorTable:
    now = time.time_ns()
    return SensorTable(
        updated_ns=now,
        sensors=[
            SensorState("edge-a", 0, "live", now - 200_000_000, 1000, 0, 0),
            SensorState("edge-b", 1, "silent", now - 63 * 10**9, 500, lost_b, 1),
            SensorState("edge-c", 2, "never", 0, 0, 0, 0),
        ],
    )


class TableWriter:
    """Rewrites the sensor table every half second, as the central's ingest does (about once a
    second), so its `updated_ns` and edge-a's last message stay fresh."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._gid: int | None = None
        self.lost_b = 7  # what edge-b lost, as the next write says
        path.parent.mkdir(mode=0o750, exist_ok=True)
        write_sensor_table(path, fleet_table())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def share_with(self, gid: int) -> None:
        """Let the web workers (group `gid`) read the table, as they read the state dir."""
        os.chown(self.path.parent, -1, gid)
        os.chown(self.path, -1, gid)
        self._gid = gid

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            write_sensor_table(self.path, fleet_table(self.lost_b))
            if self._gid is not None:
                os.chown(self.path, -1, self._gid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def writer(central: tuple[Sensor, TableWriter]) -> TableWriter:
    return central[1]


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sensor, TableWriter]]:
    tmp = tmp_path_factory.mktemp("central")
    config = "auth: {login_failures_per_address: 1000}\ncentral: {enabled: true}\n"
    bpf = "udp and dst portrange 48000-48999"
    s = Sensor(tmp, "--interface", "lo", "--bpf", bpf, config=config, users=users_file())
    writer = TableWriter(s.state_dir / SENSOR_TABLE_FILE)
    try:
        s.web_port()
        writer.share_with(s.state_dir.stat().st_gid)
        s.wait_capturing(s.status())
        yield s, writer
    finally:
        writer.stop()
        s.kill()


@pytest.fixture
def central_console(
    central: tuple[Sensor, TableWriter], request: pytest.FixtureRequest
) -> Iterator[Console]:
    with console_page(f"http://127.0.0.1:{central[0].web_port()}", request) as page:
        yield page


def sensor_options(console: Console) -> list[str]:
    options: list[str] = console.js(
        "return [...document.querySelectorAll('#f-sensor option')].map((o) => o.value);"
    )
    return options


def shown(console: Console, css: str) -> bool:
    return any(e.is_displayed() for e in console.driver.find_elements(By.CSS_SELECTOR, css))


def test_a_lone_sensor_shows_no_selector_no_sensor_column_and_no_sensors_panel(
    console: Console, udp_port: PortMaker
) -> None:
    port = udp_port()
    console.login("vic", PASSWORDS["vic"])
    console.apply_filter(port=port)
    send_udp(port, 2)
    rows = console.wait_rows_to(port, 2)
    assert all(r["sensor"] == "" for r in rows)
    assert not shown(console, '.field[data-field="sensor"]')
    assert not shown(console, "#sensors-card")
    assert not shown(console, "#rate-scope")
    assert not shown(console, "#packet-table .c-sensor")
    assert "central" not in console.js("return document.querySelector('#console').className")
    assert "sensor" not in console.text("#sb-filter")
    console.click("#packet-viewport .rows .row .c-len")
    console.visible("#detail")
    assert not console.driver.find_elements(By.CSS_SELECTOR, "#detail-sensor")


def test_at_a_central_the_console_selects_sensors_and_names_each_packets_sensor(
    central_console: Console, writer: TableWriter, udp_port: PortMaker
) -> None:
    console = central_console
    port, later = udp_port(), udp_port()
    console.login("admin", PASSWORDS["admin"])

    # The selector, the column and the panel appear with the status.
    console.visible('.field[data-field="sensor"]')
    console.wait(lambda d: sensor_options(console) == ["", "edge-a", "edge-b", "edge-c"], "options")
    console.visible("#packet-table .header .c-sensor")
    console.visible("#sensors-card")

    # Each packet names its sensor, in the table and in the detail pane.
    send_udp(port, 3)
    rows = console.wait_rows_to(port, 3)
    assert {r["sensor"] for r in rows} == {"edge-a"}
    console.click("#packet-viewport .rows .row .c-len")
    console.wait(lambda d: console.text("#detail-sensor") == "edge-a", "the sensor in the detail")

    # The panel: every sensor's state, the silent one marked, with its age and losses.
    silent = console.visible('#sensors [data-sensor="edge-b"]')
    assert "silent" in (silent.get_attribute("class") or "").split()
    assert "silent" in silent.text and "1 min ago" in silent.text and "7 lost" in silent.text
    never = console.visible('#sensors [data-sensor="edge-c"]')
    assert "never" in never.text
    live = console.visible('#sensors [data-sensor="edge-a"]')
    assert "live" in live.text and "silent" not in (live.get_attribute("class") or "").split()
    console.screenshot("fleet-10-central")

    # The counters follow the table (GET /api/sensors at a central) without a change of state.
    writer.lost_b = 9
    console.wait(lambda d: "9 lost" in console.text('#sensors [data-sensor="edge-b"]'), "9 lost")

    # Choosing a sensor re-subscribes with filters.sensor and refills from the ring.
    Select(console.driver.find_element(By.ID, "f-sensor")).select_by_value("edge-b")
    console.wait(lambda d: "sensor=edge-b" in console.text("#sb-filter"), "the sensor filter")
    console.wait(lambda d: console.rows() == [], "no packet of edge-b")
    console.visible("#rate-scope")
    console.wait(lambda d: console.text("#rate-scope") == "edge-b", "edge-b's own rates")
    send_udp(later, 2)

    # Clicking a sensor in the panel selects it: edge-a's packets, sent meanwhile too.
    console.click('#sensors [data-sensor="edge-a"]')
    console.wait(lambda d: "sensor=edge-a" in console.text("#sb-filter"), "edge-a chosen")
    rows = console.wait_rows_to(later, 2)
    assert {r["sensor"] for r in rows} == {"edge-a"}
    assert Select(console.driver.find_element(By.ID, "f-sensor")).first_selected_option.text == (
        "edge-a"
    )

    # The Sensor column sorts like the others; Clear goes back to every sensor.
    console.click("#packet-table .header .c-sensor")
    sort = "return document.querySelector('#packet-table .header .c-sensor').ariaSort"
    console.wait(lambda d: console.js(sort) == "ascending", "sorted by sensor")
    console.click("#filter-clear")
    console.wait(lambda d: console.text("#sb-filter") == "no filter", "every sensor again")
    assert console.driver.find_element(By.ID, "f-sensor").get_attribute("value") == ""

    problems = []
    for width, height in [(768, 1024), (1024, 768), (1280, 800), (1920, 1080)]:
        console.resize(width, height)
        console.screenshot(f"fleet-layout-{width}x{height}")
        problems += [f"{width}x{height} {p}" for p in console.layout_problems(FLEET_GROUPS)]
    assert not problems, "\n".join(problems)
