"""`leireye watch` and `leireye stats`: the stream on a terminal, one line per packet or interval.

    leireye watch [--url URL | -c CONFIG] [--token T | --user U [--password-stdin]]
                  [--protocol P] [--port N] [--src CIDR] [--dst CIDR] [--sensor NAME[,NAME]]
                  [--since ID] [--json] [--count N] [--cafile PEM] [--fingerprint SHA256]
    leireye stats [--url URL | -c CONFIG] [--token T | --user U] [--interval-ms MS] [--json]
                  [--count N] [--cafile PEM] [--fingerprint SHA256]

The sensor is `--url`, else LEIREYE_URL, else the address in the config named by `-c` or
LEIREYE_CONFIG (read only then: it needs PyYAML, which the client alone does not install), else
ws://127.0.0.1:8000/ws/capture. The token comes from `--token`, else the environment variable
LEIREYE_TOKEN; `--user` logs in through the REST API with a password typed at a prompt or read
from stdin. Packets go to stdout (`tcpdump -n` style, or JSON lines with `--json`; at a fleet
central each line names the sensor that captured the packet, and `--sensor` keeps those of the
named sensors only); gaps and the
banner go to stderr, so a pipe gets packets only. The banner comes once the server has confirmed
the subscription: what is captured after it is in the output. Ctrl-C exits with 130 (0 after
`--count`); an auth or connection failure with 2 and one line on stderr (`leireye: ...`, printed
by `cli.main`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TextIO, TypeVar

import msgspec
from msgspec import UNSET

from leireye.client import DEFAULT_URL, Gap, LeirEyeClient, PacketData, StatsData
from leireye.errors import LeirEyeError
from leireye.text import parse_fingerprint, tcp_flags_text

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class WatchError(LeirEyeError):
    """No credentials, or contradictory options."""


def format_packet(p: PacketData) -> str:
    """`10:30:01.123 192.168.1.100.54321 > 142.250.185.14.443: TCP/TLS [PSH, ACK] length 1500:
    TLS Application Data` (the time of day in UTC; ends without addresses show `-`; flags in
    the one form `info` uses too, `text.tcp_flags_text`). At a fleet central, where packets
    carry `sensor`, its name follows the time (`-` for a sensor the central cannot name yet):
    `10:30:01.123 branch-7 192.168.1.100.54321 > ...`; elsewhere there is no such column."""
    clock = p.timestamp[11:23] if len(p.timestamp) >= 23 else p.timestamp
    if p.sensor is not UNSET:
        clock = f"{clock} {p.sensor or '-'}"
    label = f"{p.protocol}/{p.app}" if p.app and p.app != p.protocol else p.protocol
    flags = f" [{tcp_flags_text(p.flags)}]" if p.flags else ""
    src, dst = _end(p.src_ip, p.src_port), _end(p.dst_ip, p.dst_port)
    return f"{clock} {src} > {dst}: {label}{flags} length {p.length}: {p.info}"


def sensor_filter(text: str | None) -> str | list[str] | None:
    """`--sensor`: one name, or names joined by commas (a list); the server checks them."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise WatchError(f"--sensor: an empty name in {text!r} (NAME or NAME,NAME,...)")
    return names[0] if len(names) == 1 else names


def _end(ip: str | None, port: int | None) -> str:
    address = ip if ip is not None else "-"
    return address if port is None else f"{address}.{port}"


def format_stats(s: StatsData, top: int = 4) -> str:
    """`10:30:01 45 pkt/s 125.0 kB/s total 1567 | TCP 35 UDP 10 | drops kernel=0 ...`."""
    clock = s.timestamp[11:19] if len(s.timestamp) >= 19 else s.timestamp
    ranked = sorted(s.protocols.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    mix = " ".join(f"{name} {count}" for name, count in ranked) or "-"
    drops = (f"kernel={s.kernel_drops} if={s.if_drops} ring={s.ring_lost} "
             f"stream={s.stream_lost} client={s.client_dropped}")  # fmt: skip
    return (f"{clock} {s.packets_per_second} pkt/s {_bytes(s.bytes_per_second)}/s "
            f"total {s.packets_total} | {mix} | drops {drops}")  # fmt: skip


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def format_gap(gap: Gap) -> str:
    count = "an unknown number of" if gap.count is None else str(gap.count)
    return f"leireye: gap after packet {gap.after_id}: {count} packets missed ({gap.reason})"


def client_options(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> dict[str, Any]:
    """`token=` or `username=`/`password=` for `LeirEyeClient`, from the options or the
    environment; `cafile=`/`fingerprint=` for a wss:// URL."""
    tls = {key: value for key in ("cafile", "fingerprint") if (value := getattr(args, key, None))}
    if tls and not args.url.startswith("wss://"):
        raise WatchError("--cafile and --fingerprint need a wss:// --url")
    if "fingerprint" in tls:
        try:
            parse_fingerprint(tls["fingerprint"])
        except ValueError as exc:
            raise WatchError(f"--fingerprint: {exc}") from None
    return {**_credentials(args, stdin), **tls}


def _credentials(args: argparse.Namespace, stdin: TextIO) -> dict[str, Any]:
    if args.user:
        if args.token:
            raise WatchError("give --token or --user, not both")
        if args.password_stdin:
            password = stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass(f"password for {args.user}: ")
        return {"username": args.user, "password": password}
    token = args.token or os.environ.get("LEIREYE_TOKEN", "")
    if not token:
        raise WatchError("no token: pass --token, set LEIREYE_TOKEN, or log in with --user")
    return {"token": token}


def server_url(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> str:
    """`--url`, else LEIREYE_URL, else the sensor's own address in the config that `-c` or
    LEIREYE_CONFIG names (web.host, web.port), else DEFAULT_URL. The config, and PyYAML with
    it, is read only when one is named: the client alone has no PyYAML."""
    if args.url:
        return str(args.url)
    if environ.get("LEIREYE_URL"):
        return environ["LEIREYE_URL"]
    named = args.config or environ.get("LEIREYE_CONFIG")
    if not named:
        args.context = "the default URL; another sensor: --url, LEIREYE_URL or -c CONFIG"
        return DEFAULT_URL
    try:
        from leireye.cli.common import load_cli_config
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "yaml":
            raise
        raise WatchError(
            f"reading the config {named} needs PyYAML (pip install 'leireye[sensor]'):"
            " or give the sensor's address with --url or LEIREYE_URL"
        ) from None
    web = load_cli_config(args, environ).web
    if web.port == 0:
        raise WatchError(f"web.port is 0 (any free port) in {named}: give --url")
    return sensor_url(web.host, web.port)


def sensor_url(host: str, port: int) -> str:
    """The WebSocket URL of a sensor listening on `host`:`port` (a wildcard address is reached
    on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    host = f"[{host}]" if ":" in host else host
    return f"ws://{host}:{port}/ws/capture"


def cmd_watch(args: argparse.Namespace) -> int:
    args.url = server_url(args)
    args.sensor = sensor_filter(args.sensor)
    return _run(_watch(args, client_options(args)))


def cmd_stats(args: argparse.Namespace) -> int:
    args.url = server_url(args)
    return _run(_stats(args, client_options(args)))


def _run(main: Any) -> int:
    try:
        code: int = asyncio.run(main)
    except BrokenPipeError:  # `leireye watch | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


async def _watch(args: argparse.Namespace, options: dict[str, Any]) -> int:
    def on_gap(gap: Gap) -> None:
        print(format_gap(gap), file=sys.stderr, flush=True)

    filters = {"protocol": args.protocol, "port": args.port, "src_ip": args.src,
               "dst_ip": args.dst, "sensor": args.sensor}  # fmt: skip
    async with LeirEyeClient(args.url, on_gap=on_gap, **options) as client:
        packets = await client.subscribe_packets(since=args.since, **filters)
        shown = " ".join(f"{k}={_shown(v)}" for k, v in filters.items() if v is not None) or "all"
        print(f"leireye: watching {args.url} ({shown})", file=sys.stderr, flush=True)
        render = _json_line if args.json else format_packet
        await _print(packets, render, args.count)
    return 0


def _shown(value: object) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


async def _stats(args: argparse.Namespace, options: dict[str, Any]) -> int:
    async with LeirEyeClient(args.url, **options) as client:
        stats = await client.subscribe_stats(args.interval_ms)
        print(f"leireye: stats from {args.url}", file=sys.stderr, flush=True)
        render = _json_line if args.json else format_stats
        await _print(stats, render, args.count)
    return 0


def _json_line(item: object) -> str:
    return _encoder.encode(item).decode()


async def _print(items: AsyncIterator[T], render: Callable[[T], str], count: int | None) -> None:
    """One line per item on stdout, flushed at once; stop after `count` items when given."""
    seen = 0
    async for item in items:
        sys.stdout.write(render(item) + "\n")
        sys.stdout.flush()
        seen += 1
        if count and seen >= count:
            break


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        help="WebSocket URL (default: $LEIREYE_URL, else web.host/web.port of the config that"
        f" -c or $LEIREYE_CONFIG names, else {DEFAULT_URL})",
    )
    parser.add_argument("-c", "--config", help="the sensor's YAML config, for its address")
    parser.add_argument("-v", "--verbose", action="store_true", help="say which config is used")
    parser.add_argument("--token", help="JWT (default: $LEIREYE_TOKEN)")
    parser.add_argument("--user", "-u", help="log in as this user (password prompted)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="with --user: read the password from stdin")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--count", "-n", type=int, default=0, help="stop after N lines")
    parser.add_argument("--cafile", help="wss://: trust the CA (or self-signed cert) in this PEM")
    parser.add_argument("--fingerprint", default=os.environ.get("LEIREYE_FINGERPRINT"),
                        help="wss://: accept only the certificate with this SHA-256 fingerprint"
                        " (`leireye tls-fingerprint`; default: $LEIREYE_FINGERPRINT)")  # fmt: skip


def add_watch_parsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add `watch` and `stats` to `leireye`'s sub-commands."""
    watch = subparsers.add_parser("watch", help="print live packets, one line each")
    _common(watch)
    watch.add_argument("--protocol", "-p", help="TCP, UDP, DNS, TLS, ... (protocol or app)")
    watch.add_argument("--port", type=int, help="either port")
    watch.add_argument("--src", help="source address or CIDR")
    watch.add_argument("--dst", help="destination address or CIDR")
    watch.add_argument(
        "--sensor",
        metavar="NAME[,NAME]",
        help="at a fleet central: the packets of these sensors only",
    )
    watch.add_argument("--since", type=int, help="start after this packet id (replay the ring)")
    watch.set_defaults(func=cmd_watch)

    stats = subparsers.add_parser("stats", help="print live statistics, one line per interval")
    _common(stats)
    stats.add_argument("--interval-ms", type=int, help="interval (server default 1000)")
    stats.set_defaults(func=cmd_stats)
