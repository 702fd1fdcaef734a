"""The flow views of the console: Conversations, Hosts, a host page, Protocols over time, and
the names the sensor saw passively shown beside addresses.

The views' navigation runs on any sensor; the tests using `flows_api` need the flow layer's
REST endpoints (GET /api/flows, /api/hosts, /api/hosts/{ip}, /api/stats/protocols) and its flow
process, and are skipped on a sensor without them.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import dpkt
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

from tests.browser.conftest import PASSWORDS, PortMaker
from tests.browser.console import Console, skip_reason
from tests.sensor import Sensor, send_udp

pytestmark = [
    pytest.mark.browser,
    pytest.mark.root,
    pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason())),
]

NAMED = "127.0.0.3"  # an address a DNS answer names
NAME = "printer.leireye.test"
VIEWS = {"packets": ".workspace", "flows": "#view-flows", "hosts": "#view-hosts",
         "protocols": "#view-protocols"}  # fmt: skip


@pytest.fixture(scope="module")
def flows_api(sensor: Sensor) -> Iterator[None]:
    """The flow layer is there: /api/flows answers (the store) with a flow process behind it
    (`"live": true`)."""
    base = f"http://127.0.0.1:{sensor.web_port()}"
    body = json.dumps({"username": "vic", "password": PASSWORDS["vic"]}).encode()
    login = urllib.request.Request(
        base + "/api/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(login, timeout=10) as response:
        token = json.load(response)["access_token"]
    flows = urllib.request.Request(
        base + "/api/flows?limit=1", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(flows, timeout=10) as response:
        live = json.load(response).get("live")
    assert live, "/api/flows says there is no flow process behind it"
    yield


def send_dns_answer(port: int, name: str, address: str) -> None:
    """A DNS response from 127.0.0.2:53 naming `address`, to 127.0.0.1:`port` (in the BPF)."""
    answer = dpkt.dns.DNS(
        id=7, qr=dpkt.dns.DNS_R, rd=1, ra=1,
        qd=[dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN)],
        an=[dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, cls=dpkt.dns.DNS_IN, ttl=60,
                            rdata=socket.inet_aton(address))],
    )  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 53))
        s.sendto(bytes(answer), ("127.0.0.1", port))


def send_from(address: str, port: int, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        for _ in range(count):
            s.sendto(b"from a named host", ("127.0.0.1", port))


def view_shown(console: Console, name: str) -> bool:
    return bool(
        console.js(
            "const el = document.querySelector(arguments[0]);"
            "const link = document.querySelector(`#views a[data-view='${arguments[1]}']`);"
            "return el && !el.closest('[hidden]') && link.getAttribute('aria-current') === 'page';",
            VIEWS[name],
            name,
        )
    )


def test_an_address_in_the_table_or_the_detail_opens_its_host_page(
    console: Console, udp_port: PortMaker
) -> None:
    port = udp_port()
    console.login("vic", PASSWORDS["vic"])
    send_udp(port, 2)
    row_id = console.wait_rows_to(port, 2)[0]["id"]
    selector = f'#packet-viewport .row[data-id="{row_id}"]'
    console.click(f"{selector} .c-dst .addr")  # the address, not the row: no detail
    console.wait(lambda d: console.js("return location.hash") == "#/host/127.0.0.1", "host page")
    console.visible("#view-host")
    assert not console.driver.find_element(By.ID, "detail").is_displayed()
    console.driver.back()
    console.wait(lambda d: view_shown(console, "packets"), "the packets again")
    console.click(f"{selector} .c-len")  # elsewhere in the row: its detail
    console.visible("#detail-title .addr[data-ip='127.0.0.1']").click()
    console.wait(lambda d: console.js("return location.hash") == "#/host/127.0.0.1", "host page")
    console.visible("#view-host")


def test_the_view_links_switch_views_and_back_returns(console: Console) -> None:
    console.login("vic", PASSWORDS["vic"])
    assert view_shown(console, "packets")
    for name in ("flows", "hosts", "protocols", "packets"):
        console.click(f"#views a[data-view='{name}']")
        console.wait(lambda d, name=name: view_shown(console, name), f"the {name} view")
        filters = console.driver.find_element(By.ID, "filter-bar").is_displayed()
        assert filters == (name in ("packets", "flows"))  # the filters apply to packets and flows
    console.driver.back()
    console.wait(lambda d: view_shown(console, "protocols"), "back to protocols")
    console.driver.get(console.base_url + "/#/host/127.0.0.1")  # a host page can be linked
    console.visible("#view-host")
    console.wait(lambda d: console.text("#host-title .addr") == "127.0.0.1", "the host's title")
    assert console.js("return document.querySelector('#views a[aria-current]').dataset.view") == (
        "hosts"
    )


@pytest.mark.usefixtures("flows_api")
def test_conversations_list_sort_search_and_open_a_flows_packets(
    console: Console, udp_port: PortMaker
) -> None:
    first, second = udp_port(), udp_port()
    console.login("ana", PASSWORDS["ana"])
    send_udp(first, 3, b"a" * 20)
    send_udp(second, 5, b"b" * 200)
    console.click("#views a[data-view='flows']")
    row = "#flows-table tbody tr[data-key]"

    def flow_rows() -> list[dict[str, str]]:
        rows: list[dict[str, str]] = console.js(
            """return [...document.querySelectorAll('#flows-table tbody tr[data-key]')]
                 .map((r) => ({uid: r.dataset.key, resp: r.children[3].textContent,
                   out: r.children[6].textContent, bytes: r.children[7].textContent,
                   state: r.children[11].textContent}));"""
        )
        return rows

    def of(port: int) -> list[dict[str, str]]:
        return [r for r in flow_rows() if r["resp"].endswith(f":{port}")]

    console.wait(lambda d: of(first) and of(second), "both conversations", timeout=90)
    assert of(first)[0]["out"] == "3" and of(second)[0]["out"] == "5"
    hidden = """return [...document.querySelectorAll('#flows-table .c-sensor')]
                  .every((e) => getComputedStyle(e).display === 'none');"""
    assert console.js(hidden)  # a lone sensor: no Sensor column (test_fleet_console.py)
    console.screenshot("21-conversations")
    console.resize(1024, 768)  # a wide table scrolls inside its card, the page keeps its width
    groups = {"top bar": ".topbar > *", "card head": "#view-flows h2 > *"}
    assert console.layout_problems(groups) == []
    console.resize(1280, 800)

    console.click("#flows-table th[data-sort='orig_pkts']")
    console.wait(lambda d: console.js("return document.querySelector('#flows-table')"
                                      ".dataset.sorted") == "orig_pkts asc", "sorted")  # fmt: skip
    pkts = [int(r["out"].replace(",", "")) for r in flow_rows()]
    assert pkts == sorted(pkts)
    console.click("#flows-table th[data-sort='orig_pkts']")
    console.wait(lambda d: console.js("return document.querySelector('#flows-table')"
                                      ".dataset.sorted") == "orig_pkts desc", "desc")  # fmt: skip

    console.fill("#flows-search", str(second))
    console.wait(lambda d: all(r["resp"].endswith(f":{second}") for r in flow_rows()), "search")
    assert of(second)

    console.fill("#flows-search", "")
    console.apply_filter(port=first)  # the packet view's filters apply here too
    console.wait(lambda d: flow_rows() and not of(second), "the filter applied to flows")

    uid = of(first)[0]["uid"]
    console.driver.find_element(By.CSS_SELECTOR, f"{row}[data-key='{uid}'] td.c-num").click()
    console.wait(lambda d: view_shown(console, "packets"), "the packet view")
    console.wait_rows_to(first, 3)
    console.wait(lambda d: console.text("#filter-message").startswith("Flow "), "the flow named")
    assert all(r["dport"] == str(first) for r in console.rows())


@pytest.mark.usefixtures("flows_api")
def test_names_beside_addresses_hosts_view_and_host_page(
    console: Console, udp_port: PortMaker
) -> None:
    port = udp_port()
    send_dns_answer(port, NAME, NAMED)
    send_from(NAMED, port, 4)
    console.login("ana", PASSWORDS["ana"])
    console.apply_filter(port=port)
    console.wait_rows_to(port, 5)

    def named_cells() -> list[dict[str, str]]:
        cells: list[dict[str, str]] = console.js(
            """return [...document.querySelectorAll('#packet-viewport .row .addr.named')]
                 .map((a) => ({text: a.textContent, title: a.title, ip: a.dataset.ip}));"""
        )
        return cells

    # Names come from the flow process's live hosts (`live` of /api/hosts) within seconds.
    console.wait(lambda d: named_cells(), "a name beside an address", timeout=150)
    cell = named_cells()[0]
    assert cell["text"] == NAME and cell["ip"] == NAMED and NAMED in cell["title"]
    console.screenshot("22-names-in-the-packet-table")

    console.click("#views a[data-view='hosts']")
    host_row = f"#hosts-table tbody tr[data-key='{NAMED}']"
    console.visible(host_row)
    assert NAME in console.text(host_row)
    console.screenshot("23-hosts")
    console.fill("#hosts-search", "printer")
    console.wait(lambda d: console.js("return document.querySelector('#hosts-table')"
                                      ".dataset.rows") == "1", "the search")  # fmt: skip

    console.click(f"{host_row} td.c-num")
    console.wait(lambda d: console.js("return document.querySelector('#view-host')"
                                      ".dataset.state") == "loaded", "the host page")  # fmt: skip
    assert console.text("#host-title .addr") == NAME
    assert console.text("#host-title .host-ip") == NAMED
    assert NAME in console.text("#host-names")
    # Peers come from the stored minutes (written once the minute is over): the page reloads.
    console.visible("#host-peers tbody tr[data-key='127.0.0.1']", timeout=120)
    chart_keys = "return document.querySelector('#host-chart').dataset.keys"
    console.wait(lambda d: console.js(chart_keys), "the chart's layers", timeout=90)
    console.screenshot("24-host-page")

    console.click("#host-peers tbody tr[data-key='127.0.0.1'] .addr")  # a peer's own page
    console.wait(lambda d: console.js("return document.querySelector('#view-host')"
                                      ".dataset.ip") == "127.0.0.1", "the peer's page")  # fmt: skip


@pytest.mark.usefixtures("flows_api")
def test_protocols_over_time_with_a_range(console: Console, udp_port: PortMaker) -> None:
    send_udp(udp_port(), 10)
    console.login("vic", PASSWORDS["vic"])
    console.click("#views a[data-view='protocols']")

    def shown(metric: str, preset: str) -> str | None:
        """The chart's layers once it shows `metric` over `preset`."""
        state = console.js(
            "const el = document.querySelector('#view-protocols');"
            "return [el.dataset.state, el.dataset.metric, el.dataset.range,"
            " document.querySelector('#protocols-chart').dataset.keys];"
        )
        return state[3] if state[:3] == ["loaded", metric, preset] else None

    # The store writes a minute once it is over: wait for the first one.
    console.wait(lambda d: "UDP" in (shown("bytes", "1h") or ""), "UDP in the chart", timeout=150)
    console.screenshot("25-protocols-1h")
    select = Select(console.driver.find_element(By.CSS_SELECTOR, "#protocols-range select"))
    select.select_by_value("7d")
    console.wait(lambda d: "UDP" in (shown("bytes", "7d") or ""), "the 7-day range")
    select.select_by_value("custom")
    console.visible("#protocols-range .range-from")
    Select(console.driver.find_element(By.ID, "protocols-metric")).select_by_value("packets")
    console.wait(lambda d: "UDP" in (shown("packets", "custom") or ""), "packets, custom range")
    assert "KiB" not in console.text("#protocols-legend")  # packets are counted, not bytes
    console.click("#theme-toggle")
    console.screenshot("26-protocols-other-theme")
