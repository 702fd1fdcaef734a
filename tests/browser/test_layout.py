"""The console's layout from a tablet to a large screen, and its two colour themes.

At each size the page is screenshot into test-artifacts/screenshots/ (look at them) and every
visible control of the top bar, the filter bar, the charts, the panels and the table header is
checked: inside the page's width, not cut by a box that hides its overflow, its label whole,
and not overlapping another of its group.
"""

from __future__ import annotations

import pytest
from selenium.webdriver.common.action_chains import ActionChains
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

GROUPS = {
    "top bar": ".topbar .brand, #capture-chip, .topbar-rates, #users-open, #user-name,"
    " #user-role, #theme-toggle, #logout",
    "filter bar": "#filter-bar .field, #filter-apply, #filter-clear, #preset-select,"
    " #preset-save, #preset-delete, #filter-message, #pause, #order, #export-format,"
    " #export-button, #history-from, #history-to, #history-show",
    "panels": ".workspace > .chart-card, .packets-pane, .side > .card",
    "charts": ".chart-block, .chart-scale",
    "panel headings": ".side > .card h2 > *, .side .capture-row > *",
    "table header": "#packet-table .row.header > span",
}
SIZES = [(768, 1024), (1024, 768), (1280, 720), (1280, 800), (1920, 1080), (3840, 2160)]


@pytest.mark.parametrize("user", ["admin", "vic"])
def test_nothing_is_clipped_or_overlapping_from_a_tablet_to_a_large_screen(
    console: Console, udp_port: PortMaker, user: str
) -> None:
    port = udp_port()
    console.login(user, PASSWORDS[user])
    send_udp(port, 30)
    console.wait_rows_to(port, 1)
    if user == "admin":
        console.visible("#capture-card")
    problems = []
    for width, height in SIZES:
        console.resize(width, height)
        console.screenshot(f"layout-{user}-{width}x{height}")
        problems += [f"{width}x{height} {p}" for p in console.layout_problems(GROUPS)]
    assert not problems, "\n".join(problems)


def test_the_panels_are_above_the_fold_at_1280x720(console: Console, udp_port: PortMaker) -> None:
    console.login("admin", PASSWORDS["admin"])
    console.visible("#capture-card")
    console.resize(1280, 720)
    heights = console.js(
        """return {page: innerHeight,
                   top: document.querySelector('.top-card').getBoundingClientRect().bottom,
                   table: document.querySelector('#packet-viewport').clientHeight,
                   chart: document.querySelector('#chart-bps').clientHeight};"""
    )
    assert heights["top"] <= heights["page"], heights
    assert heights["table"] >= 10 * 22, heights  # ten rows at least
    assert heights["chart"] >= 90, heights


def background(console: Console) -> str:
    return str(console.js("return getComputedStyle(document.body).backgroundColor"))


def test_the_theme_follows_the_system_until_chosen_and_the_choice_survives_a_reload(
    console: Console,
) -> None:
    def system(scheme: str) -> None:
        console.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )

    system("dark")
    console.login("vic", PASSWORDS["vic"])
    dark = background(console)
    assert console.text("#theme-toggle") == "Light theme"
    console.screenshot("theme-dark")
    system("light")  # no choice kept yet: the page follows the system at once
    console.wait(lambda d: background(console) != dark, "the light theme")
    light = background(console)
    assert console.text("#theme-toggle") == "Dark theme"
    console.screenshot("theme-light")

    console.click("#theme-toggle")  # a choice: dark, kept in localStorage
    console.wait(lambda d: background(console) == dark, "the dark theme")
    console.driver.refresh()
    console.visible("#console")
    assert background(console) == dark != light  # the system still says light
    assert console.text("#theme-toggle") == "Light theme"
    console.click("#theme-toggle")
    console.wait(lambda d: background(console) == light, "the light theme again")
    console.driver.refresh()
    console.visible("#console")
    assert background(console) == light
    console.resize(1280, 800)
    console.screenshot("theme-light-chosen")


def test_the_charts_show_values_under_the_pointer_and_scale_past_a_spike(
    console: Console, udp_port: PortMaker
) -> None:
    port = udp_port()
    console.login("vic", PASSWORDS["vic"])
    send_udp(port, 400)  # one spike among quiet seconds
    console.wait(
        lambda d: (
            float(console.js("return document.querySelector('#chart-pps').dataset.latest")) >= 100
        ),
        "the spike in the chart",
    )
    over = console.driver.find_element(By.CSS_SELECTOR, "#chart-pps .u-over")
    ActionChains(console.driver).move_to_element(over).perform()
    tip = console.visible("#chart-pps .chart-tip")
    assert " at " in tip.text
    assert console.text("#chart-pps-now") == tip.text
    console.screenshot("14-chart-hover")
    ActionChains(console.driver).move_by_offset(0, 400).perform()  # off the chart
    console.hidden("#chart-pps .chart-tip")

    for scale in ("log", "p99", "linear"):
        Select(console.driver.find_element(By.ID, "chart-scale")).select_by_value(scale)
        console.wait(
            lambda d, scale=scale: (
                console.js("return document.querySelector('#chart-bps').dataset.scale") == scale
            ),
            f"the {scale} scale",
        )
        console.screenshot(f"14-chart-{scale}")
    # The clip level: the 99th percentile by nearest rank, so one spike in 100 s is left out.
    quantiles = console.driver.execute_async_script(
        """const done = arguments[0];
        import('/static/app/charts.js').then(({ quantile }) => {
          const quiet = Array.from({ length: 99 }, (_, i) => i % 10);
          done([quantile([...quiet, 25e6], 0.99), quantile([3, 1, 2], 0.99), quantile([], 0.99)]);
        });"""
    )
    assert quantiles == [9, 3, 0]

    # 150 quiet seconds at 4 KiB/s and one at 24 MiB/s, in charts of their own on this page.
    notes = console.driver.execute_async_script(
        """const done = arguments[0];
        import('/static/app/charts.js').then(({ RateCharts }) => {
          const make = () => document.body.appendChild(document.createElement('div'));
          const [ppsEl, bpsEl, ppsReadout, bpsReadout] = [make(), make(), make(), make()];
          bpsEl.className = 'chart';
          const charts = new RateCharts({ ppsEl, bpsEl, ppsReadout, bpsReadout });
          const t0 = Date.now() - 200000;
          for (let i = 0; i < 150; i += 1) {
            charts.addStats({ timestamp: new Date(t0 + i * 1000).toISOString(),
              packets_per_second: 10, bytes_per_second: i === 70 ? 24 * 1048576 : 4096 });
          }
          const note = () => bpsEl.querySelector('.chart-note');
          const seen = [note().hidden];
          charts.scale = 'p99';
          seen.push(note().textContent);
          charts.scale = 'log';
          seen.push(note().hidden);
          done(seen);
        });"""
    )
    assert notes == [True, "clipped · peak 24 MiB/s", True]
