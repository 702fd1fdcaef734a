"""The sensor's own accounts, against a live sensor on lo: who can open what it keeps.

Probes run as another account through `setpriv --reuid --regid --clear-groups` and the system's
Python (standard library only), and report what each open or connect did: `ok` or the errno
name. The accounts: `nobody` (shared by many daemons), the web user (`leireye-web`, which reads
the shared memory and nothing root keeps) and root itself, which is not a web worker either.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from leireye.config import load_config
from leireye.control.protocol import decode_reply
from leireye.ring.shm import SHM_DIR
from leireye.wire import CloseCode
from tests.accounts import users_yaml
from tests.http import Http
from tests.sensor import Sensor
from tests.waiting import scaled, wait_for
from tests.wsclient import client, closed_with, recv_type, run

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="a live capture and other accounts need root"),
]

PASSWORD = "accounts-test-pass"
BPF = "udp and dst port 9"
SYSTEM_PYTHON = "/usr/bin/python3"  # the probes' own: stdlib only, readable by every account

PROBE = r"""
import errno, json, os, socket, sys
checks = json.loads(sys.argv[1])
found = {}
for name, (kind, path) in checks.items():
    try:
        if kind == "connect":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(path)
                s.sendall(sys.argv[2].encode() + b"\n")
                found[name] = "ok " + s.makefile("rb").readline().decode().strip()
        else:
            fd = os.open(path, {"read": os.O_RDONLY, "write": os.O_RDWR}[kind])
            data = os.read(fd, 1 << 20) if kind == "read" else b""
            os.close(fd)
            found[name] = "ok " + data.decode("latin-1")
    except OSError as exc:
        found[name] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(found))
"""


def probe(user: str, checks: dict[str, tuple[str, str]], request: bytes = b"") -> dict[str, str]:
    """Run as `user` (its own group only); each check -> "ok <what was read>" or an errno."""
    account = pwd.getpwnam(user)
    done = subprocess.run(
        ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups",
         SYSTEM_PYTHON, "-I", "-c", PROBE, json.dumps(checks), request.decode()],
        capture_output=True, text=True, timeout=scaled(30), check=True,
    )  # fmt: skip
    found: dict[str, str] = json.loads(done.stdout)
    return found


@pytest.fixture(scope="module")
def sensor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sensor]:
    users = users_yaml({"admin": ("ADMIN", PASSWORD), "vic": ("VIEWER", PASSWORD)})
    running = Sensor(
        tmp_path_factory.mktemp("accounts"),
        "--interface",
        "lo",
        "--bpf",
        BPF,
        users=users,
        config="capture: {nice: -5}",
    )
    try:
        running.web_port()
        running.wait_capturing(running.status())
        wait_for(lambda: "web worker 0 serving" in running.log, 30, "the web worker to serve")
        yield running
    finally:
        running.kill()


def paths(sensor: Sensor) -> dict[str, Path]:
    state = sensor.state_dir
    return {
        "ring": SHM_DIR / f"{sensor.name}-ring",
        "status": SHM_DIR / f"{sensor.name}-status",
        "stats": SHM_DIR / f"{sensor.name}-stats",
        "flows": SHM_DIR / f"{sensor.name}-flows",
        "conns": SHM_DIR / f"{sensor.name}-conns",
        "secret": state / "secret.key",
        "users": state / "users.yaml",
        "view": state / "users-view.json",
        "control": state / "control.sock",
    }


def add_admin_request() -> bytes:
    """The finding's request: a worker's word that an ADMIN is being added."""
    return json.dumps(
        {"op": "add_user", "username": "mallory", "role": "ADMIN", "password": "mallory's pw!"}
    ).encode()


def test_the_children_run_as_the_sensors_own_accounts(sensor: Sensor) -> None:
    writer = pwd.getpwnam("leireye").pw_uid
    web = pwd.getpwnam("leireye-web").pw_uid
    for role, uid in (("capture", writer), ("stats", writer), ("flows", writer), ("web-0", web)):
        pid = int(next(x for x in sensor.lines if f"{role} started pid=" in x).split("=")[-1])
        uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
        assert uids == [str(uid)] * 4, (role, uids)


def test_the_capture_runs_ahead_of_its_readers(sensor: Sensor) -> None:
    """capture.nice (here -5), set while root: the readers keep the niceness they were
    started with (the test's own)."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    for role, nice in (("capture", -5), ("stats", base), ("flows", base), ("web-0", base)):
        pid = int(next(x for x in sensor.lines if f"{role} started pid=" in x).split("=")[-1])
        assert os.getpriority(os.PRIO_PROCESS, pid) == nice, role


def test_owners_and_modes(sensor: Sensor) -> None:
    writer = pwd.getpwnam("leireye")
    web = pwd.getpwnam("leireye-web")
    group = web.pw_gid
    expected = {
        "ring": (writer.pw_uid, group, 0o640),
        "status": (writer.pw_uid, group, 0o640),
        "stats": (writer.pw_uid, group, 0o640),
        "flows": (writer.pw_uid, group, 0o640),
        "conns": (web.pw_uid, web.pw_gid, 0o600),
        "secret": (0, 0, 0o600),
        "users": (0, 0, 0o600),
        "view": (0, group, 0o640),
        "control": (0, group, 0o660),
    }
    for name, path in paths(sensor).items():
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == expected[name], name
    st = sensor.state_dir.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, group, 0o750)


def test_nobody_opens_nothing(sensor: Sensor) -> None:
    """The finding: as `nobody`, the whole ring, the secret, the users file and the control
    socket were open. Now nothing is."""
    p = {k: str(v) for k, v in paths(sensor).items()}
    found = probe(
        "nobody",
        {
            "ring": ("read", p["ring"]),
            "ring rw": ("write", p["ring"]),
            "status rw": ("write", p["status"]),
            "flows": ("read", p["flows"]),
            "conns": ("read", p["conns"]),
            "secret": ("read", p["secret"]),
            "users": ("read", p["users"]),
            "users rw": ("write", p["users"]),
            "view": ("read", p["view"]),
            "control": ("connect", p["control"]),
        },
        add_admin_request(),
    )
    assert found == dict.fromkeys(found, "EACCES"), found


def test_the_web_user_reads_the_ring_but_writes_nothing_and_reads_no_secret(
    sensor: Sensor,
) -> None:
    p = {k: str(v) for k, v in paths(sensor).items()}
    found = probe(
        "leireye-web",
        {
            "ring": ("read", p["ring"]),
            "ring rw": ("write", p["ring"]),
            "status rw": ("write", p["status"]),
            "stats rw": ("write", p["stats"]),
            "flows": ("read", p["flows"]),
            "flows rw": ("write", p["flows"]),
            "secret": ("read", p["secret"]),
            "users": ("read", p["users"]),
            "view": ("read", p["view"]),
        },
    )
    assert found.pop("ring").startswith("ok ")
    assert found.pop("flows").startswith("ok ")
    view = found.pop("view")
    assert view.startswith("ok ")
    users = json.loads(view[3:])["users"]
    assert [(u["id"], u["username"], u["role"]) for u in users] == [
        (1, "admin", "ADMIN"),
        (2, "vic", "VIEWER"),
    ]
    assert all(set(u) == {"id", "username", "role", "generation", "sensors"} for u in users)
    assert found == dict.fromkeys(found, "EACCES"), found


def test_a_process_that_is_not_a_web_worker_is_refused_on_the_control_socket(
    sensor: Sensor,
) -> None:
    """Another process of the web user reaches the socket (its group may) but is refused, and
    so is root's own: only the workers' pids are answered. The refusal is logged."""
    control = paths(sensor)["control"]
    found = probe("leireye-web", {"control": ("connect", str(control))}, add_admin_request())
    assert found["control"].startswith("ok "), found
    reply = decode_reply(found["control"][3:].encode())
    assert (reply.ok, reply.status, reply.code) == (False, 403, "FORBIDDEN")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(scaled(10))
        sock.connect(str(control))
        sock.sendall(add_admin_request() + b"\n")
        reply = decode_reply(sock.makefile("rb").readline())
    assert (reply.ok, reply.status) == (False, 403)
    wait_for(lambda: "control channel: refused a connection" in sensor.log, 10, "a refusal line")
    assert "mallory" not in paths(sensor)["users"].read_text()


def test_the_workers_still_do_their_job(sensor: Sensor) -> None:
    """Through the workers: log in (the supervisor checks the password), an ADMIN adds a user
    (the request carries the ADMIN's token), the new user is known to the workers' users view
    at once, and a VIEWER's token cannot add one."""
    http = Http(sensor.web_port())
    admin = http.post("/api/auth/login", {"username": "admin", "password": PASSWORD})
    assert admin.status == 200, admin.body
    as_admin = http.with_token(admin.json["access_token"])
    added = as_admin.post(
        "/api/users", {"username": "ana", "role": "ANALYST", "password": PASSWORD}
    )
    assert added.status == 201, added.body
    listed = as_admin.get("/api/users")
    assert [u["username"] for u in listed.json["users"]] == ["admin", "vic", "ana"]
    vic = http.post("/api/auth/login", {"username": "vic", "password": PASSWORD})
    refused = http.with_token(vic.json["access_token"]).post(
        "/api/users", {"username": "eve", "role": "ADMIN", "password": PASSWORD}
    )
    assert refused.status == 403
    ticket = http.with_token(vic.json["access_token"]).post("/api/auth/ticket", {})
    assert ticket.status == 200, ticket.body
    refresh = load_config(sensor.config_path).state_path("refresh-tokens.json").stat()
    assert (refresh.st_uid, stat.S_IMODE(refresh.st_mode)) == (0, 0o600)


def test_a_password_set_in_a_shell_reaches_the_workers_through_the_view(sensor: Sensor) -> None:
    """`leireye user passwd` edits the users file as root; the workers never read it. The
    supervisor notices the change on its main loop and rewrites the view, and the worker closes
    the user's open WebSocket."""
    http = Http(sensor.web_port())
    vic = http.post("/api/auth/login", {"username": "vic", "password": PASSWORD})
    assert vic.status == 200, vic.body
    url = f"ws://127.0.0.1:{sensor.web_port()}/ws/capture?token={vic.json['access_token']}"
    view = paths(sensor)["view"]
    before = view.read_text()

    async def go() -> None:
        async with client(url) as ws:
            await recv_type(ws, "auth_success")
            cmd = [sys.executable, "-m", "leireye.cli", "user", "passwd", "vic"]
            cmd += ["--password-stdin", "-c", str(sensor.config_path)]
            done = await asyncio.to_thread(
                subprocess.run, cmd, input="vic's new password\n", capture_output=True,
                text=True, timeout=scaled(30),
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            await recv_type(ws, "auth_error", timeout=scaled(10))
            assert (await closed_with(ws))[0] == CloseCode.AUTH_FAILED

    with sensor.explained():
        run(go())
    assert view.read_text() != before and "scrypt" not in view.read_text()


def test_a_restarted_worker_is_answered_on_the_control_channel(sensor: Sensor) -> None:
    """The supervisor answers the workers it runs now: a worker killed and started again gets
    a new pid, which the channel admits (a login goes through it)."""

    def web_pids() -> list[int]:
        return [int(x.split("=")[-1]) for x in list(sensor.lines) if "web-0 started pid=" in x]

    first = web_pids()[-1]
    served = sum("web worker 0 serving" in x for x in list(sensor.lines))
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: web_pids()[-1] != first, 30, "web-0 to be started again")
    wait_for(lambda: sum("web worker 0 serving" in x for x in list(sensor.lines)) > served, 30,
             "the new web-0 to serve")  # fmt: skip
    reply = Http(sensor.web_port()).post(
        "/api/auth/login", {"username": "admin", "password": PASSWORD}
    )
    assert reply.status == 200, reply.body
