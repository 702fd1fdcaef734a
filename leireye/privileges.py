"""Dropping root once a child has opened what only root may open.

An open pcap handle keeps capturing after `setgroups([])`, `setgid`, `setuid`; opening a new one
then fails with EPERM. So the capture process opens everything it needs as root (handle, shared
memory, its directory for stuck frames) and drops to `capture.user` before reading any packet;
a web worker maps its segments and reads its secrets, then drops to `web.user` before serving.
"""

from __future__ import annotations

import grp
import importlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from leireye.errors import CaptureError, ConfigError, LeirEyeError

log = logging.getLogger("leireye.privileges")


def lookup_user(
    user: str | None, key: str = "capture.user", error: type[LeirEyeError] = CaptureError
) -> pwd.struct_passwd | None:
    """The account to run as; None when no user is configured, or when it does not exist and we
    are not root (so could not switch to it anyway). A missing user is an `error` naming the
    config `key` (root creates the sensor's accounts first: `ensure_account`)."""
    if user is None:
        return None
    try:
        return pwd.getpwnam(user)
    except KeyError:
        if os.geteuid() != 0:
            return None
        raise error(f"{key}: no such user {user!r}") from None


# The group of the sensor's own accounts (capture.user and web.user when the sensor creates them):
# what they share (the segments, the state directory) is readable by this group and nobody else.
SENSOR_GROUP: Final = "leireye"
SHARED_ACCOUNT: Final = "nobody"  # shared by many daemons: whatever it owns, they all own


def ensure_account(user: str, key: str, error: type[LeirEyeError] = CaptureError) -> None:
    """Create the system account `user` (no home, no login shell, primary group SENSOR_GROUP,
    created too when missing) unless it exists. Root only; idempotent; an `error` naming `key`
    when it cannot be created. Never touches an existing account."""
    if _exists(pwd.getpwnam, user):
        if user == SHARED_ACCOUNT:
            log.warning("%s is %s: every daemon running as %s can read the captured traffic "
                        "and take over the sensor", key, user, user)  # fmt: skip
        return
    if os.geteuid() != 0:
        raise error(f"{key}: no such user {user!r} (only root can create it)")
    if not _exists(grp.getgrnam, SENSOR_GROUP):
        _run(["groupadd", "--system", SENSOR_GROUP], key, error)
    _run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
          "--shell", _nologin(), "--gid", SENSOR_GROUP, user], key, error)  # fmt: skip
    log.info("created system user %s (group %s) for %s", user, SENSOR_GROUP, key)


def _exists(lookup: Any, name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def _nologin() -> str:
    for shell in ("/usr/sbin/nologin", "/sbin/nologin"):
        if os.path.exists(shell):
            return shell
    return "/bin/false"


def _run(command: list[str], key: str, error: type[LeirEyeError]) -> None:
    if shutil.which(command[0]) is None:
        raise error(f"{key}: cannot create the account: {command[0]} is not installed "
                    f"(create it yourself: {' '.join(command)})")  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 9):  # 9: created meanwhile by someone else
        raise error(f"{key}: `{' '.join(command)}` failed: {done.stderr.strip()}")


def owner_ids(
    user: str | None, key: str, error: type[LeirEyeError] = CaptureError
) -> tuple[int, int] | None:
    """(uid, gid) of the account that should own what a root process creates for `user` (shared
    memory, secrets); None when not root or no user is configured."""
    account = lookup_user(user, key, error)
    if account is None or os.geteuid() != 0:
        return None
    return account.pw_uid, account.pw_gid


@dataclass(frozen=True)
class Owners:
    """Who owns what the supervisor (root) creates for its children. None everywhere when not
    root; otherwise:

    - `writer` (capture.user's uid, web.user's gid): the segments the capture and stats
      processes write (ring, status, ids, stats), mode 0640: the web workers read them, nobody
      else opens them;
    - `web` (web.user's uid and gid): the connection registry, which only the workers write;
    - `group`: web.user's gid, the group of the state directory (0750 root), the users view
      (0640 root) and the control socket (0660 root).
    """

    writer: tuple[int, int] | None = None
    web: tuple[int, int] | None = None
    group: int | None = None

    @classmethod
    def of(cls, capture_user: str | None, web_user: str | None) -> Owners:
        if os.geteuid() != 0:
            return cls()
        capture = lookup_user(capture_user, "capture.user")
        web = lookup_user(web_user, "web.user")
        group = web.pw_gid if web is not None else None
        writer_uid = capture.pw_uid if capture is not None else 0
        writer_gid = group if group is not None else (capture.pw_gid if capture else 0)
        return cls(
            writer=(writer_uid, writer_gid),
            web=(web.pw_uid, web.pw_gid) if web is not None else None,
            group=group,
        )


def will_drop(account: pwd.struct_passwd | None) -> bool:
    return account is not None and os.geteuid() == 0 and account.pw_uid != 0


def drop_privileges(
    account: pwd.struct_passwd | None,
    key: str = "capture.user",
    error: type[LeirEyeError] = CaptureError,
    preload: tuple[str, ...] = (),
) -> None:
    """Become `account` for good (no supplementary groups, real and effective ids), or warn and
    stay as is when there is no account, or when not running as root. First import `PRELOAD`
    and `preload`: modules this process would otherwise import lazily, after the drop."""
    if os.geteuid() != 0:
        log.warning("not root: cannot switch to %s, running as uid %d", key, os.geteuid())
        return
    if account is None:
        log.warning("%s is not set: running as uid %d", key, os.geteuid())
        return
    if account.pw_uid == 0:
        log.warning("%s %s is root: keeping all privileges", key, account.pw_name)
        return
    for module in (*PRELOAD, *preload):  # what this process would import lazily later
        importlib.import_module(module)
    absent = set()
    for module in OPTIONAL_PRELOAD:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            absent.add(module.partition(".")[0])
    try:
        os.setgroups([])
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    except OSError as exc:
        raise error(f"cannot switch to user {account.pw_name}: {exc.strerror}") from None
    if os.getuid() != account.pw_uid or os.geteuid() != account.pw_uid or _can_regain_root():
        raise error(f"switching to user {account.pw_name} did not drop root")
    log.info("running as user %s (uid %d)", account.pw_name, account.pw_uid)
    if os.environ.get(CHECK_IMPORTS_ENV):
        _report_late_imports(account.pw_name, frozenset(absent))


# Imported lazily by code every unprivileged process may run: numpy.ma the first time np.unique
# runs (the decoder's UDP path); the UTF-16/32 codecs when `json.loads` meets bytes in those
# encodings (PyJWT decoding a forged token's header or payload).
PRELOAD: Final = (
    "numpy.ma",
    "numpy.strings",  # the decoder's port texts (decode/transport.py); numpy imports it lazily
    "numpy.char",  # the flow table's searches in `info` (flows/table.py, flows/appfields.py)
    "encodings.utf_16",
    "encodings.utf_16_le",
    "encodings.utf_16_be",
    "encodings.utf_32",
    "encodings.utf_32_le",
    "encodings.utf_32_be",
    "_strptime",  # the flow store's hour directories are parsed with datetime.strptime
)

# Optional modules libraries probe for on their own (pyarrow tries dateutil's and pandas' types
# when it converts Python values): imported before the drop when installed; when not, their
# probes fail alike before and after it.
OPTIONAL_PRELOAD: Final = ("dateutil.tz", "dateutil.relativedelta", "pandas", "pytz")

# Set (to anything) in the environment of `leireye run`, every process that drops privileges
# logs each module it imports afterwards (the tests set it and fail on such a line).
CHECK_IMPORTS_ENV: Final = "LEIREYE_CHECK_IMPORTS"
LATE_IMPORT: Final = "imported after dropping privileges"


def _report_late_imports(user: str, absent: frozenset[str] = frozenset()) -> None:
    """Log every module imported from now on. The installation (a clone under /root, a pyenv)
    may be unreadable by `user`: whatever a process needs must be imported before the drop, and
    an import that works here would fail there. Probes of `absent` modules (optional, not
    installed) are not reported: they fail here as they would there."""
    busy = False

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal busy
        if event != "import" or busy or args[0].partition(".")[0] in absent:
            return
        busy = True
        try:
            log.warning("%s %s: it fails where %s cannot read the installation", args[0],
                        LATE_IMPORT, user, stack_info=True)  # fmt: skip
        finally:
            busy = False

    sys.addaudithook(hook)


def _can_regain_root() -> bool:
    try:
        os.setuid(0)
    except PermissionError:
        return False
    return True


def state_directory(path: Path, group: int | None) -> Path:
    """Create `path` (mode 0750, root, group `group`: the web user's) or tighten it to that when
    it exists. Root only changes anything; a directory owned by another user, or writable by
    others (`/tmp`), is refused: whoever can write it can replace the secret or the users file."""
    path.mkdir(parents=True, exist_ok=True, mode=0o750)
    if os.geteuid() != 0:
        return path
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"state_dir {path} is not a directory")
    if st.st_uid != 0 or st.st_mode & 0o002:
        why = f"owned by uid {st.st_uid}" if st.st_uid != 0 else "writable by others"
        raise ConfigError(
            f"state_dir {path} is {why} (mode {stat.S_IMODE(st.st_mode):04o}): give the sensor "
            "a directory of its own"
        )
    os.chown(path, 0, 0 if group is None else group)
    os.chmod(path, 0o750)
    return path


def private_dir(path: Path, account: pwd.struct_passwd | None) -> Path:
    """Create `path` (and its parents) while still root, owned by `account` when privileges are
    about to be dropped, so that the unprivileged process can write into it and nobody else."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if account is not None and will_drop(account):
        os.chown(path, account.pw_uid, account.pw_gid)
    return path


def reachable_by(path: Path, uid: int, gid: int) -> Path | None:
    """The first component of `path` (a parent directory lacking search permission, or the file
    lacking read permission) that stops user `uid`/`gid` from reading it, judged by mode bits;
    None when it is readable. Root (uid 0) reads everything."""
    if uid == 0:
        return None
    path = path.resolve()
    for part in (*reversed(path.parents), path):
        try:
            st = part.stat()
        except OSError:
            return part
        need = 4 if part == path else 1  # read the file, search the directories
        if st.st_uid == uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid == gid:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        if not bits & need:
            return part
    return None
