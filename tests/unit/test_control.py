"""The control channel end to end: a real ControlServer on a Unix socket with the real handlers
and account service, called by the real asyncio ControlClient. Only the capture is a fake.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from leireye.accounts.principal import Principal
from leireye.accounts.service import AccountService
from leireye.accounts.tokens import Authenticator, issue_token
from leireye.accounts.users import UserStore, load_users
from leireye.config import Config, parse_config
from leireye.control.client import ControlClient, ControlError
from leireye.control.handlers import CaptureConflict, ControlHandlers
from leireye.control.protocol import (
    MAX_MESSAGE_BYTES,
    AddUser,
    AnyRequest,
    CaptureStart,
    CaptureStop,
    IssueTicket,
    Login,
    Logout,
    RedeemTicket,
    Refresh,
    RemoveUser,
    Reply,
    UpdateUser,
    decode_reply,
)
from leireye.control.server import ControlServer, RefusalLog, socket_path
from leireye.errors import CaptureError
from tests.accounts import users_yaml
from tests.waiting import scaled

SECRET = bytes(range(64))
START = 1_700_000_000.0
ADMIN_PW = "the admin password"
BOB_PW = "bob's password!"


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeCapture:
    """Stands in for the supervisor: records calls, answers or raises what it is told."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    error: Exception | None = None

    def start_capture(self, interface: str | None, bpf: str | None) -> dict[str, Any]:
        self.calls.append(("start", (interface, bpf)))
        if self.error is not None:
            raise self.error
        return {"running": True, "interface": interface or "eth0", "filter": bpf or ""}

    def stop_capture(self) -> dict[str, Any]:
        self.calls.append(("stop", None))
        if self.error is not None:
            raise self.error
        return {"running": False}


@dataclass
class Channel:
    path: Path
    client: ControlClient
    capture: FakeCapture
    clock: FakeClock
    accounts: AccountService
    users_path: Path

    def token(self, name: str) -> str:
        """An access token of `name` as the users file has them, valid at the fake clock."""
        user = next(u for u in load_users(self.users_path) if u.username == name)
        return issue_token(SECRET, user, 1800, self.clock.now)

    def call(self, request: AnyRequest) -> Any:
        return asyncio.run(self.client.call(request))

    def refused(self, request: AnyRequest) -> ControlError:
        with pytest.raises(ControlError) as info:
            self.call(request)
        return info.value

    def raw(self, data: bytes, close_write: bool = True) -> Reply:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(scaled(10))
            sock.connect(str(self.path))
            sock.sendall(data)
            if close_write:
                sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.endswith(b"\n") and received.count(b"\n") == 1
        return decode_reply(received)


@pytest.fixture(scope="module")
def users_text() -> str:
    return users_yaml({"admin": ("ADMIN", ADMIN_PW), "bob": ("ANALYST", BOB_PW)})


def config() -> Config:
    return parse_config({"auth": {"login_failures_per_user_address": 2}})


@pytest.fixture
def channel(users_text: str) -> Iterator[Channel]:
    # Unix socket paths are short (108 bytes): not under pytest's long tmp_path.
    with tempfile.TemporaryDirectory(prefix="leireye-ctl-") as state:
        users_path = Path(state) / "users.yaml"
        users_path.write_text(users_text)
        users_path.chmod(0o600)
        clock = FakeClock()
        accounts = AccountService(
            config(), SECRET, UserStore(users_path), Path(state) / "refresh.json", clock
        )
        capture = FakeCapture()
        path = socket_path(state)
        handlers = ControlHandlers(accounts, users_path, capture)
        server = ControlServer(path, handlers, lambda: {os.getpid()})  # this test plays a worker
        server.start()
        try:
            yield Channel(
                path, ControlClient(path, scaled(10)), capture, clock, accounts, users_path
            )
        finally:
            server.close()
        assert not path.exists()


# -- accounts -----------------------------------------------------------------------------------


def test_login_refresh_ticket_logout_round_trip(channel: Channel) -> None:
    pair = channel.call(Login("bob", BOB_PW, "10.0.0.1"))
    assert set(pair) >= {"access_token", "refresh_token", "expires_in", "token_type"}
    verifier = Authenticator(SECRET, UserStore(channel.users_path))
    principal = verifier.verify(pair["access_token"], START)
    assert isinstance(principal, Principal) and principal.username == "bob"

    rotated = channel.call(Refresh(pair["refresh_token"]))
    assert rotated["refresh_token"] != pair["refresh_token"]
    assert channel.refused(Refresh(pair["refresh_token"])).status == 401

    ticket = channel.call(IssueTicket(pair["access_token"]))
    assert ticket["expires_in"] == config().auth.ticket_ttl_s
    grant = channel.call(RedeemTicket(ticket["ticket"]))
    assert grant == {
        "user_id": 2,
        "generation": principal.generation,
        "expires_at": START + ticket["expires_in"],
        "session_expires_at": START + 1800,
    }
    used = channel.refused(RedeemTicket(ticket["ticket"]))
    assert (used.status, used.code) == (401, "INVALID_TICKET")

    assert channel.call(Logout(rotated["refresh_token"], 2)) == {"revoked": True}
    assert channel.call(Logout(rotated["refresh_token"], 2)) == {"revoked": False}
    assert channel.refused(Refresh(rotated["refresh_token"])).code == "INVALID_TOKEN"


def test_login_failures_keep_their_status_code_and_retry_after(channel: Channel) -> None:
    wrong = channel.refused(Login("bob", "wrong guess!", "10.0.0.1"))
    unknown = channel.refused(Login("ghost", "wrong guess!", "10.0.0.2"))
    for error in (wrong, unknown):
        assert (error.status, error.code, error.detail) == (
            401,
            "INVALID_CREDENTIALS",
            "Invalid username or password",
        )
    second = channel.refused(Login("bob", "wrong guess!", "10.0.0.1"))
    assert second.status == 401  # bob's second failure from there: the limit is 2
    limited = channel.refused(Login("bob", BOB_PW, "10.0.0.1"))
    assert (limited.status, limited.code) == (429, "RATE_LIMITED")
    assert 0 < limited.retry_after <= config().auth.login_backoff_max_s


# -- users --------------------------------------------------------------------------------------


def test_user_edits_and_their_refusals(channel: Channel) -> None:
    admin = channel.token("admin")
    added = channel.call(AddUser(admin, "carol", "VIEWER", "carol's password"))
    assert added == {"id": 3, "username": "carol", "role": "VIEWER"}
    assert channel.call(AddUser(admin, "dave", "VIEWER", "dave's password")) == {
        "id": 4,
        "username": "dave",
        "role": "VIEWER",
    }
    assert channel.call(Login("carol", "carol's password", "10.0.0.1"))["access_token"]
    assert channel.call(UpdateUser(admin, 3, role="ANALYST"))["role"] == "ANALYST"
    assert channel.call(RemoveUser(admin, 4))["username"] == "dave"
    assert [u.username for u in load_users(channel.users_path)] == ["admin", "bob", "carol"]
    assert stat.S_IMODE(channel.users_path.stat().st_mode) == 0o600
    again = channel.call(AddUser(admin, "dave", "VIEWER", "dave's password"))
    assert again["id"] == 5  # not dave's old 4
    channel.call(RemoveUser(admin, 5))

    cases = [
        (AddUser(admin, "bob", "VIEWER", "bob's other password"), 409, "CONFLICT"),
        (AddUser(admin, "bad name", "VIEWER", "a good password"), 422, "VALIDATION_ERROR"),
        (AddUser(admin, "erin", "GOD", "a good password"), 422, "VALIDATION_ERROR"),
        (AddUser(admin, "erin", "VIEWER", "short"), 422, "VALIDATION_ERROR"),
        (UpdateUser(admin, 99, role="VIEWER"), 404, "NOT_FOUND"),
        (UpdateUser(admin, 1, role="VIEWER"), 409, "CONFLICT"),
        (RemoveUser(admin, 99), 404, "NOT_FOUND"),
        (RemoveUser(admin, 1), 409, "CONFLICT"),
    ]
    for request, status, code in cases:
        error = channel.refused(request)
        assert (error.status, error.code) == (status, code), request
        assert error.detail
    assert [u.username for u in load_users(channel.users_path)] == ["admin", "bob", "carol"]


def test_a_new_password_or_a_removal_revokes_the_users_refresh_tokens(channel: Channel) -> None:
    bob = channel.call(Login("bob", BOB_PW, "10.0.0.1"))
    pair = channel.call(Login("admin", ADMIN_PW, "10.0.0.1"))
    admin = pair["access_token"]
    channel.call(UpdateUser(admin, 2, password="bob's new password"))
    assert channel.refused(Refresh(bob["refresh_token"])).code == "INVALID_TOKEN"
    assert channel.refused(Login("bob", BOB_PW, "10.0.0.1")).status == 401
    bob = channel.call(Login("bob", "bob's new password", "10.0.0.1"))
    channel.call(UpdateUser(admin, 2, role="VIEWER"))  # a role change alone revokes nothing
    bob = channel.call(Refresh(bob["refresh_token"]))
    channel.call(RemoveUser(admin, 2))
    assert channel.refused(Refresh(bob["refresh_token"])).code == "INVALID_TOKEN"
    assert channel.call(Refresh(pair["refresh_token"]))["access_token"]


# -- capture ------------------------------------------------------------------------------------


def test_capture_requests_reach_the_capture(channel: Channel) -> None:
    assert channel.call(CaptureStart(channel.token("admin"), "lo", "tcp")) == {
        "running": True,
        "interface": "lo",
        "filter": "tcp",
    }
    assert channel.call(CaptureStop(channel.token("admin"))) == {"running": False}
    assert channel.capture.calls == [("start", ("lo", "tcp")), ("stop", None)]


def test_capture_refusals_map_to_statuses(channel: Channel) -> None:
    cases: list[tuple[Exception, int, str]] = [
        (CaptureError("bad BPF expression: syntax error"), 400, "INVALID_BPF"),
        (CaptureError("no such device eth9"), 400, "CAPTURE_ERROR"),
        (CaptureConflict("capture is already running"), 409, "CONFLICT"),
    ]
    for error, status, code in cases:
        channel.capture.error = error
        refused = channel.refused(CaptureStart(channel.token("admin"), "eth9", "tcp port"))
        assert (refused.status, refused.code, refused.detail) == (status, code, str(error))


def test_a_handler_bug_is_a_500_and_the_server_keeps_serving(
    channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    channel.capture.error = RuntimeError("secret internals")
    error = channel.refused(CaptureStop(channel.token("admin")))
    assert (error.status, error.code) == (500, "INTERNAL_ERROR")
    assert "secret internals" not in error.detail
    assert any(r.exc_info and r.name == "leireye.control" for r in caplog.records)
    channel.capture.error = None
    assert channel.call(CaptureStop(channel.token("admin"))) == {"running": False}
    assert channel.call(Login("bob", BOB_PW, "10.0.0.1"))["access_token"]


def test_a_few_concurrent_clients_are_all_answered(channel: Channel) -> None:
    admin = channel.token("admin")

    async def many() -> list[Any]:
        return await asyncio.gather(*(channel.client.call(CaptureStop(admin)) for _ in range(4)))

    assert asyncio.run(many()) == [{"running": False}] * 4


def test_a_burst_of_concurrent_clients_is_all_answered(channel: Channel) -> None:
    admin = channel.token("admin")

    async def one() -> object:
        try:
            return await channel.client.call(CaptureStop(admin))
        except ControlError as exc:
            return exc.status

    async def many() -> list[object]:
        return await asyncio.gather(*(one() for _ in range(32)))

    answers = asyncio.run(many())
    assert answers == [{"running": False}] * 32


# -- what a worker's word is worth ------------------------------------------------------------


def test_an_admins_change_needs_an_admins_valid_token(channel: Channel) -> None:
    """A worker cannot add an ADMIN, change a user or start a capture on its own say: the
    request must carry the token of a user the users file shows as ADMIN now."""
    bob = channel.token("bob")  # ANALYST
    bob_user = next(u for u in load_users(channel.users_path) if u.username == "bob")
    claims_admin = issue_token(  # signed, but the users file says bob is an ANALYST
        SECRET, msgspec.structs.replace(bob_user, role="ADMIN"), 1800, START
    )
    forged = issue_token(bytes(64), bob_user, 1800, START)
    requests: list[Callable[[str], AnyRequest]] = [
        lambda t: AddUser(t, "mallory", "ADMIN", "mallory's password"),
        lambda t: UpdateUser(t, 2, role="ADMIN"),
        lambda t: RemoveUser(t, 1),
        lambda t: CaptureStart(t, "lo", "tcp"),
        lambda t: CaptureStop(t),
    ]
    for make in requests:
        for token, status in ((bob, 403), (claims_admin, 403), (forged, 401), ("x", 401)):
            refused = channel.refused(make(token))
            assert refused.status == status, (make(token), token)
    assert channel.capture.calls == []
    assert [(u.username, u.role) for u in load_users(channel.users_path)] == [
        ("admin", "ADMIN"),
        ("bob", "ANALYST"),
    ]
    channel.call(UpdateUser(channel.token("admin"), 2, role="ADMIN"))
    assert channel.call(CaptureStop(bob)) == {"running": False}  # bob is an ADMIN now


def test_a_ticket_is_only_for_the_holder_of_a_valid_access_token(channel: Channel) -> None:
    bob = channel.token("bob")
    ticket = channel.call(IssueTicket(bob))
    assert channel.call(RedeemTicket(ticket["ticket"]))["user_id"] == 2
    bob_user = next(u for u in load_users(channel.users_path) if u.username == "bob")
    refresh = issue_token(SECRET, bob_user, 1800, START, "refresh")
    for token in (issue_token(bytes(64), bob_user, 1800, START), refresh, "x"):
        assert channel.refused(IssueTicket(token)).status == 401
    channel.clock.now = START + 1801  # bob's token has expired
    assert channel.refused(IssueTicket(bob)).status == 401


def test_only_the_listed_peers_are_answered(caplog: pytest.LogCaptureFixture) -> None:
    """A process that is not one of the workers (here: this one, once it is taken off the
    list), or runs as another uid, gets a 403 and the handler never runs; the refusals are
    logged once per interval, with a count."""
    called: list[AnyRequest] = []
    allowed: set[int] = set()

    def handle(request: AnyRequest) -> Reply:
        called.append(request)
        return Reply(True, "yes")

    with tempfile.TemporaryDirectory(prefix="leireye-ctl-") as state:
        path = socket_path(state)
        server = ControlServer(path, handle, lambda: allowed)
        server.start()
        try:
            client = ControlClient(path, scaled(5))
            for _ in range(3):
                with pytest.raises(ControlError) as info:
                    asyncio.run(client.call(CaptureStop("t")))
                assert (info.value.status, info.value.code) == (403, "FORBIDDEN")
            allowed.add(os.getpid())
            assert asyncio.run(client.call(CaptureStop("t"))) == "yes"
            server.uid = os.getuid() + 1
            with pytest.raises(ControlError):
                asyncio.run(client.call(CaptureStop("t")))
        finally:
            server.close()
    assert len(called) == 1
    assert server.refusals.count == 4
    lines = [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]
    assert len(lines) == 1 and f"pid {os.getpid()}" in lines[0]


def test_refusals_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog(interval_s=0.0)
    refusals.refused(1, 2)
    refusals.refused(3, 4)
    assert refusals.count == 2
    assert len([r for r in caplog.records if "refused a connection" in r.getMessage()]) == 2


# -- the wire -----------------------------------------------------------------------------------


def test_the_socket_is_mode_0600(channel: Channel) -> None:
    mode = channel.path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


MALFORMED = [
    b"not json\n",
    b"{}\n",
    b'{"op": "no_such_op"}\n',
    b'{"op": "login", "username": "bob"}\n',
    b'{"op": "login", "username": "bob", "password": 1, "address": "x"}\n',
    b'{"op": "capture_stop", "extra": 1}\n',
    b"\n",
    b"\xff\xfe\n",
]


def test_a_malformed_request_gets_a_400(channel: Channel) -> None:
    for line in MALFORMED:
        reply = channel.raw(line)
        assert (reply.ok, reply.status, reply.code) == (False, 400, "BAD_REQUEST"), line
    assert channel.capture.calls == []


def test_a_request_cut_short_gets_a_400(channel: Channel) -> None:
    reply = channel.raw(b'{"op": "capture_stop"}')  # no newline before EOF
    assert (reply.ok, reply.status) == (False, 400)
    assert channel.capture.calls == []


def test_a_raw_well_formed_request_is_answered(channel: Channel) -> None:
    token = channel.token("admin").encode()
    reply = channel.raw(b'{"op": "capture_stop", "token": "%s"}\n' % token)
    assert reply == Reply(True, {"running": False})


def test_an_oversized_line_gets_a_413(channel: Channel) -> None:
    reply = channel.raw(b"x" * (MAX_MESSAGE_BYTES + 1), close_write=False)
    assert (reply.ok, reply.status, reply.code) == (False, 413, "BAD_REQUEST")
    assert channel.call(CaptureStop(channel.token("admin"))) == {"running": False}


def test_an_absent_supervisor_is_a_503(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.sock", tmp_path):
        with pytest.raises(ControlError) as info:
            asyncio.run(ControlClient(path, scaled(5)).call(CaptureStop("token")))
        assert (info.value.status, info.value.code) == (503, "SERVICE_UNAVAILABLE")


def test_a_closed_server_is_a_503() -> None:
    with tempfile.TemporaryDirectory(prefix="leireye-ctl-") as state:
        path = socket_path(state)
        server = ControlServer(path, lambda request: Reply(True, "hi"), lambda: {os.getpid()})
        server.start()
        assert asyncio.run(ControlClient(path, scaled(5)).call(CaptureStop("token"))) == "hi"
        server.close()
        with pytest.raises(ControlError) as info:
            asyncio.run(ControlClient(path, scaled(5)).call(CaptureStop("token")))
        assert info.value.status == 503


def serve_once(path: Path, answer: bytes | None) -> threading.Thread:
    """A stand-in supervisor that reads one request and answers `answer` (None: never)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    release = threading.Event()

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                if answer is None:
                    release.wait(scaled(10))
                else:
                    conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.release = release  # type: ignore[attr-defined]
    return thread


def test_a_silent_supervisor_is_a_503_after_the_timeout() -> None:
    with tempfile.TemporaryDirectory(prefix="leireye-ctl-") as state:
        path = Path(state) / "silent.sock"
        thread = serve_once(path, None)
        with pytest.raises(ControlError) as info:
            asyncio.run(ControlClient(path, 0.2).call(CaptureStop("token")))
        assert info.value.status == 503
        thread.release.set()  # type: ignore[attr-defined]
        thread.join(scaled(5))


@pytest.mark.parametrize("answer", [b"garbage\n", b'{"ok": "yes"}\n'])
def test_a_bad_reply_is_a_502(answer: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="leireye-ctl-") as state:
        path = Path(state) / "bad.sock"
        thread = serve_once(path, answer)
        with pytest.raises(ControlError) as info:
            asyncio.run(ControlClient(path, scaled(5)).call(CaptureStop("token")))
        assert (info.value.status, info.value.code) == (502, "BAD_GATEWAY")
        thread.join(scaled(5))
