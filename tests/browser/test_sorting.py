"""Column sorting in the packet table: ascending, descending, back to arrival order; the
indicator; live packets landing in sort order; and sorting within the filter in force."""

from __future__ import annotations

import pytest

from tests.browser.conftest import PASSWORDS, PortMaker
from tests.browser.console import Console, skip_reason
from tests.sensor import send_udp

pytestmark = [
    pytest.mark.browser,
    pytest.mark.root,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]


def header_sort(console: Console, column: str) -> str:
    return str(console.js(f"return document.querySelector('#packet-table .header .c-{column}')"
                          ".getAttribute('aria-sort')"))  # fmt: skip


def lengths(console: Console) -> list[int]:
    return [int(r["len"]) for r in console.rows()]


def test_a_header_click_sorts_ascending_then_descending_then_back_to_arrival(
    console: Console, udp_port: PortMaker
) -> None:
    port, other = udp_port(), udp_port()
    console.login("vic", PASSWORDS["vic"])
    console.apply_filter(port=port)
    console.wait(lambda d: f"port={port}" in console.text("#sb-filter"), "the filter")
    for size in (30, 10, 50, 20, 40):  # arrival order differs from length order
        send_udp(port, 1, b"x" * size)
    send_udp(other, 3, b"y" * 5)  # outside the filter: never shown, sorted or not
    console.wait_rows_to(port, 5)
    arrival = [r["id"] for r in console.rows()]
    assert arrival == sorted(arrival, key=int, reverse=True)
    assert header_sort(console, "len") == "none"

    console.click("#packet-table .header .c-len")
    console.wait(lambda d: lengths(console) == sorted(lengths(console)), "ascending lengths")
    assert header_sort(console, "len") == "ascending"
    assert "▲" in console.js(
        "return getComputedStyle(document.querySelector('#packet-table .header .c-len'),"
        " '::after').content"
    )
    console.screenshot("20-sorted-by-length")

    send_udp(port, 1, b"z" * 35)  # a live packet lands where it sorts, not on top
    console.wait_rows_to(port, 6)
    console.wait(lambda d: lengths(console) == sorted(lengths(console)), "the new one in order")
    assert lengths(console)[0] != max(lengths(console))

    console.click("#packet-table .header .c-len")
    console.wait(lambda d: lengths(console) == sorted(lengths(console), reverse=True), "descending")
    assert header_sort(console, "len") == "descending"
    assert all(r["dport"] == str(port) for r in console.rows())

    console.click("#packet-table .header .c-len")
    ids = lambda: [int(r["id"]) for r in console.rows()]  # noqa: E731
    console.wait(lambda d: ids() == sorted(ids(), reverse=True), "arrival order again")
    assert header_sort(console, "len") == "none"


def test_sorting_by_another_column_replaces_the_first(
    console: Console, udp_port: PortMaker
) -> None:
    first, second = udp_port(), udp_port()
    console.login("vic", PASSWORDS["vic"])
    console.apply_filter(src_ip="127.0.0.1", protocol="UDP")
    console.wait(lambda d: "protocol=UDP" in console.text("#sb-filter"), "the filter")
    send_udp(second, 2)
    send_udp(first, 2)
    console.wait_rows_to(first, 2)
    console.click("#packet-table .header .c-dport")
    dports = lambda: [int(r["dport"]) for r in console.rows()]  # noqa: E731
    console.wait(lambda d: dports() == sorted(dports()) and len(dports()) >= 4, "by port")
    assert header_sort(console, "dport") == "ascending"
    assert header_sort(console, "len") == "none"
    console.click("#packet-table .header .c-id")
    console.wait(lambda d: header_sort(console, "id") == "ascending", "by number")
    assert header_sort(console, "dport") == "none"
    ids = lambda: [int(r["id"]) for r in console.rows()]  # noqa: E731
    # The header turns at once; the rows follow at the next redraw (at most every 250 ms).
    console.wait(lambda d: ids() == sorted(ids()) and len(ids()) >= 4, "the rows by number")
