"""Who owns what the supervisor creates: the sensor's accounts, the state directory."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from leireye.errors import ConfigError, LeirEyeError
from leireye.privileges import Owners, ensure_account, state_directory

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="chown and accounts need root")


@ROOT_ONLY
def test_the_state_directory_is_made_roots_with_the_web_group(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.mkdir()
    path.chmod(0o755)  # as `Sensor` and many installations leave it
    state_directory(path, 4321)
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 4321, 0o750)
    state_directory(tmp_path / "new" / "state", None)
    st = (tmp_path / "new" / "state").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o750)


@ROOT_ONLY
def test_a_state_directory_someone_else_can_write_is_refused(tmp_path: Path) -> None:
    """Whoever can write the directory can replace the secret or the users file; and
    tightening /tmp would break the host."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for path in (theirs, shared):
        with pytest.raises(ConfigError, match="directory of its own"):
            state_directory(path, None)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777


@ROOT_ONLY
def test_ensure_account_leaves_an_existing_account_alone_and_warns_about_nobody(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = pwd.getpwnam("nobody")
    ensure_account("nobody", "web.user")
    assert pwd.getpwnam("nobody") == before
    assert "every daemon running as nobody" in caplog.text


@ROOT_ONLY
def test_ensure_account_creates_a_system_account_once() -> None:
    ensure_account("leireye", "capture.user")
    ensure_account("leireye", "capture.user")  # idempotent
    account = pwd.getpwnam("leireye")
    assert account.pw_uid < 1000 and account.pw_shell.endswith("nologin")
    assert not Path(account.pw_dir).exists()


@ROOT_ONLY
def test_the_writer_owns_the_segments_and_the_web_users_group_reads_them() -> None:
    ensure_account("leireye", "capture.user")
    ensure_account("leireye-web", "web.user")
    writer, web = pwd.getpwnam("leireye"), pwd.getpwnam("leireye-web")
    owners = Owners.of("leireye", "leireye-web")
    assert owners.writer == (writer.pw_uid, web.pw_gid)
    assert owners.web == (web.pw_uid, web.pw_gid)
    assert owners.group == web.pw_gid
    assert Owners.of(None, None) == Owners((0, 0), None, None)
    with pytest.raises(LeirEyeError, match="no such user"):
        Owners.of("no-such-user-here", None)
