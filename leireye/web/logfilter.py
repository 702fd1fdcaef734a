"""Log hygiene for the web workers: no secrets in log lines, no floods from hostile peers.

uvicorn logs the path *with the query string* of every WebSocket handshake at INFO, accepted
or refused (`'%s - "WebSocket %s" [accepted]'`, `... 403`, `... %d`), and of every HTTP request
in the access log (`'%s - "%s %s HTTP/%s" %d'`); with TRACE on, `uvicorn.asgi` logs the whole
scope (`query_string: b'token=...'`), and the websockets backends log the request line and
headers (`"< GET %s HTTP/1.1"`, `"< %s %s %s"`, `"< %s: %s"`) and every frame (`"< %s"`, the
first of which may be `{"type": "auth", "token": ...}`) at DEBUG. A client following the spec
puts its JWT in `?token=`, so `RedactingFilter` rewrites every record before a handler formats
it:

- the value of any query parameter or JSON/repr field whose name ends in token, ticket, jwt,
  secret, password or api_key (`token=`, `access_token=`, `ticket=`, `"token": "..."` in a
  logged `auth` frame), anything shaped like a JWT (`eyJ...x.y.z`), and the credentials after
  `Bearer`/`Basic`, become `[REDACTED]`;
- in `record.msg`, in each of `record.args` (tuple or mapping; strings are rewritten in place so
  uvicorn's access formatter, which unpacks the five args, still works; other objects are
  replaced by their redacted `str()` only when that changes something), in the traceback text
  (`exc_text`, formatted here so the handler uses the redacted copy) and in `stack_info`;
- the values of sensitive headers (Authorization, Cookie, ...) in the websockets header lines.

`RateLimitFilter` lets through at most N records per (logger, message template) per window at
WARNING and above, then counts the rest and logs one "suppressed K similar messages" line when
the window is over (on the next record that passes the filter, or `flush()`). It keeps an
unauthenticated peer that sends, say, invalid UTF-8 frames in a loop from filling the disk
with tracebacks. INFO lines (the access log) are never suppressed.

Filters on a logger only see records created on that very logger, not on its children, so
`install_log_redaction()` attaches both filters to the loggers *and* to their handlers (and to
the root logger's handlers, where records that propagate end up). `logging.config.dictConfig`
(uvicorn's `log_config`) replaces handlers: call it again after uvicorn configured logging.
A record is processed once however many filters it meets.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

REDACTED: Final = "[REDACTED]"
LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "leireye")
SENSITIVE_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-auth-token"}
)

_NAMES: Final = r"[\w.-]*(?:token|ticket|jwt|secret|passwd|password|api[_-]?key)"
# `token=...` in a query string (or anywhere): up to the next separator.
_SECRET_PARAM: Final = re.compile(rf"(?i)\b({_NAMES})=[^&\s;#\"'<>]*")
# `"token": "..."` in JSON or a repr (an `auth` message in a logged frame, a dict).
_SECRET_FIELD: Final = re.compile(rf"(?i)(\b{_NAMES}\\?[\"']?\s*:\s*\\?[\"'])[^\"'\s\\]*")
_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_AUTH_SCHEME: Final = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_HINTS: Final = ("token", "ticket", "jwt", "secret", "passw", "key", "eyj", "bearer", "basic")

_REDACTED_MARK: Final = "_leireye_redacted"
_RATE_MARK: Final = "_leireye_rate_checked"
_SUMMARY_MARK: Final = "_leireye_summary"
_HEADER_TEMPLATES: Final = frozenset({"< %s: %s", "> %s: %s"})


def redact_text(text: str) -> str:
    """`text` with every secret-looking value replaced by `[REDACTED]`."""
    lowered = text.lower()
    if not any(hint in lowered for hint in _HINTS):
        return text
    text = _SECRET_PARAM.sub(rf"\1={REDACTED}", text)
    text = _SECRET_FIELD.sub(rf"\1{REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    return _AUTH_SCHEME.sub(rf"\1 {REDACTED}", text)


def _redact_arg(arg: object) -> object:
    if isinstance(arg, str):
        return redact_text(arg)
    if arg is None or isinstance(arg, int | float):
        return arg
    try:
        text = str(arg)
    except Exception:  # str() failed: the handler's own formatting will report it
        return arg
    redacted = redact_text(text)
    return arg if redacted == text else redacted


class RedactingFilter(logging.Filter):
    """Rewrites secrets out of a record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _REDACTED_MARK, False):
            return True
        setattr(record, _REDACTED_MARK, True)
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        else:
            record.msg = _redact_arg(record.msg)
        args = record.args
        if isinstance(args, tuple):
            if record.msg in _HEADER_TEMPLATES and len(args) == 2 and _sensitive(args[0]):
                args = (args[0], REDACTED)
            record.args = tuple(_redact_arg(arg) for arg in args)
        elif isinstance(args, Mapping):
            record.args = {key: _redact_arg(value) for key, value in args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def _sensitive(header: object) -> bool:
    return isinstance(header, str) and header.lower() in SENSITIVE_HEADERS


_FORMATTER: Final = logging.Formatter()


@dataclass
class _Window:
    start: float
    passed: int = 0
    suppressed: int = 0
    levelno: int = logging.WARNING


class RateLimitFilter(logging.Filter):
    """At most `per_window` records per (logger, template) per `window_s` seconds, for records
    at `min_level` and above; the time is the record's own (`record.created`)."""

    def __init__(
        self,
        per_window: int = 10,
        window_s: float = 60.0,
        min_level: int = logging.WARNING,
        max_keys: int = 1024,
    ) -> None:
        super().__init__()
        if per_window < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("per_window and max_keys must be >= 1, window_s > 0")
        self.per_window = per_window
        self.window_s = window_s
        self.min_level = min_level
        self.max_keys = max_keys
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY_MARK, False) or record.levelno < self.min_level:
            return True
        verdict = getattr(record, _RATE_MARK, None)
        if verdict is not None:
            return bool(verdict)
        key = (record.name, redact_text(str(record.msg)))
        now = record.created
        with self._lock:
            due = self._take_due(now, key)
            window = self._windows.get(key)
            if window is None or self._over(window, now):
                if window is not None and window.suppressed:
                    due.append((key, window))
                window = _Window(start=now)
                self._windows.pop(key, None)
                self._windows[key] = window
                due.extend(self._evict())
            if window.passed < self.per_window:
                window.passed += 1
                verdict = True
            else:
                window.suppressed += 1
                window.levelno = max(window.levelno, record.levelno)
                verdict = False
        setattr(record, _RATE_MARK, verdict)
        self._emit(due, now)
        return verdict

    def flush(self, now: float) -> int:
        """Log the summaries of every window that is over at `now`; how many were logged."""
        with self._lock:
            due = self._take_due(now, None, force=True)
        self._emit(due, now)
        return len(due)

    def _take_due(
        self, now: float, skip: tuple[str, str] | None, force: bool = False
    ) -> list[tuple[tuple[str, str], _Window]]:
        if not force and now < self._next_sweep:
            return []
        self._next_sweep = now + 1.0
        due = []
        for key, window in list(self._windows.items()):
            if key != skip and self._over(window, now):
                del self._windows[key]
                if window.suppressed:
                    due.append((key, window))
        return due

    def _over(self, window: _Window, now: float) -> bool:
        # A record stamped a little before the window's start (another thread) still counts in
        # it; a clock stepped back by more than a window starts a new one.
        return not window.start - self.window_s <= now < window.start + self.window_s

    def _evict(self) -> list[tuple[tuple[str, str], _Window]]:
        evicted = []
        while len(self._windows) > self.max_keys:
            key = next(iter(self._windows))
            window = self._windows.pop(key)
            if window.suppressed:
                evicted.append((key, window))
        return evicted

    def _emit(self, due: Iterable[tuple[tuple[str, str], _Window]], now: float) -> None:
        for (name, template), window in due:
            summary = logging.LogRecord(
                name,
                window.levelno,
                __file__,
                0,
                "suppressed %d similar messages in %.0f s: %r",
                (window.suppressed, max(now - window.start, 0.0), template[:200]),
                None,
            )
            setattr(summary, _SUMMARY_MARK, True)
            logging.getLogger(name).handle(summary)


_F = TypeVar("_F", bound=logging.Filter)
_installed: list[tuple[logging.Filterer, logging.Filter]] = []
_install_lock = threading.Lock()


def install_log_redaction(
    logger_names: Iterable[str] = LOGGERS,
    *,
    rate_limit: RateLimitFilter | None = None,
) -> None:
    """Attach the rate limiter and the redaction filter to each named logger, to its handlers
    and to the root logger's handlers; idempotent (call it again after `dictConfig`). The same
    filter instances are reused across calls; pass `rate_limit` to set the limits the first
    time."""
    with _install_lock:
        limiter = _current(RateLimitFilter) or rate_limit or RateLimitFilter()
        redactor = _current(RedactingFilter) or RedactingFilter()
        targets: list[logging.Filterer] = []
        for name in logger_names:
            logger = logging.getLogger(name)
            targets.append(logger)
            targets.extend(logger.handlers)
        targets.extend(logging.getLogger().handlers)
        for target in targets:
            for flt in (limiter, redactor):
                if flt not in target.filters:
                    target.addFilter(flt)
                    _installed.append((target, flt))


def _current(kind: type[_F]) -> _F | None:
    return next((flt for _, flt in _installed if isinstance(flt, kind)), None)
