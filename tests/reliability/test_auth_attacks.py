"""Forged, stale and misused credentials against a real sensor, on the WebSocket and on a REST
endpoint: every one refused the documented way, and none of them ever written to the log.

What test_websocket.py and test_api.py already assert is not repeated here: on the WebSocket,
garbage, `alg: none` with an empty signature, a 10 000-character token, an expired token and a
replayed ticket; on REST, a refresh token used as an access token and the token of a user removed
with DELETE /api/users/{id}."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from leireye.accounts.tokens import load_or_create_secret
from leireye.accounts.users import load_users
from leireye.config import load_config
from leireye.wire import CloseCode
from tests.http import Http
from tests.reliability.live import ROOT_ONLY, cli_token, login, start
from tests.sensor import Sensor
from tests.waiting import wait_for
from tests.wsclient import client, closed_with, recv, run, send

pytestmark = ROOT_ONLY

USERS = {"admin": "ADMIN", "vic": "VIEWER", "gone": "VIEWER"}
INVALID = {"type": "auth_error", "message": "Invalid or expired token"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """header.payload.signature, signed with HMAC-SHA256 over `key` (no checks on the key: PyJWT
    refuses a PEM as an HMAC secret, which is exactly the forgery being tried)."""
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = b"" if key is None else hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(mac)}"


class Forge:
    """Tokens for the sensor's users: genuine, and every kind of forgery."""

    def __init__(self, sensor: Sensor) -> None:
        config = load_config(sensor.config_path)
        self.secret = load_or_create_secret(config)
        users = load_users(config.state_path(config.auth.users_file))
        self.generations = {user.username: user.generation for user in users}
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_private = private
        self.rsa_public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def claims(self, user_id: int = 2, username: str = "vic", **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": str(user_id), "username": username, "role": USERS[username],
            "iat": now, "nbf": now, "exp": now + 600, "jti": f"j{now}", "typ": "access",
            "gen": self.generations.get(username, "x" * 22),
        }  # fmt: skip
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def hs256(self, claims: dict[str, Any], key: bytes | None = None) -> str:
        return compact({"alg": "HS256", "typ": "JWT"}, claims, key or self.secret)


def attacks(f: Forge) -> dict[str, str]:
    now = int(time.time())
    good = f.hs256(f.claims())
    head, payload, signature = good.split(".")
    admin_claims = b64(json.dumps(f.claims(role="ADMIN")).encode())
    return {
        "alg-none-with-real-signature": compact({"alg": "none"}, f.claims(), f.secret),
        "alg-none-rest": compact({"alg": "none", "typ": "JWT"}, f.claims(), None),
        "hs256-wrong-key": f.hs256(f.claims(), b"k" * 64),
        "hs256-signed-with-rsa-public-pem": f.hs256(f.claims(), f.rsa_public_pem),
        "rs256-header-hmac-with-pem": compact({"alg": "RS256"}, f.claims(), f.rsa_public_pem),
        "rs256-signed": jwt.encode(f.claims(), f.rsa_private, algorithm="RS256"),
        "expired-rest": f.hs256(f.claims(iat=now - 120, nbf=now - 120, exp=now - 60)),
        "nbf-in-the-future": f.hs256(f.claims(nbf=now + 300, exp=now + 900)),
        "iat-in-the-future": f.hs256(f.claims(iat=now + 300, nbf=None, exp=now + 900)),
        "exp-as-a-string": f.hs256(f.claims(exp="9999999999")),
        "no-exp": f.hs256(f.claims(exp=None)),
        "tampered-role": f"{head}.{admin_claims}.{signature}",
        "truncated-signature": good[:-1],
        "truncated-to-two-parts": f"{head}.{payload}",
        "non-canonical-base64": good[:-1] + chr(ord(good[-1]) ^ 1),
        "oversized-but-signed": f.hs256(f.claims(pad="p" * 5000)),
        "unknown-user-id": f.hs256(f.claims(user_id=99)),
        "id-of-another-username": f.hs256(f.claims(user_id=1)),
        "no-generation": f.hs256(f.claims(gen=None)),
        "password-fingerprint-instead-of-generation": f.hs256(
            f.claims(gen=None, crd="0123456789abcdef")
        ),
        "generation-of-another-user": f.hs256(f.claims(gen=f.generations["admin"])),
        "refresh-kind": f.hs256(f.claims(typ="refresh")),
        "unknown-kind": f.hs256(f.claims(typ="ticket")),
        # JSON in UTF-16/32, signed: `json.loads` takes it (it detects the encoding), and
        # imports that codec on first use, after the worker dropped its privileges.
        "utf-16-header": encoded(f, "utf-16-le", header=True),
        "utf-32-payload": encoded(f, "utf-32-be", header=False),
    }


def encoded(f: Forge, codec: str, *, header: bool) -> str:
    head = json.dumps({"alg": "HS256", "typ": "JWT"}).encode(codec if header else "utf-8")
    body = json.dumps(f.claims()).encode("utf-8" if header else codec)
    signing = f"{b64(head)}.{b64(body)}"
    mac = hmac.new(f.secret, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(mac)}"


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    # The access log on (it is off by default): the worst case for a token in a URL, and the
    # lines `assert_not_logged` waits for.
    s = start(tmp_path_factory.mktemp("auth"), "udp and dst port 9", USERS,
              "web: {port: 0, workers: 2, access_log: true}\n")  # fmt: skip
    yield s
    s.kill()


def ws_url(sensor: Sensor) -> str:
    return f"ws://127.0.0.1:{sensor.web_port()}/ws/capture"


async def ws_verdict(sensor: Sensor, token: str, as_message: bool) -> tuple[str, int | None]:
    """(first message type, close code or None while open) for a token on the WebSocket."""
    url = ws_url(sensor)
    async with client(url if as_message else f"{url}?token={token}") as ws:
        if as_message:
            await send(ws, type="auth", token=token)
        first = await recv(ws)
        if first["type"] == "auth_success":
            return "auth_success", None
        assert first == INVALID
        code, _ = await closed_with(ws)
        return first["type"], code


def rest_verdict(sensor: Sensor, token: str) -> tuple[int, str]:
    reply = Http(sensor.web_port(), token).get("/api/auth/me")
    return reply.status, reply.json.get("error_code", "") if reply.status != 200 else ""


def test_genuine_tokens_work_on_both_so_the_refusals_mean_something(sensor: Sensor) -> None:
    forge = Forge(sensor)
    for token in (forge.hs256(forge.claims()), cli_token(sensor, "vic")):
        assert run(ws_verdict(sensor, token, as_message=False)) == ("auth_success", None)
        assert run(ws_verdict(sensor, token, as_message=True)) == ("auth_success", None)
        assert rest_verdict(sensor, token) == (200, "")


def test_every_forgery_is_refused_on_the_websocket_and_rest(sensor: Sensor) -> None:
    forged = attacks(Forge(sensor))
    refused_ws: dict[str, tuple[str, int | None]] = {}
    refused_rest: dict[str, tuple[int, str]] = {}
    for i, (name, token) in enumerate(forged.items()):
        refused_ws[name] = run(ws_verdict(sensor, token, as_message=i % 2 == 0))
        refused_rest[name] = rest_verdict(sensor, token)
    assert refused_ws == dict.fromkeys(forged, ("auth_error", CloseCode.AUTH_FAILED))
    assert refused_rest == dict.fromkeys(forged, (401, "INVALID_TOKEN"))
    assert_not_logged(sensor, forged.values())


def test_tokens_of_a_user_removed_from_the_shell_stop_working(sensor: Sensor) -> None:
    pair = login(sensor, "gone")
    script_token = cli_token(sensor, "gone")
    tokens = [pair["access_token"], script_token]
    for token in tokens:
        assert run(ws_verdict(sensor, token, as_message=False))[0] == "auth_success"
    cmd = [sys.executable, "-m", "leireye.cli", "user", "remove", "gone"]
    done = subprocess.run([*cmd, "-c", str(sensor.config_path)], capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for token in tokens:
        assert run(ws_verdict(sensor, token, as_message=True)) == ("auth_error", 4001)
        assert rest_verdict(sensor, token) == (401, "INVALID_TOKEN")
    refresh = Http(sensor.web_port()).post(
        "/api/auth/refresh", {"refresh_token": pair["refresh_token"]}
    )
    assert refresh.status == 401
    ticket = Http(sensor.web_port(), login(sensor, "vic")["access_token"]).post("/api/auth/ticket")
    assert ticket.status == 200  # the others are unaffected
    assert_not_logged(sensor, [*tokens, pair["refresh_token"]])


def test_refresh_tokens_and_tickets_are_not_access_tokens(sensor: Sensor) -> None:
    pair = login(sensor, "vic")
    api = Http(sensor.web_port(), pair["access_token"])
    ticket = api.post("/api/auth/ticket").json["ticket"]
    # A refresh token does not open the WebSocket (on REST: test_api).
    for as_message in (False, True):
        verdict = run(ws_verdict(sensor, pair["refresh_token"], as_message))
        assert verdict == ("auth_error", CloseCode.AUTH_FAILED)
    # A ticket is not a bearer token, nor a `?token=`, nor an `auth` message...
    assert rest_verdict(sensor, ticket) == (401, "INVALID_TOKEN")
    assert run(ws_verdict(sensor, ticket, as_message=False)) == ("auth_error", 4001)
    assert run(ws_verdict(sensor, ticket, as_message=True)) == ("auth_error", 4001)
    # ... and an access token is not a ticket.
    assert run(ticket_verdict(sensor, pair["access_token"])) == ("auth_error", 4001)
    # The ticket was not spent by those attempts: it still opens one WebSocket, once.
    assert run(ticket_verdict(sensor, ticket)) == ("auth_success", None)
    assert run(ticket_verdict(sensor, ticket)) == ("auth_error", 4001)
    assert_not_logged(sensor, [pair["refresh_token"], pair["access_token"], ticket])


async def ticket_verdict(sensor: Sensor, ticket: str) -> tuple[str, int | None]:
    async with client(f"{ws_url(sensor)}?ticket={ticket}") as ws:
        first = await recv(ws)
        if first["type"] == "auth_success":
            return "auth_success", None
        code, _ = await closed_with(ws)
        return first["type"], code


def test_a_ticket_replayed_concurrently_opens_one_socket(sensor: Sensor) -> None:
    """Ten connections race with one ticket: exactly one is let in."""
    ticket = Http(sensor.web_port(), login(sensor, "vic")["access_token"]).post("/api/auth/ticket")

    async def race() -> list[tuple[str, int | None]]:
        return list(await asyncio.gather(*(ticket_verdict(sensor, ticket.json["ticket"])
                                           for _ in range(10))))  # fmt: skip

    verdicts = run(race())
    assert sorted(verdicts, key=str) == sorted(
        [("auth_success", None)] + [("auth_error", 4001)] * 9, key=str
    )


def assert_not_logged(sensor: Sensor, secrets: Any) -> None:
    """None of `secrets` (nor their payload or signature parts) is in the log, once the log has
    caught up: marker requests, spread over the workers, must show up in it first."""
    markers = [f"/health?marker={uuid.uuid4().hex}" for _ in range(6)]
    for marker in markers:
        Http(sensor.web_port()).get(marker)
    wait_for(lambda: all(m in sensor.log for m in markers), 10, "the log to catch up")
    log = sensor.log
    for secret in secrets:
        # The parts that are secret on their own: a JWT's payload and signature, a ticket's
        # nonce and MAC (not its expiry or user id, numbers any log line may hold).
        parts = [p for p in secret.split(".")[1:] if len(p) >= 16]
        for part in {secret, *parts}:
            assert part not in log, f"a credential reached the log: {part[:24]}..."
