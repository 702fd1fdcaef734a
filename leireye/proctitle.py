"""Process titles: each process of a sensor says what it is in `ps` and `top`.

Spawned children otherwise all read `python -B -c from multiprocessing.spawn import ...`. Two
names are set: the kernel's command name (`comm`, at most 15 bytes, what `top` and `ps -o comm`
show, set with prctl(PR_SET_NAME)) for this thread, and, when the optional `setproctitle`
package is installed (the `sensor` extra), the whole command line that `ps -f` shows. Call
`set_title` before dropping privileges: it imports nothing later.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
from typing import Any, Final

PR_SET_NAME: Final = 15
COMM_MAX: Final = 15

_setproctitle: Any = None
with contextlib.suppress(ImportError):
    _setproctitle = importlib.import_module("setproctitle")


def set_title(title: str, comm: str) -> None:
    """`title` for `ps -f` (with setproctitle), `comm` (cut to 15 bytes) for `top`/`ps -o comm`."""
    if _setproctitle is not None:
        _setproctitle.setproctitle(title)  # also sets comm, to the title's start: set it after
    name = comm.encode("utf-8", "replace")[:COMM_MAX]
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def role_title(role: str) -> tuple[str, str]:
    """The title and command name of a supervisor's child by its role (`capture`, `capture-1`,
    `stats`, `web-0`): (`leireye: web 0`, `leireye-web0`)."""
    kind, _, index = role.partition("-")
    if kind == "capture":
        index = index or "0"
        return f"leireye: capture {index}", f"leireye-cap{index}"
    words = f"{kind} {index}".strip()
    return f"leireye: {words}", f"leireye-{kind}{index}"
