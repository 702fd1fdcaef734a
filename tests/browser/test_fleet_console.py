"""The console at a fleet central (docs/browser.md, "At a fleet central"): the sensor selector,
the Sensor column, the sensors panel with a silent sensor marked, a sensor's own rates; and on a
lone sensor none of it shows.

The central is the real one (docs/fleet-central.md): a real nats-server with JetStream, and
`leireye central` whose ingest follows the sensors listed in `central.sensors` and writes the
sensor table itself (indexes from 1, in the list's order). The sensors are played with nats-py:
their streams, packet batches of records the decoder made from real frames, and statuses.
`edge-a` is live (a status every half second), `edge-b` sent one batch saying it lost 7 ids and
then nothing (silent after `central.silent_after_s`), `edge-c` is listed and never heard from.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import nats
import numpy as np
import pytest
from nats.aio.client import Client
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from leireye.decode.decode import decode_batch
from leireye.fleet.model import (
    KINDS,
    FleetError,
    encode_batch,
    json_message,
    stream_name,
    subject,
)
from leireye.flows.model import Flow
from leireye.record import LinkType
from tests.browser.conftest import PASSWORDS, PortMaker, console_page, users_file
from tests.browser.console import Console, skip_reason
from tests.fleet.nats import nats_server_binary, running, single
from tests.fleet.test_central_flows import flow, flows_message
from tests.sensor import Sensor, send_udp
from tests.traffic.frames import udp4
from tests.waiting import scaled

pytestmark = [
    pytest.mark.browser,
    pytest.mark.root,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]

T = TypeVar("T")

FLEET_GROUPS = {
    "filter bar": "#filter-bar .field, #filter-apply, #filter-clear, #preset-select,"
    " #preset-save, #preset-delete, #filter-message, #pause, #order, #export-format,"
    " #export-button, #history-from, #history-to, #history-show",
    "sensors": "#sensors-card h2 > *, #sensors .sensor-row > *:not(:empty)",
    "table header": "#packet-table .row.header > span",
    "top bar": ".topbar .brand, #capture-chip, .topbar-rates, #user-name, #user-role, #logout",
}

SILENT_AFTER_S = 2.0
RAW_BYTES = 128  # what a sensor publishes of each frame
EDGE_B_LOST = 7  # the ids edge-b's ring overwrote before it could publish them


class FleetSensors:
    """The fleet's sensors as a central sees them, over one nats-py connection whose event loop
    runs in a thread of its own: the test's calls wait for each publish to be acknowledged."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc: Client = self._call(nats.connect(url, connect_timeout=scaled(2.0)))
        self._js = self._nc.jetstream(timeout=scaled(5.0))
        self._next_id: dict[str, int] = {}
        self._beats: list[asyncio.Task[None]] = []

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(scaled(15.0))

    def create_streams(self, *sensors: str) -> None:
        """Each sensor's streams, as `leireye run` with `fleet.enabled` creates them."""

        async def create() -> None:
            for sensor in sensors:
                for kind in KINDS:
                    await self._js.add_stream(
                        name=stream_name(sensor, kind), subjects=[subject(sensor, kind)]
                    )

        self._call(create())

    def beat(self, sensor: str, every_s: float = 0.5) -> None:
        """Publish `sensor`'s status every `every_s` until `close()` (a sensor: every second)."""

        async def start() -> None:
            self._beats.append(asyncio.create_task(self._beat(sensor, every_s)))

        self._call(start())

    async def _beat(self, sensor: str, every_s: float) -> None:
        body = json_message({"sensor": sensor, "state": "capturing"})
        while True:
            await self._js.publish(subject(sensor, "status"), body)
            await asyncio.sleep(every_s)

    def packets(self, sensor: str, dport: int, count: int, lost: int = 0) -> None:
        """One batch of `count` UDP frames to `dport` (IPv4 over Ethernet), decoded as the
        sensor's capture decodes them, with the sensor's next ids after `lost` skipped ones."""
        frames = [udp4(40000 + i, dport, b"leireye fleet") for i in range(count)]
        now = time.time_ns()
        records = decode_batch(
            frames, [now + i for i in range(count)], [len(f) for f in frames], LinkType.EN10MB
        ).records
        first = self._next_id.get(sensor, 1) + lost
        records["seq"] = np.arange(first, first + count, dtype=np.uint64)
        raw = np.zeros((count, RAW_BYTES), dtype=np.uint8)
        for row, frame in zip(raw, frames, strict=True):
            row[: len(frame)] = np.frombuffer(frame[:RAW_BYTES], dtype=np.uint8)
        body, headers = encode_batch(sensor, records, raw, lost)
        self._call(self._js.publish(subject(sensor, "packets"), body, headers=headers))
        self._next_id[sensor] = first + count

    def flows(self, sensor: str, cursor: int, flows: list[Flow]) -> None:
        """A `flows` message of ended flows, as the sensor's publisher sends it."""
        _, _, body, headers = flows_message(sensor, cursor, flows)
        self._call(self._js.publish(subject(sensor, "flows"), body, headers=headers))

    def close(self) -> None:
        async def stop() -> None:
            for task in self._beats:
                task.cancel()
            for task in self._beats:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._nc.close()

        try:
            self._call(stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, udp_port: PortMaker
) -> Iterator[tuple[Sensor, FleetSensors, int]]:
    """The central, the sensors publishing to it, and the port of edge-b's packets."""
    try:
        nats_server_binary()
    except FleetError as exc:
        pytest.skip(f"{exc} (scripts/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("central")
    server = single(tmp / "nats")
    with running(server):
        sensors = FleetSensors(server.url)
        try:
            sensors.create_streams("edge-a", "edge-b")  # edge-c never started
            sensors.beat("edge-a")
            edge_b_port = udp_port()
            sensors.packets("edge-b", edge_b_port, 3, lost=EDGE_B_LOST)
            config = (
                "auth: {login_failures_per_address: 1000}\n"
                "history: {flush_s: 1}\n"  # the flows received are listed within a second
                "central:\n"
                "  enabled: true\n"
                f"  nats: {{servers: ['{server.url}']}}\n"
                "  sensors: [edge-a, edge-b, edge-c]\n"
                "  discover_s: 0.5\n"
                f"  silent_after_s: {SILENT_AFTER_S}\n"
            )
            central = Sensor(tmp, config=config, users=users_file(), command="central")
            try:
                central.web_port()
                yield central, sensors, edge_b_port
            finally:
                central.kill()
        finally:
            sensors.close()


@pytest.fixture
def central_console(
    fleet: tuple[Sensor, FleetSensors, int], request: pytest.FixtureRequest
) -> Iterator[Console]:
    with console_page(f"http://127.0.0.1:{fleet[0].web_port()}", request) as page:
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
    central_console: Console, fleet: tuple[Sensor, FleetSensors, int], udp_port: PortMaker
) -> None:
    console = central_console
    central, sensors, edge_b_port = fleet
    port, later, gap = udp_port(), udp_port(), udp_port()
    with central.explained():
        console.login("admin", PASSWORDS["admin"])

        # The selector, the column and the panel appear with the status.
        console.visible('.field[data-field="sensor"]')
        console.wait(
            lambda d: sensor_options(console) == ["", "edge-a", "edge-b", "edge-c"], "options"
        )
        console.visible("#packet-table .header .c-sensor")
        console.visible("#sensors-card")

        # Each packet names its sensor, in the table and in the detail pane.
        sensors.packets("edge-a", port, 3)
        rows = console.wait_rows_to(port, 3)
        assert {r["sensor"] for r in rows} == {"edge-a"}
        console.click(f'#packet-viewport .rows .row[data-id="{rows[0]["id"]}"] .c-len')
        console.wait(
            lambda d: console.text("#detail-sensor") == "edge-a", "the sensor in the detail"
        )

        # The panel: every sensor's state, the silent one marked, with its age and losses.
        edge_b = '#sensors [data-sensor="edge-b"]'
        console.wait(lambda d: "silent" in classes(console, edge_b), "edge-b marked silent")
        silent = console.visible(edge_b)
        assert "silent" in silent.text and f"{EDGE_B_LOST} lost" in silent.text
        assert re.search(r"\b\d+ s ago\b", silent.text), silent.text
        never = console.visible('#sensors [data-sensor="edge-c"]')
        assert "never" in never.text
        edge_a = '#sensors [data-sensor="edge-a"]'
        live = console.visible(edge_a)
        assert "live" in live.text and "silent" not in classes(console, edge_a)
        console.screenshot("fleet-10-central")

        # The counters follow the table (GET /api/sensors at a central) without a change of
        # state: edge-a skips 2 ids, the ingest counts them lost.
        sensors.packets("edge-a", gap, 1, lost=2)
        console.wait(lambda d: "2 lost" in console.text(edge_a), "edge-a's 2 lost")
        assert "live" in console.text(edge_a) and "silent" not in classes(console, edge_a)

        # Choosing a sensor re-subscribes with filters.sensor and refills from the ring: only
        # edge-b's packets.
        Select(console.driver.find_element(By.ID, "f-sensor")).select_by_value("edge-b")
        console.wait(lambda d: "sensor=edge-b" in console.text("#sb-filter"), "the sensor filter")
        console.wait(
            lambda d: [r["dport"] for r in console.rows()] == [str(edge_b_port)] * 3,
            "edge-b's packets only",
        )
        assert {r["sensor"] for r in console.rows()} == {"edge-b"}
        console.visible("#rate-scope")
        console.wait(lambda d: console.text("#rate-scope") == "edge-b", "edge-b's own rates")
        sensors.packets("edge-a", later, 2)

        # Clicking a sensor in the panel selects it: edge-a's packets, sent meanwhile too.
        console.click(edge_a)
        console.wait(lambda d: "sensor=edge-a" in console.text("#sb-filter"), "edge-a chosen")
        console.wait_rows_to(later, 2)
        assert {r["sensor"] for r in console.rows()} == {"edge-a"}
        assert len(console.rows_to(port)) == 3
        chosen = Select(console.driver.find_element(By.ID, "f-sensor")).first_selected_option
        assert chosen.text == "edge-a"

        # The Sensor column sorts like the others; Clear goes back to every sensor.
        console.click("#packet-table .header .c-sensor")
        sort = "return document.querySelector('#packet-table .header .c-sensor').ariaSort"
        console.wait(lambda d: console.js(sort) == "ascending", "sorted by sensor")
        console.click("#filter-clear")
        console.wait(lambda d: console.text("#sb-filter") == "no filter", "every sensor again")
        assert console.driver.find_element(By.ID, "f-sensor").get_attribute("value") == ""
        console.wait(
            lambda d: {r["sensor"] for r in console.rows()} == {"edge-a", "edge-b"},
            "both sensors' packets again",
        )

        problems = []
        for width, height in [(768, 1024), (1024, 768), (1280, 800), (1920, 1080)]:
            console.resize(width, height)
            console.screenshot(f"fleet-layout-{width}x{height}")
            problems += [f"{width}x{height} {p}" for p in console.layout_problems(FLEET_GROUPS)]
        assert not problems, "\n".join(problems)


def flow_rows(console: Console) -> dict[str, str]:
    """The Conversations table's rows: uid -> the Sensor cell's text."""
    rows: dict[str, str] = console.js(
        """const rows = document.querySelectorAll('#flows-table tbody tr[data-key]');
           return Object.fromEntries([...rows]
             .map((r) => [r.dataset.key, r.querySelector('.c-sensor').textContent]));"""
    )
    return rows


def test_at_a_central_the_conversations_name_each_flows_sensor_and_follow_the_selector(
    central_console: Console, fleet: tuple[Sensor, FleetSensors, int]
) -> None:
    console = central_console
    central, sensors, _ = fleet
    with central.explained():
        sensors.flows("edge-a", 1, [flow("Cfleeta1", "10.1.0.1", 1),
                                    flow("Cfleeta2", "10.1.0.2", 2)])  # fmt: skip
        sensors.flows("edge-b", 1, [flow("Cfleetb1", "10.2.0.1", 3)])
        console.login("admin", PASSWORDS["admin"])
        console.visible('.field[data-field="sensor"]')  # the status said `central`
        console.click("#views a[data-view='flows']")
        expected = {"Cfleeta1": "edge-a", "Cfleeta2": "edge-a", "Cfleetb1": "edge-b"}
        console.wait(lambda d: expected.items() <= flow_rows(console).items(), "every sensor's "
                     "flows, each naming its sensor", timeout=60)  # fmt: skip
        console.visible("#flows-table th.c-sensor")
        console.screenshot("fleet-21-conversations")

        # The selector narrows the conversations to the chosen sensor's (GET /api/flows?sensor).
        Select(console.driver.find_element(By.ID, "f-sensor")).select_by_value("edge-b")
        console.wait(lambda d: set(flow_rows(console).values()) == {"edge-b"}, "edge-b's only")
        assert "Cfleetb1" in flow_rows(console)

        # The search box finds a sensor's name too; sorting by the column works as elsewhere.
        Select(console.driver.find_element(By.ID, "f-sensor")).select_by_value("")
        console.wait(lambda d: expected.items() <= flow_rows(console).items(), "all again")
        console.fill("#flows-search", "edge-a")
        console.wait(lambda d: set(flow_rows(console).values()) == {"edge-a"}, "found by name")
        console.fill("#flows-search", "")
        console.click("#flows-table th[data-sort='sensor']")
        console.wait(lambda d: console.js("return document.querySelector('#flows-table')"
                                          ".dataset.sorted") == "sensor asc", "sorted")  # fmt: skip
        names = list(flow_rows(console).values())
        assert names == sorted(names)


def classes(console: Console, css: str) -> list[str]:
    console.visible(css)
    name = console.js(
        "const e = document.querySelector(arguments[0]); return e && e.className", css
    )
    return str(name or "").split()
