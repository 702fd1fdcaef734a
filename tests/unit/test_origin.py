"""The Origin check of the WebSocket handshake."""

from __future__ import annotations

import pytest

from leireye.origins import parse_origin
from leireye.web.origin import origin_allowed

HOST = "localhost:8000"


@pytest.mark.parametrize("scheme", ["ws", "wss", "http", "https"])
def test_no_origin_is_a_script_and_allowed(scheme: str) -> None:
    assert origin_allowed(None, HOST, (), scheme)
    assert origin_allowed(None, None, (), scheme)


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "ok"),
    [
        ("http://localhost:8000", "localhost:8000", "ws", True),
        ("http://localhost:8000", "localhost:8000", "http", True),
        ("HTTP://LocalHost:8000", "LOCALHOST:8000", "ws", True),
        ("http://localhost:8000", "127.0.0.1:8000", "ws", False),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws", True),
        ("http://localhost:8001", "localhost:8000", "ws", False),
        ("https://localhost:8000", "localhost:8000", "ws", False),
        ("https://localhost:8000", "localhost:8000", "wss", True),
        ("http://localhost:8000", "localhost:8000", "wss", False),
        ("http://sensor", "sensor:80", "ws", True),
        ("http://sensor:80", "sensor", "ws", True),
        ("https://sensor", "sensor:443", "wss", True),
        ("https://sensor:443", "sensor", "https", True),
        ("http://sensor", "sensor:443", "wss", False),
        ("http://[::1]:8000", "[::1]:8000", "ws", True),
        ("http://[::1]:8000", "[0:0:0:0:0:0:0:1]:8000", "ws", True),
        ("http://[::1]:8000", "[::1]:8001", "ws", False),
        ("http://[::1]", "[::1]", "ws", True),
        ("http://[::1]:8000", "localhost:8000", "ws", False),
        ("http://[::2]:8000", "[::1]:8000", "ws", False),
        ("https://evil.example", "localhost:8000", "ws", False),
        ("http://localhost:8000.evil.example", "localhost:8000", "ws", False),
        ("http://localhost:8000", None, "ws", False),
        ("http://localhost:8000", "", "ws", False),
        ("http://localhost:8000", "localhost:8000/x", "ws", False),
        ("http://localhost:8000", "user@localhost:8000", "ws", False),
        ("http://localhost:8000", "localhost:8000", "ftp", False),
    ],
)
def test_same_origin(origin: str, host: str | None, scheme: str, ok: bool) -> None:
    assert origin_allowed(origin, host, (), scheme) is ok


@pytest.mark.parametrize(
    "origin",
    [
        "null",
        "NULL",
        "",
        " ",
        "localhost:8000",
        "//localhost:8000",
        "http://localhost:8000/",
        "http://localhost:8000/app",
        "http://localhost:8000?x",
        "http://localhost:8000#x",
        "http://user@localhost:8000",
        "http://user:pw@localhost:8000",
        "http://localhost:",
        "http://localhost:99999",
        "http://localhost:port",
        "http://",
        "http://local\thost:8000",
        "http://local host:8000",
        "http://localhost:8000\n",
        "ftp://localhost:8000",
        "file://",
        "chrome-extension://abc",
        "http://[::1:8000",
        "http://[zz::1]:8000",
    ],
)
def test_malformed_and_null_origins_are_refused(origin: str) -> None:
    assert not origin_allowed(origin, HOST, (), "ws")
    assert not origin_allowed(origin, HOST, ("*",), "ws")  # "*" means any *real* origin


def test_the_allow_list() -> None:
    allowed = ("https://dash.example", "http://LOCALHOST:3000", "http://[::1]:3000")
    assert origin_allowed("https://dash.example", HOST, allowed, "ws")
    assert origin_allowed("https://dash.example:443", HOST, allowed, "ws")
    assert origin_allowed("https://DASH.example", HOST, allowed, "ws")
    assert origin_allowed("http://localhost:3000", HOST, allowed, "ws")
    assert origin_allowed("http://[::1]:3000", HOST, allowed, "ws")
    assert origin_allowed("http://[0::1]:3000", HOST, allowed, "ws")
    assert not origin_allowed("http://dash.example", HOST, allowed, "ws")
    assert not origin_allowed("https://dash.example:8443", HOST, allowed, "ws")
    assert not origin_allowed("https://evil.example", HOST, allowed, "ws")
    assert not origin_allowed("https://dash.example.evil.example", HOST, allowed, "ws")
    assert not origin_allowed("https://evil.example", HOST, ["https://dash.example/"], "ws")


def test_the_wildcard_allows_any_real_origin() -> None:
    assert origin_allowed("https://evil.example", HOST, ("*",), "ws")
    assert origin_allowed("http://[::1]:1", HOST, ["https://x.example", "*"], "wss")


def test_parse_origin() -> None:
    assert parse_origin("https://Example.COM") == ("https", "example.com", 443)
    assert parse_origin("http://example.com:8080") == ("http", "example.com", 8080)
    assert parse_origin("http://[0:0::1]:80") == ("http", "::1", 80)
    assert parse_origin("http://127.0.0.1") == ("http", "127.0.0.1", 80)
    assert parse_origin("https://example.com/") is None
