"""Dropping root once a child has opened what only root may open.

An open pcap handle keeps capturing after `setgroups([])`, `setgid`, `setuid`; opening a new one
then fails with EPERM. So the capture process opens everything it needs as root (handle, shared
memory, its directory for stuck frames) and drops to `capture.user` before reading any packet;
a web worker maps its segments and reads its secrets, then drops to `web.user` before serving.
"""

from __future__ import annotations

import importlib
import logging
import os
import pwd
import sys
from pathlib import Path
from typing import Any, Final

from leireye.errors import CaptureError, LeirEyeError

log = logging.getLogger("leireye.privileges")


def lookup_user(
    user: str | None, key: str = "capture.user", error: type[LeirEyeError] = CaptureError
) -> pwd.struct_passwd | None:
    """The account to run as; None when no user is configured. A missing user is an `error`
    naming the config `key`."""
    if user is None:
        return None
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise error(f"{key}: no such user {user!r}") from None


def owner_ids(
    user: str | None, key: str, error: type[LeirEyeError] = CaptureError
) -> tuple[int, int] | None:
    """(uid, gid) of the account that should own what a root process creates for `user` (shared
    memory, secrets); None when not root or no user is configured."""
    account = lookup_user(user, key, error)
    if account is None or os.geteuid() != 0:
        return None
    return account.pw_uid, account.pw_gid


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
    if account is None:
        log.warning("%s is not set: running as uid %d", key, os.geteuid())
        return
    if os.geteuid() != 0:
        log.warning("not root: cannot switch to %s, running as uid %d", account.pw_name,
                    os.geteuid())  # fmt: skip
        return
    if account.pw_uid == 0:
        log.warning("%s %s is root: keeping all privileges", key, account.pw_name)
        return
    for module in (*PRELOAD, *preload):  # what this process would import lazily later
        importlib.import_module(module)
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
        _report_late_imports(account.pw_name)


# Imported lazily by code every unprivileged process may run: numpy.ma the first time np.unique
# runs (the decoder's UDP path); the UTF-16/32 codecs when `json.loads` meets bytes in those
# encodings (PyJWT decoding a forged token's header or payload).
PRELOAD: Final = (
    "numpy.ma",
    "encodings.utf_16",
    "encodings.utf_16_le",
    "encodings.utf_16_be",
    "encodings.utf_32",
    "encodings.utf_32_le",
    "encodings.utf_32_be",
)

# Set (to anything) in the environment of `leireye run`, every process that drops privileges
# logs each module it imports afterwards (the tests set it and fail on such a line).
CHECK_IMPORTS_ENV: Final = "LEIREYE_CHECK_IMPORTS"
LATE_IMPORT: Final = "imported after dropping privileges"


def _report_late_imports(user: str) -> None:
    """Log every module imported from now on. The installation (a clone under /root, a pyenv)
    may be unreadable by `user`: whatever a process needs must be imported before the drop, and
    an import that works here would fail there."""
    busy = False

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal busy
        if event != "import" or busy:
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
