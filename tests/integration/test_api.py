"""The REST API against a real `leireye run`: 2 workers, live capture on `lo`, a real HTTP
client, real WebSocket clients, and real tshark/tcpdump reading the exports."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leireye.wire import CloseCode
from tests.accounts import users_yaml
from tests.http import Http, assert_error
from tests.sensor import Sensor, send_udp
from tests.waiting import scaled, wait_for
from tests.wsclient import client, closed_with, recv, recv_type, run

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture needs root"),
]

PORTS = (48000, 48999)
BPF = f"udp and dst portrange {PORTS[0]}-{PORTS[1]}"
PASSWORDS = {"admin": "admin-pass-1", "ana": "analyst-pass-2", "vic": "viewer-pass-3"}
ROLES = {"admin": "ADMIN", "ana": "ANALYST", "vic": "VIEWER"}
_ports = iter(range(PORTS[0], PORTS[1]))


def start_sensor(tmp: Path, config: str = "") -> Sensor:
    base = "auth: {ticket_ttl_s: 2}\nweb: {port: 0, workers: 2}\n"
    users = users_yaml({name: (ROLES[name], password) for name, password in PASSWORDS.items()})
    s = Sensor(tmp, "--interface", "lo", "--bpf", BPF, config=base + config, users=users)
    s.web_port()
    s.wait_capturing(s.status())
    return s


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    s = start_sensor(tmp_path_factory.mktemp("api"))
    yield s
    s.kill()


@pytest.fixture(scope="module")
def tokens(sensor: Sensor) -> dict[str, dict[str, Any]]:
    http = Http(sensor.web_port())
    found = {}
    for name, password in PASSWORDS.items():
        reply = http.post("/api/auth/login", {"username": name, "password": password})
        assert reply.status == 200, reply.body
        found[name] = reply.json
    return found


def as_user(sensor: Sensor, tokens: dict[str, dict[str, Any]], name: str) -> Http:
    return Http(sensor.web_port(), tokens[name]["access_token"])


# -- accounts -----------------------------------------------------------------------------------


def test_login_gives_bearer_tokens_that_open_the_api(sensor: Sensor, tokens: Any) -> None:
    pair = tokens["ana"]
    assert pair["token_type"] == "bearer" and pair["expires_in"] == 1800
    assert pair["access_token"] != pair["refresh_token"]
    me = as_user(sensor, tokens, "ana").get("/api/auth/me")
    assert me.status == 200
    assert {k: me.json[k] for k in ("id", "username", "role")} == {
        "id": 2, "username": "ana", "role": "ANALYST"
    }  # fmt: skip
    # A refresh token is not an access token.
    refresh_as_access = Http(sensor.web_port(), pair["refresh_token"]).get("/api/auth/me")
    assert_error(refresh_as_access, 401, "INVALID_TOKEN")


def test_failed_login_never_says_whether_the_user_exists(sensor: Sensor) -> None:
    http = Http(sensor.web_port())
    wrong = http.post("/api/auth/login", {"username": "vic", "password": "not-it-at-all"})
    nobody = http.post("/api/auth/login", {"username": "nosuch", "password": "not-it-at-all"})
    a = assert_error(wrong, 401, "INVALID_CREDENTIALS")
    b = assert_error(nobody, 401, "INVALID_CREDENTIALS")
    assert a["detail"] == b["detail"]
    assert "not-it-at-all" not in sensor.log


def test_errors_have_one_shape(sensor: Sensor, tokens: Any) -> None:
    anon = Http(sensor.web_port())
    admin = as_user(sensor, tokens, "admin")
    assert_error(anon.get("/api/capture/status"), 401, "AUTH_REQUIRED")
    assert_error(anon.with_token("forged.token.x").get("/api/capture/status"), 401, "INVALID_TOKEN")
    assert_error(admin.get("/api/no/such/thing"), 404, "NOT_FOUND")
    assert_error(admin.request("DELETE", "/api/capture/status"), 405, "METHOD_NOT_ALLOWED")
    assert_error(admin.post("/api/auth/login", raw=b"{not json"), 400, "BAD_REQUEST")
    assert_error(admin.post("/api/auth/login", {"username": 5}), 422, "VALIDATION_ERROR")
    big = json.dumps({"username": "x", "password": "y" * 70_000}).encode()
    assert_error(admin.post("/api/auth/login", raw=big), 413, "PAYLOAD_TOO_LARGE")
    assert_error(admin.get("/api/capture/packets/999999999999"), 404, "NOT_FOUND")


def test_refresh_rotates_and_logout_revokes(sensor: Sensor) -> None:
    http = Http(sensor.web_port())
    pair = http.post("/api/auth/login", {"username": "vic", "password": PASSWORDS["vic"]}).json
    renewed = http.post("/api/auth/refresh", {"refresh_token": pair["refresh_token"]})
    assert renewed.status == 200
    new = renewed.json
    assert new["refresh_token"] != pair["refresh_token"]
    reused = http.post("/api/auth/refresh", {"refresh_token": pair["refresh_token"]})
    assert_error(reused, 401, "INVALID_TOKEN")
    me = http.with_token(new["access_token"])
    assert me.post("/api/auth/logout", {"refresh_token": new["refresh_token"]}).status == 204
    after = http.post("/api/auth/refresh", {"refresh_token": new["refresh_token"]})
    assert_error(after, 401, "INVALID_TOKEN")


def test_ticket_opens_one_websocket_once(sensor: Sensor, tokens: Any) -> None:
    http = as_user(sensor, tokens, "vic")
    url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture"

    async def use(ticket: str) -> dict[str, Any]:
        async with client(f"{url}?ticket={ticket}") as ws:
            first = await recv(ws)
            if first["type"] != "auth_success":
                code, _ = await closed_with(ws)
                first["close"] = code
            return first

    reply = http.post("/api/auth/ticket")
    assert reply.status == 200 and reply.json["expires_in"] == 2
    ticket = reply.json["ticket"]
    ok = run(use(ticket))
    assert ok["type"] == "auth_success" and ok["user"]["username"] == "vic"
    again = run(use(ticket))
    assert again["type"] == "auth_error" and again["close"] == CloseCode.AUTH_FAILED
    issued = time.monotonic()
    stale = http.post("/api/auth/ticket").json["ticket"]
    time.sleep(max(0.0, issued + 2.3 - time.monotonic()))  # the passing of its 2 s lifetime
    late = run(use(stale))
    assert late["type"] == "auth_error"
    assert ticket not in sensor.log and stale not in sensor.log


# -- roles --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "least"),
    [
        ("GET", "/api/capture/status", "VIEWER"),
        ("GET", "/api/capture/packets?limit=1", "VIEWER"),
        ("GET", "/api/stats/summary", "VIEWER"),
        ("GET", "/api/stats/timeline", "VIEWER"),
        ("GET", "/api/export/packets?format=json&limit=1", "ANALYST"),
        ("GET", "/api/capture/interfaces", "ADMIN"),
        ("POST", "/api/capture/stop", "ADMIN"),
        ("GET", "/api/users", "ADMIN"),
    ],
)
def test_roles_are_enforced(
    sensor: Sensor, tokens: Any, method: str, path: str, least: str
) -> None:
    rank = ["vic", "ana", "admin"]
    needed = rank.index({"VIEWER": "vic", "ANALYST": "ana", "ADMIN": "admin"}[least])
    for index, name in enumerate(rank):
        http = as_user(sensor, tokens, name)
        if method == "POST":  # do not actually stop the capture: a lower role only
            if index >= needed:
                continue
            reply = http.post(path)
        else:
            reply = http.get(path)
        if index < needed:
            assert_error(reply, 403, "FORBIDDEN")
        else:
            assert reply.status == 200, (name, path, reply.body)


# -- data ---------------------------------------------------------------------------------------


def wait_packets(http: Http, query: str, count: int) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        reply = http.get(f"/api/capture/packets?{query}")
        assert reply.status == 200, reply.body
        found: list[dict[str, Any]] = reply.json["packets"]
        return found if len(found) >= count else None

    result: list[dict[str, Any]] = wait_for(enough, 20, f"{count} packets for {query}")
    return result


def test_packets_newest_first_with_filters_and_details(sensor: Sensor, tokens: Any) -> None:
    port = next(_ports)
    send_udp(port, 5, payload=b"leireye-api")
    analyst = as_user(sensor, tokens, "ana")
    found = wait_packets(analyst, f"port={port}&limit=50", 5)
    assert len(found) == 5
    ids = [p["id"] for p in found]
    assert ids == sorted(ids, reverse=True)
    assert all(p["dst_port"] == port and p["protocol"] == "UDP" for p in found)
    page = analyst.get(f"/api/capture/packets?port={port}&limit=2").json
    assert [p["id"] for p in page["packets"]] == ids[:2] and page["next_before"] == ids[1]
    older = analyst.get(f"/api/capture/packets?port={port}&limit=10&before={ids[1]}").json
    assert [p["id"] for p in older["packets"]] == ids[2:]

    detail = analyst.get(f"/api/capture/packets/{ids[0]}")
    assert detail.status == 200
    body = detail.json
    layers = {layer["layer"]: layer for layer in body["layers"]}
    assert {"Ethernet", "IPv4", "UDP"} <= set(layers)
    assert layers["UDP"]["fields"]["dst_port"] == port
    assert bytes.fromhex(body["raw_hex"]).endswith(b"leireye-api")
    assert body["summary"]["id"] == ids[0] and body["wire_length"] == found[0]["length"]

    bad = analyst.get("/api/capture/packets?port=99999")
    assert "port" in assert_error(bad, 400, "INVALID_FILTER")["detail"]
    assert_error(analyst.get("/api/capture/packets?prot=UDP"), 400, "INVALID_FILTER")


def test_pcap_export_reads_back_in_tshark_and_tcpdump(
    sensor: Sensor, tokens: Any, tmp_path: Path
) -> None:
    if not (shutil.which("tshark") and shutil.which("tcpdump")):
        pytest.skip("tshark and tcpdump are installed by scripts/setup.sh")
    port = next(_ports)
    send_udp(port, 20, payload=b"export-me")
    analyst = as_user(sensor, tokens, "ana")
    listed = wait_packets(analyst, f"port={port}&limit=100", 20)
    reply = analyst.get(f"/api/export/packets?format=pcap&port={port}")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/vnd.tcpdump.pcap"
    assert "attachment" in reply.headers["content-disposition"]
    path = tmp_path / "export.pcap"
    path.write_bytes(reply.body)
    fields = ["-T", "fields", "-e", "udp.dstport", "-e", "frame.len", "-e", "ip.src"]
    out = subprocess.run(["tshark", "-r", str(path), *fields], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split("\n")  # fmt: skip
    rows = [line.split("\t") for line in out if line]
    assert len(rows) == 20
    assert {(int(r[0]), r[2]) for r in rows} == {(port, "127.0.0.1")}
    lengths = sorted(int(r[1]) for r in rows)
    assert lengths == sorted(p["length"] for p in listed)
    dump = subprocess.run(["tcpdump", "-r", str(path), "-n"], capture_output=True, text=True,
                          check=True, timeout=60).stdout  # fmt: skip
    assert dump.count(f"127.0.0.1.{port}:") == 20

    as_csv = analyst.get(f"/api/export/packets?format=csv&port={port}")
    table = list(csv.DictReader(io.StringIO(as_csv.body.decode())))
    assert [int(r["id"]) for r in table] == sorted(p["id"] for p in listed)
    as_json = analyst.get(f"/api/export/packets?format=json&port={port}&limit=5").json
    assert [p["id"] for p in as_json] == sorted(p["id"] for p in listed)[-5:]


def test_stats_endpoints(sensor: Sensor, tokens: Any) -> None:
    http = as_user(sensor, tokens, "vic")
    send_udp(next(_ports), 10)
    summary = wait_for(
        lambda: (r := http.get("/api/stats/summary").json)["packets_total"] >= 10 and r,
        20, "stats to count packets",
    )  # fmt: skip
    assert summary["is_capturing"] is True and summary["interface"] == "lo"
    protocols = http.get("/api/stats/protocols").json
    assert protocols["protocols"]["total"].get("UDP", 0) >= 10
    top = wait_for(  # the top tables cover complete seconds: wait for the next one
        lambda: (t := http.get("/api/stats/top").json)["sources"] and t, 20, "top sources"
    )
    assert any(entry["address"] == "127.0.0.1" for entry in top["sources"])
    assert {"window_s", "destinations", "ports"} <= set(top)
    timeline = http.get("/api/stats/timeline?interval=10s&metric=bytes&minutes=2").json
    assert timeline["interval"] == "10s" and timeline["metric"] == "bytes"
    assert all(point["t"] % 10 == 0 for point in timeline["points"])
    assert sum(point["value"] for point in timeline["points"]) > 0
    assert_error(http.get("/api/stats/timeline?interval=7s"), 400, "BAD_REQUEST")
    assert_error(http.get("/api/stats/timeline?metric=flows"), 400, "BAD_REQUEST")


def test_metrics_in_prometheus_format(sensor: Sensor, tokens: Any) -> None:
    anon = Http(sensor.web_port())
    assert_error(anon.get("/metrics"), 401, "AUTH_REQUIRED")
    reply = as_user(sensor, tokens, "vic").get("/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    for name in ("leireye_capture_packets_total", "leireye_ring_written_total"):
        assert re.search(rf"^{name} \d+", text, re.M), name
    assert re.search(r'^leireye_drops_total\{cause="kernel"\} \d+', text, re.M)
    for worker in ("0", "1"):
        assert re.search(
            rf'^leireye_web_messages_sent_total\{{worker="{worker}"\}} \d+', text, re.M
        )
        assert re.search(rf'^leireye_web_client_dropped_total\{{worker="{worker}"\}}', text, re.M)


# -- users --------------------------------------------------------------------------------------


def test_admin_manages_users(sensor: Sensor, tokens: Any) -> None:
    admin = as_user(sensor, tokens, "admin")
    created = admin.post("/api/users", {"username": "zed", "role": "VIEWER",
                                        "password": "zed-password-9"})  # fmt: skip
    assert created.status == 201, created.body
    zed_id = created.json["id"]
    assert created.json == {"id": zed_id, "username": "zed", "role": "VIEWER"}
    taken = {"username": "zed", "role": "VIEWER", "password": "zed-password-8"}
    assert_error(admin.post("/api/users", taken), 409, "CONFLICT")
    assert_error(admin.post("/api/users", {"username": "q", "role": "BOSS",
                                           "password": "q-password-1"}), 422,
                 "VALIDATION_ERROR")  # fmt: skip
    # Every user has a password: none given, none created.
    no_password = admin.post("/api/users", {"username": "q", "role": "VIEWER"})
    assert "password" in assert_error(no_password, 422, "VALIDATION_ERROR")["detail"]
    anon = Http(sensor.web_port())
    login = anon.post("/api/auth/login", {"username": "zed", "password": "zed-password-9"})
    assert login.status == 200
    zed = anon.with_token(login.json["access_token"])
    assert zed.get("/api/auth/me").json["role"] == "VIEWER"
    assert admin.request("PATCH", f"/api/users/{zed_id}", {"role": "ANALYST"}).status == 200
    assert zed.get("/api/auth/me").json["role"] == "ANALYST"  # the file decides, not the token
    listed = admin.get("/api/users").json["users"]
    assert {u["username"] for u in listed} >= {"admin", "ana", "vic", "zed"}
    assert all("password_hash" not in u and "salt" not in u for u in listed)
    assert admin.request("DELETE", f"/api/users/{zed_id}").status == 204
    assert_error(zed.get("/api/auth/me"), 401, "INVALID_TOKEN")
    refresh = anon.post("/api/auth/refresh", {"refresh_token": login.json["refresh_token"]})
    assert_error(refresh, 401, "INVALID_TOKEN")
    assert_error(admin.request("DELETE", f"/api/users/{zed_id}"), 404, "NOT_FOUND")
    assert_error(admin.request("DELETE", "/api/users/1"), 409, "CONFLICT")  # yourself


def test_a_user_removed_and_created_again_as_admin_gets_none_of_the_old_tokens(
    sensor: Sensor, tokens: Any
) -> None:
    """The finding: create a user, take a token, remove the user, create the same name again
    as ADMIN. The new user gets a new id, and the old token opens nothing, as ADMIN or not."""
    admin = as_user(sensor, tokens, "admin")
    anon = Http(sensor.web_port())
    body = {"username": "mallory", "role": "VIEWER", "password": "mallory-password-1"}
    first = admin.post("/api/users", body)
    assert first.status == 201, first.body
    login = anon.post("/api/auth/login", {"username": "mallory", "password": body["password"]})
    assert login.status == 200, login.body
    old = anon.with_token(login.json["access_token"])
    assert old.get("/api/auth/me").json["role"] == "VIEWER"
    assert admin.request("DELETE", f"/api/users/{first.json['id']}").status == 204

    again = admin.post("/api/users", {**body, "role": "ADMIN"})  # the same password, too
    assert again.status == 201, again.body
    assert again.json["id"] != first.json["id"]
    assert_error(old.get("/api/auth/me"), 401, "INVALID_TOKEN")
    assert_error(old.get("/api/users"), 401, "INVALID_TOKEN")
    refresh = anon.post("/api/auth/refresh", {"refresh_token": login.json["refresh_token"]})
    assert_error(refresh, 401, "INVALID_TOKEN")
    assert_error(old.post("/api/auth/ticket"), 401, "INVALID_TOKEN")
    fresh = anon.post("/api/auth/login", {"username": "mallory", "password": body["password"]})
    assert anon.with_token(fresh.json["access_token"]).get("/api/auth/me").json["role"] == "ADMIN"
    assert admin.request("DELETE", f"/api/users/{again.json['id']}").status == 204


def test_a_password_change_or_removal_ends_that_users_sessions_at_once(
    sensor: Sensor, tokens: Any
) -> None:
    """Not at the token's expiry: the old access token is refused at once, and an open
    WebSocket of that user gets `auth_error` and 4001 while another user's carries on."""
    admin = as_user(sensor, tokens, "admin")
    created = admin.post("/api/users", {"username": "yves", "role": "VIEWER",
                                        "password": "yves-password-1"})  # fmt: skip
    assert created.status == 201, created.body
    yves_id = created.json["id"]
    anon = Http(sensor.web_port())
    url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token="

    def login(password: str) -> str:
        reply = anon.post("/api/auth/login", {"username": "yves", "password": password})
        assert reply.status == 200, reply.body
        token: str = reply.json["access_token"]
        return token

    async def cut_off(token: str, method: str, body: Any = None) -> None:
        async with (
            client(url + token) as yves,
            client(url + tokens["admin"]["access_token"]) as other,
        ):
            await recv_type(yves, "auth_success")
            await recv_type(other, "auth_success")
            edit = await asyncio.to_thread(admin.request, method, f"/api/users/{yves_id}", body)
            assert edit.status in (200, 204), edit.body
            error = await recv_type(yves, "auth_error")
            assert error["message"] == "Token revoked: the user was removed or changed password"
            assert (await closed_with(yves))[0] == CloseCode.AUTH_FAILED
            await other.send(json.dumps({"type": "ping", "id": "still here"}))
            assert (await recv_type(other, "pong"))["id"] == "still here"

    first = login("yves-password-1")
    run(cut_off(first, "PATCH", {"password": "yves-password-2"}))
    assert_error(anon.with_token(first).get("/api/auth/me"), 401, "INVALID_TOKEN")
    second = login("yves-password-2")
    assert anon.with_token(second).get("/api/auth/me").status == 200
    run(cut_off(second, "DELETE"))
    assert_error(anon.with_token(second).get("/api/auth/me"), 401, "INVALID_TOKEN")


# -- capture control ----------------------------------------------------------------------------


def test_stop_and_start_are_broadcast_as_status(sensor: Sensor, tokens: Any) -> None:
    admin = as_user(sensor, tokens, "admin")
    url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={tokens['vic']['access_token']}"

    async def status_where(ws: Any, predicate: Any) -> dict[str, Any]:
        while True:
            message = await recv_type(ws, "status", timeout=20)
            if predicate(message["data"]):
                return dict(message["data"])

    async def go() -> None:
        async with client(url) as ws1, client(url) as ws2:
            for ws in (ws1, ws2):
                assert (await recv(ws))["type"] == "auth_success"
                await status_where(ws, lambda d: d["is_capturing"])
            stopped = await asyncio.to_thread(admin.post, "/api/capture/stop")
            assert stopped.status == 200 and stopped.json["is_capturing"] is False
            for ws in (ws1, ws2):
                data = await status_where(ws, lambda d: not d["is_capturing"])
                assert data["state"] == "stopped"
            again = await asyncio.to_thread(admin.post, "/api/capture/stop")
            assert_error(again, 409, "CONFLICT")

            bad = await asyncio.to_thread(
                admin.post, "/api/capture/start", {"interface": "lo", "filter": "udp and ("}
            )
            assert "syntax error" in assert_error(bad, 400, "INVALID_BPF")["detail"]
            missing = await asyncio.to_thread(
                admin.post, "/api/capture/start", {"interface": "nosuchif0"}
            )
            assert_error(missing, 400, "CAPTURE_ERROR")
            assert admin.get("/api/capture/status").json["is_capturing"] is False  # unchanged

            new_bpf = BPF + " and not dst port 48999"
            started = await asyncio.to_thread(
                admin.post, "/api/capture/start", {"interface": "lo", "filter": new_bpf}
            )
            assert started.status == 200, started.body
            assert started.json["is_capturing"] is True and started.json["bpf"] == new_bpf
            for ws in (ws1, ws2):
                data = await status_where(ws, lambda d: d["is_capturing"])
                assert data["bpf"] == new_bpf and data["interface"] == "lo"

    try:
        run(go())
    finally:
        admin.post("/api/capture/start", {"interface": "lo", "filter": BPF})
    port = next(_ports)
    send_udp(port, 3)
    assert len(wait_packets(admin, f"port={port}", 3)) == 3  # capturing again


def test_interfaces_lists_lo(sensor: Sensor, tokens: Any) -> None:
    found = as_user(sensor, tokens, "admin").get("/api/capture/interfaces").json["interfaces"]
    lo = next(i for i in found if i["name"] == "lo")
    assert lo["up"] is True and lo["capturing"] is True
    assert {"family": "ipv4", "address": "127.0.0.1", "prefixlen": 8} in lo["addresses"]


# -- separate sensors -----------------------------------------------------------------------------


def test_failed_logins_back_off_per_user_and_address(tmp_path: Path) -> None:
    limits = ("auth: {login_failures_per_user_address: 3, login_failures_per_address: 5, "
              "login_backoff_first_s: 600}\n")  # fmt: skip
    sensor = start_sensor(tmp_path, limits)
    try:
        http = Http(sensor.web_port())
        ana = {"username": "ana", "password": PASSWORDS["ana"]}
        assert http.post("/api/auth/login", ana).status == 200  # ana is known at 127.0.0.1
        for _ in range(3):
            bad = http.post("/api/auth/login", {"username": "vic", "password": "wrong-wrong"})
            assert_error(bad, 401, "INVALID_CREDENTIALS")
        right = {"username": "vic", "password": PASSWORDS["vic"]}
        limited = http.post("/api/auth/login", right)
        assert_error(limited, 429, "RATE_LIMITED")
        assert int(limited.headers["retry-after"]) > 0
        for _ in range(2):  # failures 4 and 5 from this address, another user
            assert http.post("/api/auth/login", {"username": "ana", "password": "x"}).status == 401
        admin = {"username": "admin", "password": PASSWORDS["admin"]}
        address_limited = http.post("/api/auth/login", admin)
        assert_error(address_limited, 429, "RATE_LIMITED")
        assert http.post("/api/auth/login", ana).status == 200  # known there: not held back
    finally:
        sensor.kill()


def test_first_run_puts_the_admin_password_in_a_root_only_file_not_in_the_log(
    tmp_path: Path,
) -> None:
    """The log (stderr here, not a terminal) says where the password is; the password itself
    is only in `state_dir/initial-admin-password`, mode 0600, owned by root."""
    sensor = Sensor(tmp_path, "--interface", "lo", "--bpf", BPF, config="web: {port: 0}\n")
    secret_file = sensor.state_dir / "initial-admin-password"
    try:
        port = sensor.web_port()
        line = wait_for(
            lambda: next((x for x in sensor.lines if "First run" in x), None), 20, "the banner"
        )
        assert str(secret_file) in line
        st = secret_file.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
        password = secret_file.read_text().strip()
        assert len(password) >= 16
        users = (sensor.state_dir / "users.yaml").read_text()
        assert password not in users and "$argon2id$" in users
        http = Http(port)
        assert (
            http.post("/api/auth/login", {"username": "admin", "password": password}).status == 200
        )
        assert_error(http.post("/api/auth/login", {"username": "admin", "password": "admin"}),
                     401, "INVALID_CREDENTIALS")  # fmt: skip
    finally:
        sensor.kill()
    assert password not in sensor.log
    assert sensor.log.count("First run") == 1


def test_a_users_file_with_a_user_without_a_password_is_refused_at_start(tmp_path: Path) -> None:
    """No user without a password, no file without `next_id`: the sensor does not start, and
    says which key is missing."""
    users = "next_id: 2\nusers:\n  - {id: 1, username: admin, role: ADMIN}\n"
    sensor = Sensor(tmp_path, "--interface", "lo", "--bpf", BPF, config="web: {port: 0}\n",
                    users=users)  # fmt: skip
    try:
        code = sensor.proc.wait(timeout=scaled(60))
    finally:
        sensor.kill()
    assert code == 2
    assert "password_hash" in sensor.log and "$.users[0]" in sensor.log
    assert "First run" not in sensor.log  # the file existed: nothing was created
