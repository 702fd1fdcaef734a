"""The console's history: a past time range listed from the packet store (with the filter),
its packets' detail whole from the store, its export streamed by the browser, and Live back
with one click; in headless Chromium against a real sensor capturing on `lo`."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from leireye.store.reader import PacketStore
from tests.browser.conftest import PASSWORDS, PortMaker
from tests.browser.console import Console, skip_reason
from tests.sensor import Sensor, send_udp
from tests.waiting import wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.root,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]
PAYLOAD = b"history-" + b"h" * 600  # a frame longer than ring.raw_bytes (256)

_SET_RANGE = """
const pad = (n) => String(n).padStart(2, '0');
const local = (ms) => { const d = new Date(ms); return `${d.getFullYear()}-${pad(d.getMonth() + 1)}`
  + `-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; };
document.querySelector('#history-from').value = local(arguments[0]);
document.querySelector('#history-to').value = local(arguments[1]);
"""


def stored_to(sensor: Sensor, port: int) -> int:
    """How many frames to `port` the packet store holds (UDP over lo: dst port at 36)."""
    store = PacketStore(sensor.state_dir / "store", refresh_s=0)
    return sum(f.data[36:38] == port.to_bytes(2, "big") for f in store.between(0, 2**63 - 1))


def downloaded(console: Console) -> list[dict[str, Any]] | None:
    """The exported JSON once the browser has written all of it."""
    for path in console.downloads.glob("leireye-*.json"):
        try:
            found: list[dict[str, Any]] = json.loads(path.read_text())
        except ValueError:
            return None  # still being written
        return found
    return None


def test_a_past_time_range_comes_from_the_store_and_live_comes_back(
    console: Console, sensor: Sensor, udp_port: PortMaker
) -> None:
    port = udp_port()
    console.login("ana", PASSWORDS["ana"])
    began = int(time.time()) - 1  # the inputs hold whole seconds
    send_udp(port, 3, payload=PAYLOAD)
    wait_for(lambda: stored_to(sensor, port) >= 3, 30, "the store to hold the datagrams")
    ended = int(time.time()) + 2
    console.apply_filter(port=port)
    console.wait(lambda d: "Filter applied" in console.text("#filter-message"), "the filter")
    console.wait_rows_to(port, 3)

    console.js(_SET_RANGE, began * 1000, ended * 1000)
    console.click("#history-show")
    console.visible("#history-live")
    console.wait(lambda d: console.js("return document.querySelector('#console').dataset.mode")
                 == "history", "the history mode")  # fmt: skip
    console.wait(lambda d: "packet store" in console.text("#filter-message"), "the history")
    rows = console.wait_rows_to(port, 3)
    assert len(console.rows()) == 3  # the range, with the filter: nothing live mixed in
    console.screenshot("history-01-range")

    console.click(f'#packet-viewport .row[data-id="{rows[0]["id"]}"]')
    source = console.visible("#detail-source")
    assert source.get_attribute("data-source") == "store"  # whole: the ring cut it at 256
    assert len(console.text("#detail-body")) > 0

    console.driver.find_element(By.CSS_SELECTOR, "#export-format option[value=json]").click()
    console.click("#export-button")
    exported = wait_for(lambda: downloaded(console), 15, "the download to finish")
    assert [p["dst_port"] for p in exported] == [port] * 3

    send_udp(port, 2, payload=b"live-again")
    console.click("#history-live")
    console.hidden("#history-live")
    console.wait_rows_to(port, 5)  # back to live: the ring's refill and the stream
    assert console.js("return document.querySelector('#console').dataset.mode") is None
    console.assert_no_console_errors()
