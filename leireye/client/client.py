"""`LeirEyeClient`: the asyncio client of `/ws/capture` that survives restarts.

One background task owns the connection: it connects, authenticates with a first `auth` message
(the token never goes into a URL), subscribes again to whatever the caller is iterating, and
reads. When the connection drops for a transient reason (a restarted worker, the server going
away, an idle or auth timeout) it waits the next delay of `Backoff` and does it again, resuming
the packets channel with `since` = the last id received, so nothing still in the ring is lost
or repeated. Before the token expires it sends a fresh one (`TokenSource.renew`); every
`ping_interval` it sends a `ping`, and a ping left unanswered until the next one drops the
connection (then it reconnects). Bad credentials, and closes the server would repeat (too many
connections, rate limit), end the iteration with the matching `ClientError`.

Packets a caller will not get are reported, never silent: as `Gap` items when it iterates with
`packets(gaps=True)`, else to the `on_gap` callback, else as a warning on the `leireye.client`
logger.

`packets()` and `stats()` subscribe when their iteration begins, so a caller that causes traffic
right after creating one cannot know whether the stream has started yet (the packets may be
captured before the stream takes its start from the ring). `subscribe_packets()` and
`subscribe_stats()` return the same iterators once the server has confirmed the subscription:
from then on, everything captured is in the stream.

`flows()` and `subscribe_flows()` do the same for flow events (`FlowMessage`: `event` is
"started", "updated" or "ended", `data` the flow); they do not resume across a reconnect (a
`reconnect` gap says events may be missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Literal, overload

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from leireye.client.auth import TokenSource, choose_token_source, ring_head
from leireye.client.columns import decode_columns
from leireye.client.core import (
    BACKOFF_S,
    PING_INTERVAL_S,
    Backoff,
    Gap,
    Outcome,
    ResumeCursor,
    close_outcome,
    decode_server,
    flow_filters,
    http_base,
    packet_filters,
    parse_iso,
    refresh_delay,
)
from leireye.client.errors import (
    AuthenticationError,
    CertificateMismatch,
    ClientError,
    ConnectionFailed,
    ProtocolError,
    TokenExpired,
)
from leireye.client.feed import FeedClosed
from leireye.client.streams import FlowStream, PacketStream, StatsStream, Stream, Subscriptions
from leireye.client.tls import client_tls
from leireye.wire import (
    AuthError,
    AuthSuccess,
    ErrorMessage,
    FlowMessage,
    LimitsInfo,
    PacketColumns,
    PacketData,
    Pong,
    ServerMessage,
    StatsData,
    StatusData,
    StatusMessage,
    UserInfo,
)

log = logging.getLogger("leireye.client")

DEFAULT_URL = "ws://127.0.0.1:8000/ws/capture"
Sleep = Callable[[float], Awaitable[None]]
Callback = Callable[[Any], object]
_LIVE: Any = object()  # yielded first by a stream that `subscribe_*` starts: it is confirmed


class LeirEyeClient:
    """`async with LeirEyeClient(url, token=...) as c: async for p in c.packets(port=53): ...`

    `token`: a JWT, or a function (sync or async) returning one, called whenever a token is
    needed (so it can hand out fresh ones). Or `username` and `password` for the login API
    (`api_url`, default: the WebSocket URL's host over http/https). Or any `token_source`.

    `wss://` (and the https login API) trusts the system's CAs, or `cafile` (a PEM file, e.g. a
    sensor's self-signed `tls-cert.pem`), or only a certificate with the SHA-256 `fingerprint`
    (`leireye tls-fingerprint`), checked before the token or password is sent.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | Callable[[], str | Awaitable[str]] | None = None,
        username: str | None = None,
        password: str | None = None,
        token_source: TokenSource | None = None,
        api_url: str | None = None,
        reconnect: bool = True,
        backoff: Backoff | Sequence[float] = BACKOFF_S,
        ping_interval: float = PING_INTERVAL_S,
        open_timeout: float = 10.0,
        sleep: Sleep = asyncio.sleep,
        on_gap: Callable[[Gap], object] | None = None,
        on_status: Callable[[StatusData], object] | None = None,
        cafile: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.url = url
        self.api_url = api_url or http_base(url)
        self._tls = client_tls(url, cafile, fingerprint)
        self._source = choose_token_source(
            token, username, password, token_source, self.api_url, self._tls
        )
        self._reconnect = reconnect
        self._backoff = backoff if isinstance(backoff, Backoff) else Backoff(backoff)
        self._ping_interval = ping_interval
        self._open_timeout = open_timeout
        self._sleep = sleep
        self._on_gap, self._on_status = on_gap, on_status
        self.user: UserInfo | None = None
        self.limits: LimitsInfo | None = None
        self.status: StatusData | None = None
        self.expires_at: float | None = None
        self.connections = 0  # successful connections so far: 1 + reconnects
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._failure: ClientError | None = None
        self._subs = Subscriptions()
        self._closed = False
        self._auth_changed = asyncio.Event()
        self._pong_ids: set[int] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> LeirEyeClient:
        await self.connect()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and authenticate; raise the `ClientError` if the first attempt fails."""
        if self._runner is not None:
            raise RuntimeError("this client is already connected")
        self._ready = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(), name="leireye-client")
        await asyncio.shield(self._ready)

    async def close(self) -> None:
        self._closed = True
        self._subs.finish()
        ws = self._ws
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if ws is not None:
            await ws.close()

    # -- what the caller iterates ---------------------------------------------------------------

    @overload
    def packets(
        self, protocol: str | None = ..., port: int | None = ..., *,
        columns: Literal[True], **kw: Any,
    ) -> AsyncGenerator[Any, None]: ...  # fmt: skip
    @overload
    def packets(
        self, protocol: str | None = ..., port: int | None = ..., *,
        gaps: Literal[False] = ..., **kw: Any,
    ) -> AsyncGenerator[PacketData, None]: ...  # fmt: skip
    @overload
    def packets(
        self, protocol: str | None = ..., port: int | None = ..., *,
        gaps: Literal[True], **kw: Any,
    ) -> AsyncGenerator[PacketData | Gap, None]: ...  # fmt: skip

    def packets(
        self,
        protocol: str | None = None,
        port: int | None = None,
        *,
        gaps: bool = False,
        since: int | None = None,
        batch: bool = True,
        binary: bool = True,
        columns: bool = False,
        **filters: Any,
    ) -> AsyncGenerator[Any, None]:
        """Packets matching the filters (keyword names as in the protocol: `src_ip`, `dst_ip`,
        `ip`, `src_port`, `dst_port`, `min_length`, `max_length`; `sensor` at a fleet central),
        oldest first, without repeats across reconnects. `since`: start after this packet id
        (default: the ring's newest id when iteration starts). One packets iteration per client
        at a time.

        The subscription starts with the iteration: to act (send traffic, start a job) only
        once the stream is sure to see what follows, use `subscribe_packets`.

        The packets come in binary batches (`format: "columns"`) unless `binary=False` or
        `batch=False` (JSON). `columns=True` yields each batch as a dict of arrays
        (`columns.arrays_of`; needs numpy) instead of one `PacketData` per packet."""
        wanted = packet_filters(protocol=protocol, port=port, **filters)
        return self._packet_stream(
            wanted, gaps=gaps, since=since, batch=batch, binary=binary and batch,
            columns=columns, announce=False,
        )  # fmt: skip

    @overload
    async def subscribe_packets(
        self, protocol: str | None = ..., port: int | None = ..., *,
        columns: Literal[True], **kw: Any,
    ) -> AsyncGenerator[Any, None]: ...  # fmt: skip
    @overload
    async def subscribe_packets(
        self, protocol: str | None = ..., port: int | None = ..., *,
        gaps: Literal[False] = ..., **kw: Any,
    ) -> AsyncGenerator[PacketData, None]: ...  # fmt: skip
    @overload
    async def subscribe_packets(
        self, protocol: str | None = ..., port: int | None = ..., *,
        gaps: Literal[True], **kw: Any,
    ) -> AsyncGenerator[PacketData | Gap, None]: ...  # fmt: skip

    async def subscribe_packets(
        self,
        protocol: str | None = None,
        port: int | None = None,
        *,
        gaps: bool = False,
        since: int | None = None,
        batch: bool = True,
        binary: bool = True,
        columns: bool = False,
        **filters: Any,
    ) -> AsyncGenerator[Any, None]:
        """`packets(...)`, subscribed already: returns once the server has confirmed the
        subscription, so every packet captured from then on is in the stream.

            stream = await c.subscribe_packets(protocol="UDP", port=5353)
            trigger_the_traffic()
            async for p in stream: ...

        Raises `SubscriptionError` when the server refuses the filters, the client's
        `ClientError` when it failed meanwhile. Waits through reconnects (and, on a client not
        yet connected, until `connect()`). Leaving the iteration, or `await stream.aclose()`,
        unsubscribes."""
        wanted = packet_filters(protocol=protocol, port=port, **filters)
        stream = self._packet_stream(
            wanted, gaps=gaps, since=since, batch=batch, binary=binary and batch,
            columns=columns, announce=True,
        )  # fmt: skip
        await anext(stream)  # the `_LIVE` marker, or the exception that ended the stream
        return stream

    async def _packet_stream(
        self,
        filters: dict[str, str | int | list[str]],
        *,
        gaps: bool,
        since: int | None,
        batch: bool,
        announce: bool,
        binary: bool = False,
        columns: bool = False,
    ) -> AsyncGenerator[Any, None]:
        if since is None:
            since = await ring_head(self.api_url, self._source, self._open_timeout, tls=self._tls)
        if self._subs.packets is not None:
            raise RuntimeError("this client is already iterating packets")
        cursor = ResumeCursor(since)
        sub = PacketStream(filters, batch, cursor, binary=binary, columns=columns)
        self._subs.packets = sub
        try:
            await self._subscribe(sub)
            if announce:
                await sub.live.wait()
                yield _LIVE
            while True:
                try:
                    item = await sub.feed.get()
                except FeedClosed:
                    return
                if not isinstance(item, Gap) or gaps:
                    yield item
                else:
                    self._report_gap(item)
        finally:
            self._subs.packets = None
            await self._send({"type": "unsubscribe", "channel": "packets"})

    def stats(self, interval_ms: int | None = None) -> AsyncGenerator[StatsData, None]:
        """Stats snapshots every `interval_ms` (server default 1000, clamped to 100..60000);
        a consumer that falls behind gets the newest ones."""
        return self._stats_stream(interval_ms, announce=False)

    async def subscribe_stats(
        self, interval_ms: int | None = None
    ) -> AsyncGenerator[StatsData, None]:
        """`stats(interval_ms)`, subscribed already: returns once the server has confirmed the
        interval (raises `SubscriptionError` if it refused it)."""
        stream = self._stats_stream(interval_ms, announce=True)
        await anext(stream)  # the `_LIVE` marker, or the exception that ended the stream
        return stream

    async def _stats_stream(
        self, interval_ms: int | None, *, announce: bool
    ) -> AsyncGenerator[Any, None]:
        if self._subs.stats is not None:
            raise RuntimeError("this client is already iterating stats")
        sub = self._subs.stats = StatsStream(interval_ms)
        try:
            await self._subscribe(sub)
            if announce:
                await sub.live.wait()
                yield _LIVE
            while True:
                try:
                    yield await sub.feed.get()
                except FeedClosed:
                    return
        finally:
            self._subs.stats = None

    @overload
    def flows(
        self, protocol: str | None = ..., port: int | None = ..., *,
        gaps: Literal[False] = ..., **kw: Any,
    ) -> AsyncGenerator[FlowMessage, None]: ...  # fmt: skip
    @overload
    def flows(
        self, protocol: str | None = ..., port: int | None = ..., *,
        gaps: Literal[True], **kw: Any,
    ) -> AsyncGenerator[FlowMessage | Gap, None]: ...  # fmt: skip

    def flows(
        self,
        protocol: str | None = None,
        port: int | None = None,
        *,
        gaps: bool = False,
        interval_ms: int | None = None,
        **filters: Any,
    ) -> AsyncGenerator[Any, None]:
        """Flow events (`FlowMessage`: `event` "started", "updated" or "ended"; `data` the
        flow) matching the filters (`src_ip`, `dst_ip`, `ip`, `src_port`, `dst_port` of the
        originator/responder, `min_bytes`, `min_duration_ms`, `state`), from when the server
        confirms the subscription. `interval_ms`: at most one `updated` per flow that often.
        Missed events are `Gap` items (with `gaps=True`) or go to `on_gap`/the log. One flows
        iteration per client at a time; `subscribe_flows` returns once it is confirmed."""
        wanted = flow_filters(protocol=protocol, port=port, **filters)
        return self._flow_stream(wanted, interval_ms, gaps=gaps, announce=False)

    @overload
    async def subscribe_flows(
        self, protocol: str | None = ..., port: int | None = ..., *,
        gaps: Literal[False] = ..., **kw: Any,
    ) -> AsyncGenerator[FlowMessage, None]: ...  # fmt: skip
    @overload
    async def subscribe_flows(
        self, protocol: str | None = ..., port: int | None = ..., *,
        gaps: Literal[True], **kw: Any,
    ) -> AsyncGenerator[FlowMessage | Gap, None]: ...  # fmt: skip

    async def subscribe_flows(
        self,
        protocol: str | None = None,
        port: int | None = None,
        *,
        gaps: bool = False,
        interval_ms: int | None = None,
        **filters: Any,
    ) -> AsyncGenerator[Any, None]:
        """`flows(...)`, subscribed already: returns once the server has confirmed the
        subscription (raises `SubscriptionError` if it refused it, e.g. a sensor without a flow
        process), so every flow event from then on is in the stream."""
        wanted = flow_filters(protocol=protocol, port=port, **filters)
        stream = self._flow_stream(wanted, interval_ms, gaps=gaps, announce=True)
        await anext(stream)  # the `_LIVE` marker, or the exception that ended the stream
        return stream

    async def _flow_stream(
        self,
        filters: dict[str, str | int],
        interval_ms: int | None,
        *,
        gaps: bool,
        announce: bool,
    ) -> AsyncGenerator[Any, None]:
        if self._subs.flows is not None:
            raise RuntimeError("this client is already iterating flows")
        sub = self._subs.flows = FlowStream(filters, interval_ms)
        try:
            await self._subscribe(sub)
            if announce:
                await sub.live.wait()
                yield _LIVE
            while True:
                try:
                    item = await sub.feed.get()
                except FeedClosed:
                    return
                if not isinstance(item, Gap) or gaps:
                    yield item
                else:
                    self._report_gap(item)
        finally:
            self._subs.flows = None
            await self._send({"type": "unsubscribe", "channel": "flows"})

    async def run(
        self,
        *,
        on_packet: Callback | None = None,
        on_stats: Callback | None = None,
        stats_interval_ms: int | None = None,
        **filters: Any,
    ) -> None:
        """The callback style: call `on_packet(PacketData)` and `on_stats(StatsData)` (plain or
        async functions) until the client is closed or fails; gaps go to `on_gap`."""

        async def pump(stream: AsyncIterator[Any], callback: Callback) -> None:
            async for item in stream:
                if inspect.isawaitable(result := callback(item)):
                    await result

        jobs = []
        if on_packet is not None:
            jobs.append(pump(self.packets(**filters), on_packet))
        if on_stats is not None:
            jobs.append(pump(self.stats(stats_interval_ms), on_stats))
        await asyncio.gather(*jobs)

    # -- the connection loop --------------------------------------------------------------------

    async def _run(self) -> None:
        attempt, renew = 0, False
        while True:
            try:
                ws = await self._open(renew)
            except ConnectionFailed as exc:
                fatal = isinstance(exc, CertificateMismatch) or (
                    exc.status is not None and 400 <= exc.status < 500
                )
                if fatal or not self.connections or not self._reconnect:
                    return self._fail(exc)
                log.info("reconnect attempt %d failed: %s", attempt + 1, exc)
                await self._sleep(self._backoff.delay(attempt))
                attempt += 1
                continue
            except ClientError as exc:
                return self._fail(exc)
            attempt, renew = 0, False
            self.connections += 1
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            code = await self._serve(ws)
            outcome = close_outcome(code)
            reason = ws.close_reason or ""
            if outcome is Outcome.AUTH_FAILED:
                return self._fail(
                    AuthenticationError(f"authentication failed: {reason}", close_code=code)
                )
            if outcome is Outcome.REFUSED:
                return self._fail(ProtocolError(f"closed {code}: {reason}", close_code=code))
            if outcome is Outcome.RENEW:
                if not self._source.renewable:
                    return self._fail(
                        TokenExpired("the token expired and cannot be renewed", close_code=code)
                    )
                renew = True
            if not self._reconnect:
                return self._fail(ConnectionFailed(f"closed {code}: {reason}", close_code=code))
            log.info("connection closed (%s %s); reconnecting", code, reason)
            await self._sleep(self._backoff.delay(0))
            attempt = 1

    async def _open(self, renew: bool) -> ClientConnection:
        token = await (self._source.renew() if renew else self._source.token())
        try:
            ws = await connect(
                self.url,
                open_timeout=self._open_timeout,
                compression=None,
                max_size=2**22,
                ssl=None if self._tls is None else self._tls.context,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise ConnectionFailed(f"{self.url}: handshake refused with HTTP {status}",
                                   status=status) from None  # fmt: skip
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise ConnectionFailed(f"cannot connect to {self.url}: {exc or 'timeout'}") from None
        if self._tls is not None:
            peer = ws.transport.get_extra_info("ssl_object")
            try:  # before the token goes out
                self._tls.check(peer.getpeercert(binary_form=True) if peer else None, self.url)
            except CertificateMismatch:
                await ws.close()
                raise
        try:
            await ws.send(msgspec.json.encode({"type": "auth", "token": token}).decode())
            async with asyncio.timeout(self._open_timeout):
                while True:
                    message = decode_server(await ws.recv())
                    if isinstance(message, AuthSuccess):
                        self._authenticated(message)
                        return ws
                    if isinstance(message, AuthError):
                        raise AuthenticationError(
                            f"authentication failed: {message.message}", close_code=4001
                        )
                    if isinstance(message, ErrorMessage):
                        raise ProtocolError(f"{message.code}: {message.message}")
        except (ConnectionClosed, TimeoutError) as exc:
            await ws.close()
            raise ConnectionFailed(f"{self.url}: closed during authentication ({exc})") from None
        except BaseException:
            await ws.close()
            raise

    async def _serve(self, ws: ClientConnection) -> int | None:
        self._ws = ws
        self._subs.new_connection()
        self._pong_ids.clear()
        helpers = [asyncio.create_task(self._pinger(ws)), asyncio.create_task(self._renewer(ws))]
        try:
            for stream in self._subs.active():
                await self._subscribe(stream)
            async for frame in ws:
                try:
                    message = (
                        decode_columns(frame) if isinstance(frame, bytes) else decode_server(frame)
                    )
                except (ProtocolError, msgspec.DecodeError) as exc:  # a newer server's message
                    log.debug("skipped a server message: %s", exc)
                    continue
                await self._dispatch(message)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        return ws.close_code

    def _fail(self, error: ClientError) -> None:
        self._failure = error
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        self._subs.fail(error)

    # -- messages -------------------------------------------------------------------------------

    async def _dispatch(self, message: ServerMessage | PacketColumns) -> None:
        if await self._subs.route(message):
            return
        if isinstance(message, StatusMessage):
            self.status = message.data
            if self._on_status is not None:
                self._on_status(message.data)
        elif isinstance(message, AuthSuccess):
            self._authenticated(message)
        elif isinstance(message, Pong) and isinstance(message.id, int):
            self._pong_ids.add(message.id)
        elif isinstance(message, ErrorMessage):
            log.warning("server error %s: %s", message.code, message.message)

    def _authenticated(self, message: AuthSuccess) -> None:
        self.user, self.limits = message.user, message.limits
        self.expires_at = None if message.expires_at is None else parse_iso(message.expires_at)
        self._auth_changed.set()

    def _report_gap(self, gap: Gap) -> None:
        if self._on_gap is not None:
            self._on_gap(gap)
        else:
            log.warning("gap after packet %s: %s packets missed (%s: %s)",
                        gap.after_id, gap.count, gap.reason, gap.message)  # fmt: skip

    async def _subscribe(self, stream: Stream) -> None:
        if self._failure is not None:
            stream.end(self._failure)
        elif self._closed:
            stream.end(FeedClosed())
        elif self._ws is not None:  # else: sent on (re)connect
            await self._send(await self._subs.subscribe_message(stream))

    async def _send(self, message: dict[str, Any]) -> None:
        if (ws := self._ws) is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(msgspec.json.encode(message).decode())

    # -- keep-alive and token renewal -----------------------------------------------------------

    async def _pinger(self, ws: ClientConnection) -> None:
        for ping_id in itertools.count(1):
            await asyncio.sleep(self._ping_interval)
            if ping_id > 1 and ping_id - 1 not in self._pong_ids:
                log.info("no pong within %.0f s; reconnecting", self._ping_interval)
                await ws.close(1000, "no pong")
                return
            self._pong_ids.clear()
            await ws.send(msgspec.json.encode({"type": "ping", "id": ping_id}).decode())

    async def _renewer(self, ws: ClientConnection) -> None:
        if not self._source.renewable:
            return
        while True:
            self._auth_changed.clear()
            if self.expires_at is None:
                await self._auth_changed.wait()
                continue
            delay = refresh_delay(self.expires_at, time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._auth_changed.wait(), delay)
                continue  # re-authenticated meanwhile
            try:
                token = await self._source.renew()
            except ClientError as exc:  # the server will close with 4003; _run decides then
                log.warning("could not renew the token: %s", exc)
                return
            await ws.send(msgspec.json.encode({"type": "auth", "token": token}).decode())
            await self._auth_changed.wait()
