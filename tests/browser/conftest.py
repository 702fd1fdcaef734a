"""Fixtures of the browser tests: a real `leireye run` capturing on `lo`, users with passwords,
and a headless Debian Chromium driven by Selenium (no browser download)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.accounts import users_yaml
from tests.browser.console import CHROMEDRIVER, CHROMIUM, Console
from tests.sensor import Sensor

# The flags of FIELD-NOTES.md: without the background-networking ones Chromium keeps trying
# hosts that this closed network refuses.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
)
PORTS = (48000, 48999)  # the sensor captures UDP to these ports only
PASSWORDS = {"admin": "admin-pass-1", "ana": "analyst-pass-1", "vic": "viewer-pass-1"}
ROLES = {"admin": "ADMIN", "ana": "ANALYST", "vic": "VIEWER"}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def users_file() -> str:
    return users_yaml({name: (ROLES[name], password) for name, password in PASSWORDS.items()})


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    tmp = tmp_path_factory.mktemp("browser")
    bpf = f"udp and dst portrange {PORTS[0]}-{PORTS[1]}"
    # Access tokens of 10 s: the console renews them (and re-authenticates its WebSocket) every
    # 7.5 s throughout the tests.
    config = (
        "web: {port: 0, workers: 1}\nauth: {access_ttl_s: 10, login_failures_per_address: 1000}\n"
        "history: {flush_s: 2}\n"  # the flow store's files (hosts, names) every 2 s
        "flows: {idle_timeout_s: {udp: 5}}\n"  # the tests' UDP flows end (and are stored) soon
    )
    s = Sensor(tmp, "--interface", "lo", "--bpf", bpf, config=config, users=users_file())
    s.web_port()
    s.wait_capturing(s.status())
    yield s
    s.kill()


@pytest.fixture
def console(sensor: Sensor, request: pytest.FixtureRequest) -> Iterator[Console]:
    with console_page(f"http://127.0.0.1:{sensor.web_port()}", request) as page:
        yield page


@contextlib.contextmanager
def console_page(base_url: str, request: pytest.FixtureRequest, *flags: str) -> Iterator[Console]:
    """A fresh headless Chromium on `base_url`, with `flags` besides CHROMIUM_FLAGS; a failed
    test leaves a screenshot, and any error in the browser's console fails it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="leireye-chromium-"))
    downloads = profile / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, *flags):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile / 'profile'}")
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    # --window-size includes the window's frame: make the page itself 1280x800.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = Console(driver, base_url, SCREENSHOTS, downloads)
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            page.screenshot(f"FAILED-{request.node.name}")
        try:
            page.assert_no_console_errors()
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    # Keep each phase's report on the test item, so the fixture can screenshot a failure.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


PortMaker = Callable[[], int]


@pytest.fixture(scope="module")
def udp_port() -> PortMaker:
    ports = iter(range(PORTS[0], PORTS[1]))
    return lambda: next(ports)
