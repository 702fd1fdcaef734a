"""Logging for every LeirEye process: stderr, one event a line, UTC timestamps."""

from __future__ import annotations

import logging
import sys
import time

LINE = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def setup_logging(level: str = "INFO", loggers: tuple[str, ...] = ("leireye",)) -> None:
    """Send the records of `loggers` (and their children) to stderr as
    `TIME LEVEL process[pid] logger: message`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter(LINE))
    for name in loggers:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
