"""Logging for every LeirEye process: stderr, one event a line, UTC timestamps."""

from __future__ import annotations

import logging
import sys
import time

LINE = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def setup_logging(level: str = "INFO") -> None:
    """Send `leireye.*` records to stderr as `TIME LEVEL process[pid] logger: message`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter(LINE))
    root = logging.getLogger("leireye")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
