"""No token in any log line uvicorn or websockets writes; floods of identical errors are capped.

The format strings are the real ones: found in uvicorn's installed source by their use of
`get_path_with_query_string`, so a uvicorn upgrade that adds a call site fails here first. The
last tests run a real uvicorn on port 0 with each WebSocket backend at TRACE level.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import logging
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leireye.web import logfilter
from leireye.web.logfilter import (
    REDACTED,
    RateLimitFilter,
    RedactingFilter,
    install_log_redaction,
    redact_text,
)

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyIn0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2ln"
OPAQUE = "opaque-Secret-42"
PATH = f"/ws/capture?token={JWT}&ticket={OPAQUE}&channel=packets"
SECRETS = (JWT, OPAQUE, "c2lnbmF0dXJl", "Secret-42")


def clean(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/ws?token=abc", f"/ws?token={REDACTED}"),
        ("/ws?x=1&token=abc&y=2", f"/ws?x=1&token={REDACTED}&y=2"),
        ("/ws?TOKEN=abc", f"/ws?TOKEN={REDACTED}"),
        ("/ws?access_token=abc", f"/ws?access_token={REDACTED}"),
        ("/ws?ticket=abc#frag", f"/ws?ticket={REDACTED}#frag"),
        ("/ws?password=a b", f"/ws?password={REDACTED} b"),
        ("b'token=abc'", f"b'token={REDACTED}'"),
        ('{"type": "auth", "token": "abc"}', f'{{"type": "auth", "token": "{REDACTED}"}}'),
        ("{'ticket': 'abc'}", f"{{'ticket': '{REDACTED}'}}"),
        (f"see {JWT}.", f"see {REDACTED}."),
        ("Bearer abc.def", f"Bearer {REDACTED}"),
        ("/ws?page=2&sort=token", "/ws?page=2&sort=token"),
        ("tokens: 3 ok", "tokens: 3 ok"),
        ("plain message", "plain message"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # idempotent


# -- every call site in uvicorn that logs the path ----------------------------------------------

KNOWN_FORMATS = {
    '%s - "WebSocket %s" [accepted]',
    '%s - "WebSocket %s" 403',
    '%s - "WebSocket %s" %d',
    '%s - "%s %s HTTP/%s" %d',
}


def uvicorn_path_log_calls() -> list[tuple[str, int, str]]:
    """(file, line, format) of every logging call in uvicorn that passes the query string."""
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("uvicorn is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in {"debug", "info", "warning", "error", "exception", "log"}:
                continue
            names = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call)
                     and isinstance(n.func, ast.Name)}  # fmt: skip
            if "get_path_with_query_string" in names:
                fmt = next(a.value for a in node.args if isinstance(a, ast.Constant))
                found.append((str(path.relative_to(root)), node.lineno, str(fmt)))
    return found


def test_we_know_every_uvicorn_call_site_that_logs_the_query_string() -> None:
    calls = uvicorn_path_log_calls()
    assert {fmt for _, _, fmt in calls} == KNOWN_FORMATS, calls
    files = {file for file, _, _ in calls}
    for backend in ("wsproto_impl.py", "websockets_impl.py", "websockets_sansio_impl.py"):
        assert f"protocols/websockets/{backend}" in files


def args_for(fmt: str) -> tuple[Any, ...]:
    if fmt.count("%") == 5:
        return ("127.0.0.1:5555", "GET", PATH, "1.1", 200)
    if fmt.endswith("%d"):
        return ("127.0.0.1:5555", PATH, 401)
    return ("127.0.0.1:5555", PATH)


def make_record(
    msg: Any, args: Any, name: str = "uvicorn.error", exc_info: Any = None, sinfo: Any = None
) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, exc_info, sinfo=sinfo)


def formatted(record: logging.LogRecord, formatter: logging.Formatter | None = None) -> str:
    RedactingFilter().filter(record)
    return (formatter or logging.Formatter("%(message)s")).format(record)


@pytest.mark.parametrize("fmt", sorted(KNOWN_FORMATS))
def test_each_uvicorn_format_is_redacted(fmt: str) -> None:
    out = formatted(make_record(fmt, args_for(fmt)))
    assert clean(out) and f"token={REDACTED}" in out and "channel=packets" in out


def test_the_access_log_formatter_still_works() -> None:
    uvicorn_logging = pytest.importorskip("uvicorn.logging")
    fmt = '%s - "%s %s HTTP/%s" %d'
    access = uvicorn_logging.AccessFormatter(
        '%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    )
    out = formatted(make_record(fmt, args_for(fmt), "uvicorn.access"), access)
    assert out == f'127.0.0.1:5555 - "GET {redact_text(PATH)} HTTP/1.1" 200 OK'


@pytest.mark.parametrize(
    ("module", "fmt", "args"),
    [
        ("websockets.legacy.server", "< GET %s HTTP/1.1", (PATH,)),
        ("websockets.server", "< %s %s %s", ("GET", PATH, "HTTP/1.1")),
        ("websockets.server", "< %s: %s", ("Authorization", f"Bearer {OPAQUE}")),
        ("websockets.server", "< %s: %s", ("cookie", f"session={OPAQUE}")),
        ("websockets.protocol", "< %s", (f'TEXT \'{{"type": "auth", "token": "{JWT}"}}\'',)),
    ],
)
def test_websockets_debug_lines_are_redacted(module: str, fmt: str, args: tuple[Any, ...]) -> None:
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None:
        pytest.skip("websockets is not installed")
    source = Path(spec.origin or "").parent / (module.split(".", 1)[1].replace(".", "/") + ".py")
    assert f'"{fmt}"' in source.read_text()
    assert clean(formatted(make_record(fmt, args)))


def test_the_asgi_trace_scope_is_redacted() -> None:
    scope = {
        "type": "websocket",
        "path": "/ws/capture",
        "query_string": PATH.split("?")[1].encode(),
    }
    record = make_record("%s [%d] Started scope=%s", ("ASGI", 1, scope), "uvicorn.asgi")
    out = formatted(record)
    assert clean(out) and "query_string" in out and f"token={REDACTED}" in out


def test_msg_mapping_args_tracebacks_and_stacks_are_redacted() -> None:
    assert clean(formatted(make_record(f"GET {PATH}", None)))
    assert clean(formatted(make_record(ValueError(PATH), None)))
    record = make_record("%(path)s", ({"path": PATH},))  # LogRecord unwraps the mapping
    assert isinstance(record.args, dict) and clean(formatted(record))
    try:
        raise RuntimeError(f"bad request {PATH}")
    except RuntimeError:
        record = make_record("failed", (), exc_info=sys.exc_info())
    out = formatted(record)
    assert "RuntimeError: bad request" in out and clean(out)
    record = make_record("x", (), sinfo=f"Stack (most recent call last):\n  {PATH}")
    assert clean(formatted(record))


def test_numbers_and_unprintable_args_are_left_alone() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    broken = Broken()
    record = make_record("%d %s %s", (200, None, broken))
    RedactingFilter().filter(record)
    assert record.args == (200, None, broken)


# -- installing ---------------------------------------------------------------------------------


def remove_log_redaction() -> None:
    """Detach every filter `install_log_redaction` attached (the sensor never does)."""
    with logfilter._install_lock:
        for target, flt in logfilter._installed:
            target.removeFilter(flt)
        logfilter._installed.clear()


@pytest.fixture
def clean_logging() -> Iterator[list[str]]:
    names = ["uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "leireye", "leye-t"]
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers]
    # Start from a clean slate: an in-process uvicorn run earlier in the session (access log
    # off) leaves `uvicorn.access` without handlers and not propagating.
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
        logger.handlers[:] = []
        logger.propagate = True
        logger.disabled = False
    remove_log_redaction()
    yield names
    remove_log_redaction()
    for logger, level, handlers, propagate, disabled in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.disabled = disabled


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def test_install_covers_child_loggers_through_handlers(clean_logging: list[str]) -> None:
    top = logging.getLogger("leye-t")
    top.propagate = False
    collect = Collect()
    top.addHandler(collect)
    install_log_redaction(["leye-t"])
    install_log_redaction(["leye-t"])  # idempotent
    assert len(top.filters) == 2 and len(collect.filters) == 2
    logging.getLogger("leye-t.web.session").warning("client sent %s", PATH)
    assert clean(collect.text) and REDACTED in collect.text
    top.propagate = True


def test_install_again_after_handlers_were_replaced(clean_logging: list[str]) -> None:
    install_log_redaction()
    uvicorn_logger = logging.getLogger("uvicorn")
    collect = Collect()
    uvicorn_logger.handlers[:] = [collect]  # what dictConfig does
    install_log_redaction()
    assert any(isinstance(f, RedactingFilter) for f in collect.filters)
    remove_log_redaction()
    assert not collect.filters and not uvicorn_logger.filters


# -- rate limiting ------------------------------------------------------------------------------


def error(msg: str, at: float, *args: Any, name: str = "uvicorn.error") -> logging.LogRecord:
    record = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)
    record.created = at
    return record


def test_a_flood_is_capped_and_summarised(clean_logging: list[str]) -> None:
    limiter = RateLimitFilter(per_window=10, window_s=60)
    collect = Collect()
    logging.getLogger("uvicorn.error").addHandler(collect)
    t0 = 1_000.0
    passed = [limiter.filter(error("Invalid UTF-8 from %s", t0 + i / 10, i)) for i in range(100)]
    assert passed == [True] * 10 + [False] * 90
    assert limiter.filter(error("another message", t0 + 20))  # its own budget
    assert not collect.lines
    assert limiter.filter(error("Invalid UTF-8 from %s", t0 + 61, 0))  # a new window
    assert collect.lines == ["ERROR uvicorn.error suppressed 90 similar messages in 61 s: "
                             "'Invalid UTF-8 from %s'"]  # fmt: skip


def test_info_is_never_limited_and_loggers_are_separate() -> None:
    limiter = RateLimitFilter(per_window=1, window_s=60)
    info = [logging.LogRecord("uvicorn.access", logging.INFO, "", 1, "x", (), None)] * 5
    assert all(limiter.filter(logging.makeLogRecord(r.__dict__)) for r in info)
    assert limiter.filter(error("same", 1.0)) and not limiter.filter(error("same", 2.0))
    assert limiter.filter(error("same", 2.0, name="leireye.web"))


def test_flush_logs_pending_summaries(clean_logging: list[str]) -> None:
    limiter = RateLimitFilter(per_window=1, window_s=10)
    collect = Collect()
    logging.getLogger("uvicorn.error").addHandler(collect)
    for i in range(4):
        limiter.filter(error(f"GET {PATH} failed", 100.0 + i))
    assert limiter.flush(105.0) == 0  # the window is not over
    assert limiter.flush(111.0) == 1
    assert "suppressed 3 similar messages" in collect.text
    assert limiter.flush(200.0) == 0


def test_a_summary_is_redacted_when_it_goes_through_the_installed_filters(
    clean_logging: list[str],
) -> None:
    limiter = RateLimitFilter(per_window=1, window_s=10)
    install_log_redaction(rate_limit=limiter)
    collect = Collect()
    logging.getLogger("uvicorn.error").addHandler(collect)
    for _ in range(3):
        logging.getLogger("uvicorn.error").error(f"GET {PATH} failed")
    limiter.flush(time.time() + 11)
    assert len(collect.lines) == 2 and "suppressed 2 similar messages" in collect.lines[1]
    assert clean(collect.text)


def test_the_number_of_remembered_templates_is_bounded(clean_logging: list[str]) -> None:
    limiter = RateLimitFilter(per_window=1, window_s=60, max_keys=3)
    collect = Collect()
    logging.getLogger("uvicorn.error").addHandler(collect)
    limiter.filter(error("first", 1.0))
    limiter.filter(error("first", 1.5))  # suppressed
    for i in range(5):
        limiter.filter(error(f"other {i}", 2.0))
    assert len(limiter._windows) == 3
    assert "suppressed 1 similar messages" in collect.text  # said when "first" was evicted


# -- a real uvicorn, each WebSocket backend -----------------------------------------------------


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()  # websocket.connect
    if scope["path"] == "/deny":
        await send({"type": "websocket.close"})  # before accept: HTTP 403
    elif scope["path"] == "/status":
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b""})
    else:
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass


async def raw_frame_then_close(port: int, payload: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()


async def exercise(ws: str, invalid_utf8_frames: int) -> None:
    import uvicorn
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    config = uvicorn.Config(asgi_app, ws=ws, http="h11", lifespan="off", log_config=None,
                            log_level="trace", ws_per_message_deflate=False)  # fmt: skip
    install_log_redaction()  # after uvicorn.Config configured its loggers
    import uvicorn

    server = uvicorn.Server(config)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
            async with connect(f"ws://127.0.0.1:{port}{PATH}") as client:
                await client.send(f'{{"type": "auth", "token": "{JWT}"}}')
            for path in ("/deny", "/status"):
                with pytest.raises(InvalidStatus):
                    async with connect(f"ws://127.0.0.1:{port}{path}?{PATH.split('?')[1]}"):
                        pass
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            await reader.read()
            writer.close()
            for _ in range(invalid_utf8_frames):
                await raw_frame_then_close(port, b"\xff\xfe")
    finally:
        server.should_exit = True
        await task
        sock.close()


# uvicorn's deprecated "websockets" (legacy) backend cannot serve with websockets 17 (its
# handshake raises "missing a required argument: 'path'"); its call sites are covered above.
@pytest.mark.parametrize("ws", ["wsproto", "websockets-sansio"])
def test_a_real_uvicorn_logs_no_token(clean_logging: list[str], ws: str) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("websockets")  # the client, and the sansio backend
    pytest.importorskip(ws.split("-")[0])
    collect = Collect()
    logging.getLogger().addHandler(collect)  # added after install: only logger filters act
    try:
        asyncio.run(exercise(ws, invalid_utf8_frames=0))
    finally:
        logging.getLogger().removeHandler(collect)
    lines = [line for line in collect.lines if " uvicorn" in line]
    text = "\n".join(lines)
    assert clean(text), text
    assert text.count(f"token={REDACTED}") >= 4  # accepted, 403, 401 and the access line
    for outcome in ("[accepted]", '" 403', '" 401', "/ws/capture?token=[REDACTED]"):
        assert outcome in text
    assert f"'query_string': b'token={REDACTED}" in text  # the TRACE scope dump


def test_a_flood_of_invalid_utf8_frames_from_a_real_client_is_capped(
    clean_logging: list[str],
) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("websockets")
    limiter = RateLimitFilter(per_window=3, window_s=60)
    install_log_redaction(rate_limit=limiter)
    collect = Collect()
    logging.getLogger().addHandler(collect)
    try:
        asyncio.run(exercise("websockets-sansio", invalid_utf8_frames=8))
        limiter.flush(time.time() + 61)
    finally:
        logging.getLogger().removeHandler(collect)
    tracebacks = [r for r in collect.records if r.getMessage().startswith("Invalid UTF-8")]
    assert len(tracebacks) == 3
    assert any("suppressed 5 similar messages" in line for line in collect.lines)


async def http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":  # the worker's uvicorn runs the lifespan protocol
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await asgi_app(scope, receive, send)


async def one_request(config: Any, target: str) -> None:
    import uvicorn

    server = uvicorn.Server(config)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            await reader.read()
            writer.close()
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.mark.parametrize("access_log", [False, True])
def test_the_access_log_is_off_unless_asked_for_and_redacted_when_on(
    clean_logging: list[str], access_log: bool
) -> None:
    from leireye.config import Config, WebConfig
    from leireye.web.worker import uvicorn_config

    collect = Collect()
    logging.getLogger().addHandler(collect)
    logging.getLogger("uvicorn").setLevel(logging.INFO)  # as the worker's setup_logging does
    try:
        config = uvicorn_config(Config(web=WebConfig(access_log=access_log)), http_app)
        install_log_redaction()  # after uvicorn.Config configured its loggers, as the worker
        asyncio.run(one_request(config, f"/api/capture/status?token={JWT}"))
    finally:
        logging.getLogger().removeHandler(collect)
    access = [r.getMessage() for r in collect.records if r.name == "uvicorn.access"]
    if not access_log:
        assert access == []
        return
    assert len(access) == 1, access
    assert f"/api/capture/status?token={REDACTED}" in access[0] and JWT not in access[0]
