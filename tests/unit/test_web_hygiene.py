"""The pure parts of the web tier's HTTP hygiene: which `Host` headers are the sensor's, which
peers' forwarding headers are believed, the guard middleware that applies both (called as an
ASGI app, no server), `/health`'s verdict and the configuration keys."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from leireye.config import parse_config
from leireye.errors import ConfigError
from leireye.ring.status import CaptureState, CaptureStatus
from leireye.web.guard import RequestGuard
from leireye.web.hosts import HostPolicy, host_name
from leireye.web.hub import health_word
from leireye.web.proxies import (
    forwarded_client,
    forwarded_scheme,
    parse_address,
    trusted_networks,
)

# -- Host ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Example.ORG", "example.org"),
        ("example.org.", "example.org"),
        ("example.org:8000", "example.org"),
        ("example.org:", "example.org"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:8000", "::1"),
        ("[0:0::1]", "::1"),
        ("[::1", None),
        ("[::1]x", None),
        ("[nothost]", None),
        ("::1", None),
        ("example.org:80:80", None),
        ("example.org:http", None),
        ("exa mple.org", None),
        ("user@example.org", None),
        ("example.org/path", None),
        ("", None),
        ("a..b", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name


OWN = ["127.0.0.1", "sensor-7", "sensor-7.lab.example"]


@pytest.mark.parametrize(
    "header",
    [None, "127.0.0.1:8000", "10.0.0.5", "[::1]:8000", "[fe80::1]", "localhost", "LOCALHOST:80",
     "app.localhost", "sensor-7", "Sensor-7:8000", "sensor-7.lab.example.", "console.example",
     "team.example", "a.team.example"],
)  # fmt: skip
def test_own_names_addresses_and_listed_hosts_are_allowed(header: str | None) -> None:
    policy = HostPolicy.build(["console.example", ".team.example"], OWN)
    assert policy.allows(header)


@pytest.mark.parametrize(
    "header",
    ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "sensor-7.evil.example",
     "evil-team.example", "notlocalhost", "console.example.evil", "2130706433x", "", "[::1",
     "evil.example:8000"],
)  # fmt: skip
def test_foreign_and_malformed_hosts_are_refused(header: str) -> None:
    policy = HostPolicy.build(["console.example", ".team.example"], OWN)
    assert not policy.allows(header)


def test_a_star_allows_any_host() -> None:
    policy = HostPolicy.build(["*"], OWN)
    assert policy.allows("evil.example") and policy.allows("[::1")


# -- proxies ---------------------------------------------------------------------------------

PROXIES = trusted_networks(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("text", "address"),
    [("1.2.3.4", "1.2.3.4"), (" 1.2.3.4:5678 ", "1.2.3.4"), ("::1", "::1"),
     ("[::1]:80", "::1"), ("::ffff:10.1.2.3", "10.1.2.3"), ("unknown", None),
     ("_hidden", None), ("", None), ("1.2.3.4.5", None)],
)  # fmt: skip
def test_parse_address(text: str, address: str | None) -> None:
    parsed = parse_address(text)
    assert (None if parsed is None else str(parsed)) == address


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # Not a trusted proxy: whatever it says, the peer is the client.
        ("203.0.113.9", ["198.51.100.1"], None),
        ("192.168.1.1", ["10.0.0.1"], None),
        # A trusted proxy: the rightmost entry that is not a trusted proxy.
        ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        ("127.0.0.1", ["6.6.6.6, 198.51.100.1, 10.1.1.1"], "198.51.100.1"),
        ("127.0.0.1", ["6.6.6.6", "198.51.100.1, 10.1.1.1"], "198.51.100.1"),
        ("::ffff:127.0.0.1", ["198.51.100.1:4444"], "198.51.100.1"),
        ("fd00::1", ["[2001:db8::1]:80"], "2001:db8::1"),
        # Every hop trusted: the leftmost one is the client.
        ("127.0.0.1", ["10.2.2.2, 10.1.1.1"], "10.2.2.2"),
        # Garbage ends the walk at the hop that passed it on.
        ("127.0.0.1", ["unknown"], None),
        ("127.0.0.1", ["198.51.100.1, garbage, 10.1.1.1"], "10.1.1.1"),
        ("127.0.0.1", [], None),
        ("127.0.0.1", [""], None),
    ],
)
def test_forwarded_client(peer: str, forwarded_for: list[str], client: str | None) -> None:
    assert forwarded_client(peer, forwarded_for, PROXIES) == client


def test_no_trusted_proxies_means_no_forwarding_header_is_believed() -> None:
    assert forwarded_client("127.0.0.1", ["198.51.100.1"], ()) is None
    assert forwarded_scheme("127.0.0.1", ["https"], (), websocket=False) is None


@pytest.mark.parametrize(
    ("peer", "proto", "websocket", "scheme"),
    [
        ("127.0.0.1", ["https"], False, "https"),
        ("127.0.0.1", ["HTTPS "], True, "wss"),
        ("127.0.0.1", ["wss"], False, "https"),
        ("127.0.0.1", ["http"], True, "ws"),
        ("127.0.0.1", ["https, http"], False, None),
        ("127.0.0.1", ["https", "http"], False, None),
        ("127.0.0.1", ["gopher"], False, None),
        ("203.0.113.9", ["https"], False, None),
    ],
)
def test_forwarded_scheme(peer: str, proto: list[str], websocket: bool, scheme: str | None) -> None:
    assert forwarded_scheme(peer, proto, PROXIES, websocket) == scheme


# -- the guard, as an ASGI app ---------------------------------------------------------------


def guarded(
    headers: dict[str, str], peer: str = "127.0.0.1", kind: str = "http", proxies: Any = ()
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the scope the app saw or None, what was sent) for one request through RequestGuard."""
    seen: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": kind, "client": (peer, 5555), "scheme": "ws" if kind == "websocket" else "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "extensions": {"websocket.http.response": {}},
    }  # fmt: skip
    guard = RequestGuard(app, HostPolicy.build([], ["127.0.0.1"]), trusted_networks(proxies))
    asyncio.run(guard(scope, receive, send))
    return (seen[0] if seen else None), sent


def test_the_guard_strips_forwarding_headers_of_an_untrusted_peer() -> None:
    headers = {"Host": "127.0.0.1", "X-Forwarded-For": "198.51.100.1", "Forwarded": "for=x",
               "X-Forwarded-Proto": "https", "X-Real-IP": "1.1.1.1", "Accept": "*/*"}  # fmt: skip
    scope, _ = guarded(headers)
    assert scope is not None
    assert scope["client"] == ("127.0.0.1", 5555) and scope["scheme"] == "http"
    assert scope["headers"] == [(b"host", b"127.0.0.1"), (b"accept", b"*/*")]


@pytest.mark.parametrize("kind", ["http", "websocket"])
def test_the_guard_believes_a_trusted_proxy(kind: str) -> None:
    headers = {"Host": "127.0.0.1", "X-Forwarded-For": "198.51.100.1", "X-Forwarded-Proto": "https"}
    scope, _ = guarded(headers, kind=kind, proxies=["127.0.0.1"])
    assert scope is not None
    assert scope["client"] == ("198.51.100.1", 0)
    assert scope["scheme"] == ("wss" if kind == "websocket" else "https")


@pytest.mark.parametrize("kind", ["http", "websocket"])
@pytest.mark.parametrize("hosts", [["evil.example"], ["127.0.0.1", "evil.example"], ["[::1"]])
def test_the_guard_answers_a_foreign_host_with_400(kind: str, hosts: list[str]) -> None:
    headers = [("host", h) for h in hosts]
    seen: list[Any] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {}

    scope = {"type": kind, "client": ("127.0.0.1", 1), "scheme": "http", "extensions": {},
             "headers": [(k.encode(), v.encode()) for k, v in headers]}  # fmt: skip
    guard = RequestGuard(app, HostPolicy.build([], ["127.0.0.1"]), ())
    asyncio.run(guard(scope, receive, send))
    assert not seen
    prefix = "websocket." if kind == "websocket" else ""
    assert [m["type"] for m in sent] == [
        f"{prefix}http.response.start",
        f"{prefix}http.response.body",
    ]
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error_code"] == "INVALID_HOST"


def test_the_guard_lets_lifespan_through() -> None:
    scope, sent = guarded({}, kind="lifespan")
    assert scope is not None and not sent


# -- /health and the configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "word"),
    [(None, "unhealthy"), (CaptureState.ERROR, "unhealthy"), (CaptureState.CAPTURING, "ok"),
     (CaptureState.STOPPED, "ok"), (CaptureState.FINISHED, "ok"), (CaptureState.IDLE, "ok")],
)  # fmt: skip
def test_health_word(state: CaptureState | None, word: str) -> None:
    status = None if state is None else CaptureStatus(state=state)
    assert health_word(status) == word


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ({"trusted_proxies": ["10.0.0.0/8", "nginx"]}, r"web\.trusted_proxies\[1\]"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, r"web\.trusted_proxies\[0\]"),
        ({"allowed_hosts": ["https://console.example"]}, r"web\.allowed_hosts\[0\]"),
        ({"allowed_hosts": ["a.example", "a.example:8000"]}, r"web\.allowed_hosts\[1\]"),
        ({"header_timeout_s": 0}, r"\$\.web\.header_timeout_s"),
        ({"max_connections": 0}, r"\$\.web\.max_connections"),
    ],
)
def test_bad_hygiene_keys_name_the_key(web: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"web": web})


def test_good_hygiene_keys() -> None:
    web = parse_config(
        {"web": {"trusted_proxies": ["10.0.0.0/8", "::1", "192.168.1.7"],
                 "allowed_hosts": ["*", "console.example", ".team.example", "10.1.2.3"]}}
    ).web  # fmt: skip
    assert web.trusted_proxies == ("10.0.0.0/8", "::1", "192.168.1.7")
    assert (web.header_timeout_s, web.body_timeout_s, web.max_connections) == (10.0, 30.0, 512)
