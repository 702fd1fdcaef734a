"""The packet table around a filter change: the detail pane, the refill and its cap, loading
older matches, the order button, and saved filters (presets) kept across a reload."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.browser.conftest import PASSWORDS, PortMaker
from tests.browser.console import Console, skip_reason
from tests.sensor import send_udp

pytestmark = [
    pytest.mark.browser,
    pytest.mark.root,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]


def shown_rows(console: Console) -> int:
    return int(console.text("#sb-rows").replace(",", ""))


def test_a_filter_that_leaves_the_shown_packet_out_closes_its_detail(
    console: Console, udp_port: PortMaker
) -> None:
    first, second = udp_port(), udp_port()
    console.login("ana", PASSWORDS["ana"])
    send_udp(first, 3)
    send_udp(second, 3)
    target = console.wait_rows_to(first, 3)[0]
    console.wait_rows_to(second, 3)
    console.click(f'#packet-viewport .row[data-id="{target["id"]}"]')
    console.visible("#detail-layers")

    console.apply_filter(port=first)  # the packet still matches: its detail stays
    console.wait(lambda d: f"port={first}" in console.text("#sb-filter"), "the first filter")
    assert console.driver.find_element(By.ID, "detail").is_displayed()
    assert console.text("#detail-title").startswith(f"#{target['id']}")

    console.apply_filter(port=second)  # now it does not
    console.wait(lambda d: f"port={second}" in console.text("#sb-filter"), "the second filter")
    console.hidden("#detail")
    assert not console.rows_to(first)


def test_a_refill_capped_at_500_says_so_and_loads_the_older_matches(
    console: Console, udp_port: PortMaker
) -> None:
    port, few = udp_port(), udp_port()
    console.login("vic", PASSWORDS["vic"])
    console.apply_filter(port=port)
    console.wait(lambda d: f"port={port}" in console.text("#sb-filter"), "the filter")
    console.hidden("#table-note")  # nothing earlier
    send_udp(port, 520, rate=2000)
    console.wait(lambda d: shown_rows(console) == 520, "520 live rows")
    console.click("#filter-apply")  # the same filter again: a refill that finds 520
    note = console.visible("#table-note")
    console.wait(
        lambda d: "500 most recent matches from before this filter" in note.text, "the cap's note"
    )
    assert shown_rows(console) == 500
    assert "export, or narrow the filter" in note.text
    console.screenshot("12-refill-capped")

    console.click("#load-older")
    console.wait(lambda d: shown_rows(console) == 520, "the 20 older matches")
    console.wait(
        lambda d: "All 520 matches from before this filter" in note.text, "the note saying all"
    )
    assert not console.driver.find_element(By.ID, "load-older").is_displayed()
    console.click("#order")  # oldest on top: the loaded ones first, in order

    def oldest_on_top() -> bool:
        ids = [int(r["id"]) for r in console.rows_to(port)]
        return ids == sorted(ids) and len(ids) > 10

    console.wait(lambda d: oldest_on_top(), "the table redrawn oldest first")

    send_udp(few, 3)  # a refill under the cap says nothing
    console.apply_filter(port=few)
    console.wait(lambda d: shown_rows(console) == 3, "the 3 matches")
    console.hidden("#table-note")


def test_the_order_button_names_what_it_does(console: Console, udp_port: PortMaker) -> None:
    port = udp_port()
    console.login("vic", PASSWORDS["vic"])
    send_udp(port, 5)
    console.apply_filter(port=port)
    console.wait_rows_to(port, 5)

    def ids() -> list[int]:
        return [int(r["id"]) for r in console.rows_to(port)]

    assert console.text("#order") == "Oldest on top"  # now: newest on top
    assert ids() == sorted(ids(), reverse=True)
    console.click("#order")
    console.wait(lambda d: ids() == sorted(ids()), "the oldest on top")
    assert console.text("#order") == "Newest on top"
    assert "click to put the newest on top" in str(
        console.driver.find_element(By.ID, "order").get_attribute("title")
    )
    console.click("#order")
    console.wait(lambda d: ids() == sorted(ids(), reverse=True), "the newest on top")
    assert console.text("#order") == "Oldest on top"


def test_a_saved_filter_is_applied_after_a_reload_and_can_be_deleted(
    console: Console, udp_port: PortMaker
) -> None:
    port, other = udp_port(), udp_port()
    console.login("vic", PASSWORDS["vic"])
    console.fill("#f-port", str(port))
    console.fill("#f-protocol", "UDP")
    console.click("#preset-save")
    console.fill("#preset-name", "my probe")
    console.driver.find_element(By.ID, "preset-name").send_keys("\n")  # Enter saves
    console.wait(lambda d: console.js("return document.querySelector('#presets')"
                                      ".dataset.presets") == "1", "the preset")  # fmt: skip
    assert console.text("#sb-filter") == "no filter"  # saving does not apply
    console.screenshot("13-preset-saved")

    console.driver.refresh()
    console.visible("#console")
    console.wait(lambda d: console.text("#conn-text") == "Live", "the WebSocket to be live")
    send_udp(port, 2)
    send_udp(other, 2)
    Select(console.driver.find_element(By.ID, "preset-select")).select_by_visible_text("my probe")
    console.wait(lambda d: f"port={port}" in console.text("#sb-filter"), "the preset applied")
    assert "protocol=UDP" in console.text("#sb-filter")
    assert console.driver.find_element(By.ID, "f-port").get_attribute("value") == str(port)
    console.wait_rows_to(port, 2)
    assert not console.rows_to(other)

    console.click("#preset-delete")
    console.wait(lambda d: console.js("return document.querySelector('#presets')"
                                      ".dataset.presets") == "0", "the preset deleted")  # fmt: skip
    console.driver.refresh()
    console.visible("#console")
    options = [
        o.text for o in console.driver.find_elements(By.CSS_SELECTOR, "#preset-select option")
    ]
    assert options == ["No saved filters"]
