"""The console page as the tests use it: log in, read rows, wait on DOM conditions, screenshot."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.waiting import scaled

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "live capture needs root"
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return "needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)"
    return None


class Console:
    def __init__(self, driver: WebDriver, base_url: str, shots: Path, downloads: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots
        self.downloads = downloads

    # -- waiting ----------------------------------------------------------------------------

    def wait(self, condition: Callable[[WebDriver], T], what: str, timeout: float = 15) -> T:
        """Wait until `condition(driver)` is truthy (a vanished element counts as not yet)."""
        waiter = WebDriverWait(
            self.driver, scaled(timeout), poll_frequency=0.05,
            ignored_exceptions=(StaleElementReferenceException,),
        )  # fmt: skip
        result: T = waiter.until(condition, f"timed out waiting for {what}")
        return result

    def visible(self, css: str, timeout: float = 15) -> WebElement:
        def shown(d: WebDriver) -> WebElement | None:
            found = d.find_elements(By.CSS_SELECTOR, css)
            return found[0] if found and found[0].is_displayed() else None

        return self.wait(shown, f"{css} to be visible", timeout)

    def hidden(self, css: str, timeout: float = 15) -> None:
        def gone(d: WebDriver) -> bool:
            return not any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, css))

        self.wait(gone, f"{css} to be hidden", timeout)

    def text(self, css: str) -> str:
        """The rendered text of the first element `css` finds, read in one step: a panel that
        redraws between a look-up and a read would leave a stale element behind."""
        text = self.js(
            "const e = document.querySelector(arguments[0]); return e && e.innerText", css
        )
        if text is None:
            raise NoSuchElementException(f"no element matches {css}")
        return str(text)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    # -- pages ------------------------------------------------------------------------------

    def open(self) -> None:
        self.driver.get(self.base_url + "/")
        self.visible("#login-form, #console")

    def login(self, username: str, password: str) -> None:
        self.open()
        self.visible("#login-form")
        self.fill("#login-username", username)
        self.fill("#login-password", password)
        self.driver.find_element(By.ID, "login-submit").click()
        self.visible("#console")
        self.wait(lambda d: self.text("#conn-text") == "Live", "the WebSocket to be live")

    def fill(self, css: str, value: str) -> None:
        field = self.driver.find_element(By.CSS_SELECTOR, css)
        field.clear()
        field.send_keys(value)

    def click(self, css: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, css).click()

    def apply_filter(self, **fields: object) -> None:
        for name in ("protocol", "src_ip", "dst_ip", "port", "min_length", "max_length"):
            value = fields.get(name)
            self.fill(f"#f-{name}", "" if value is None else str(value))
        self.click("#filter-apply")
        expected = [f"{k}={v}".lower() for k, v in fields.items() if v not in (None, "")]

        def applied(d: WebDriver) -> bool:
            shown = self.text("#sb-filter").lower()
            return all(e in shown for e in expected) if expected else shown == "no filter"

        try:
            self.wait(applied, "the filter in the status bar", timeout=5)
        except TimeoutException:  # a click lost to a redraw under load: once more, no verdict
            self.click("#filter-apply")

    # -- the table --------------------------------------------------------------------------

    def rows(self) -> list[dict[str, str]]:
        """The rows drawn in the table, top to bottom."""
        rows: list[dict[str, str]] = self.js(
            """return [...document.querySelectorAll('#packet-viewport .rows .row')]
                 .filter((r) => !r.hidden)
                 .map((r) => {
                   const cell = (c) => r.querySelector(`.c-${c}`).textContent;
                   return {id: r.dataset.id, src: cell('src'), sport: cell('sport'),
                     dst: cell('dst'), dport: cell('dport'), proto: cell('proto'),
                     len: cell('len'), info: cell('info'), sensor: cell('sensor'),
                     cls: r.className};
                 });"""
        )
        return rows

    def rows_to(self, port: int) -> list[dict[str, str]]:
        return [r for r in self.rows() if r["dport"] == str(port)]

    def wait_rows_to(self, port: int, count: int, timeout: float = 15) -> list[dict[str, str]]:
        def enough(d: WebDriver) -> list[dict[str, str]] | None:
            rows = self.rows_to(port)
            return rows if len(rows) >= count else None

        return self.wait(enough, f"{count} rows to port {port}", timeout)

    # -- layout -----------------------------------------------------------------------------

    def resize(self, width: int, height: int) -> None:
        """Make the page `width` x `height` CSS pixels and wait until it has been laid out."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.wait(lambda d: self.js("return innerWidth") == width, f"a {width} px wide page")
        self.driver.execute_async_script(
            "const done = arguments[0];"
            "requestAnimationFrame(() => requestAnimationFrame(() => done()));"
        )

    def layout_problems(self, groups: dict[str, str]) -> list[str]:
        """What reads wrong among the visible elements of each group (a CSS selector list): one
        outside the viewport's width, cut by an ancestor that hides its overflow (a scrolling
        ancestor may hide it vertically: that is scrolling), a label cut short without an
        ellipsis, or two elements of one group overlapping."""
        problems: list[str] = self.js(LAYOUT_PROBLEMS, groups)
        return problems

    # -- evidence ---------------------------------------------------------------------------

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def assert_no_console_errors(self) -> None:
        """No script error and no Content-Security-Policy violation in the page's console
        (HTTP errors the console asked for and handled, like a 400 for a bad filter, are fine)."""
        entries = self.driver.get_log("browser")
        errors = [
            e["message"]
            for e in entries
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
        ]
        assert not errors, "browser console errors:\n" + "\n".join(errors)


LAYOUT_PROBLEMS = """
const groups = arguments[0];
const problems = [];
const width = document.documentElement.clientWidth;
const shown = (el) => {
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden'
    && el.closest('[hidden]') === null;
};
const name = (el) => el.id ? `#${el.id}`
  : `${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`
    + ` "${el.textContent.trim().slice(0, 24)}"`;
const box = (r) => [r.left, r.top, r.right, r.bottom].map(Math.round).join(',');
for (const [group, selector] of Object.entries(groups)) {
  const els = [...document.querySelectorAll(selector)].filter(shown);
  if (els.length === 0) problems.push(`${group}: nothing shown for ${selector}`);
  for (const el of els) {
    const r = el.getBoundingClientRect();
    if (r.left < -0.5 || r.right > width + 0.5) {
      problems.push(`${group}: ${name(el)} ${box(r)} outside the page width ${width}`);
    }
    for (let a = el.parentElement; a && a !== document.documentElement; a = a.parentElement) {
      const style = getComputedStyle(a);
      const ar = a.getBoundingClientRect();
      if (style.overflowX !== 'visible' && (r.left < ar.left - 0.5 || r.right > ar.right + 0.5)) {
        problems.push(`${group}: ${name(el)} ${box(r)} cut across by ${name(a)} ${box(ar)}`);
      }
      const hides = style.overflowY === 'hidden' || style.overflowY === 'clip';
      if (hides && (r.top < ar.top - 0.5 || r.bottom > ar.bottom + 0.5)) {
        problems.push(`${group}: ${name(el)} ${box(r)} cut off by ${name(a)} ${box(ar)}`);
      }
    }
    const cut = el.scrollWidth > el.clientWidth + 1 && !['INPUT', 'SELECT'].includes(el.tagName);
    if (cut && getComputedStyle(el).textOverflow !== 'ellipsis') {
      problems.push(`${group}: ${name(el)} text cut (${el.scrollWidth} px in ${el.clientWidth})`);
    }
  }
  for (let i = 0; i < els.length; i += 1) {
    for (let j = i + 1; j < els.length; j += 1) {
      const a = els[i].getBoundingClientRect();
      const b = els[j].getBoundingClientRect();
      const x = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const y = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (x > 0.5 && y > 0.5) {
        problems.push(`${group}: ${name(els[i])} ${box(a)} overlaps ${name(els[j])} ${box(b)}`);
      }
    }
  }
}
return problems;
"""
