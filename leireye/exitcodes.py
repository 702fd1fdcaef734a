"""Every exit code a LeirEye process ends with, and what the supervisor makes of it.

The children (capture shards, the stats process, web workers) exit with these; the supervisor
decides from them whether to restart; `leireye` itself (the CLI) uses the last two. The table in
`docs/architecture.md` (Restarts) lists the same codes.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # stopped by SIGTERM or on request, or a replay reached the end of its file
    ERROR = 1  # failed while running (the interface went away, a bug): restarted
    FAILED = 2  # the CLI: a command failed, or `leireye run` could not start a child
    FATAL = 3  # cannot start (bad interface, BPF, user, permission, shared memory): not restarted
    NO_FANOUT = 4  # capture shard k > 0 and the kernel refused PACKET_FANOUT: not needed
    STUCK = 70  # the capture watchdog found a decode stuck on one batch and saved it: restarted
    INTERRUPTED = 130  # the CLI: Ctrl-C (128 + SIGINT)
