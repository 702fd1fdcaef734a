"""`leireye flows` and `leireye hosts`: the flow store read directly, on the sensor's machine.

    leireye flows [-c CONFIG] [--from T] [--to T] [--limit N] [--sort bytes|packets|duration|start]
                  [--asc] [--json] [--ip CIDR] [--src-ip CIDR] [--dst-ip CIDR] [--port N]
                  [--src-port N] [--dst-port N] [--protocol P] [--vlan N] [--min-bytes N]
                  [--min-duration-ms N] [--state S] [--sensor NAME[,NAME...]]
    leireye hosts [-c CONFIG] [--from T] [--to T] [--limit N] [--sort bytes|...] [--asc] [--json]
                  [--sensor NAME[,NAME...]]

The store is `history.dir` of the config (`-c`, else LEIREYE_CONFIG, else configs/default.yaml);
it needs read access to it (root, or the web user's group). Times are ISO 8601 (UTC unless a
zone is given) or Unix seconds; without `--from`, the last 24 hours. `flows` prints ended flows
as Zeek's conn.log does (tab-separated, a `#fields` line first, `-` for none, `ts` the start
in Unix seconds); `--json` prints one JSON object a line instead. Flows still active are in
the flow process only: see GET /api/flows. `--sensor` keeps the flows (the host minutes) of
those sensors, in a fleet central's store (-c its config: every sensor's ended flows and host
minutes, each with its `sensor`); without it `hosts` sums an address over the sensors.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Final

import msgspec

from leireye.cli.common import add_config_options, load_cli_config, say
from leireye.exitcodes import ExitCode
from leireye.flows.history import FLOW_SORTS, HOST_SORTS, FlowHistory
from leireye.flows.model import Flow
from leireye.flows.query import FLOW_FILTER_KEYS, parse_flow_filter
from leireye.flows.query import parse_time_ns as _parse_time_ns

ROWS_MAX: Final = 100_000
DAY_NS: Final = 86400 * 10**9
CONN_FIELDS: Final = (
    "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service",
    "duration", "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts", "resp_pkts",
    "vlan", "end_reason",
)  # fmt: skip
HOST_FIELDS: Final = ("ip", "bytes_sent", "bytes_recv", "pkts_sent", "pkts_recv", "peers",
                      "first_seen", "last_seen", "names")  # fmt: skip
_encoder = msgspec.json.Encoder()


def _time(text: str) -> int:
    try:
        return _parse_time_ns(text)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= ROWS_MAX:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {ROWS_MAX}")
    return int(text)


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def conn_line(flow: Flow) -> str:
    """One flow as a conn.log line (fields as CONN_FIELDS)."""
    values = (
        f"{flow.first_ns / 1e9:.6f}", flow.uid, flow.orig_ip, flow.orig_port, flow.resp_ip,
        flow.resp_port, flow.transport.lower(), flow.app.lower() if flow.app else None,
        f"{flow.duration_ns / 1e9:.6f}", flow.orig_bytes, flow.resp_bytes, flow.conn_state,
        flow.history, flow.orig_pkts, flow.resp_pkts, flow.vlan, flow.end_reason,
    )  # fmt: skip
    return "\t".join(_dash(v) for v in values)


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 10**9))


def host_line(row: dict[str, Any]) -> str:
    values = [row[k] for k in HOST_FIELDS[:6]]
    values += [_iso(row["first_ns"]), _iso(row["last_ns"]), ",".join(row["names"]) or None]
    return "\t".join(_dash(v) for v in values)


def _history(args: argparse.Namespace) -> FlowHistory:
    config = load_cli_config(args)
    say(args, f"flow store: {config.history_dir}")
    return FlowHistory(
        config.history_dir, timeout_s=config.history.query_timeout_s, rows_max=ROWS_MAX, threads=2
    )


def _range(args: argparse.Namespace) -> tuple[int, int]:
    to_ns = args.to if args.to is not None else time.time_ns()
    return (args.from_ if args.from_ is not None else to_ns - DAY_NS), to_ns


def cmd_flows(args: argparse.Namespace) -> int:
    spec = {key: getattr(args, key) for key in FLOW_FILTER_KEYS}
    flt = parse_flow_filter({k: v for k, v in spec.items() if v is not None})
    history = _history(args)
    low, high = _range(args)
    flows, total = history.flows(
        low, high, flt, sort=args.sort, descending=not args.asc, limit=args.limit
    )
    out = sys.stdout
    if not args.json:
        out.write("#fields\t" + "\t".join(CONN_FIELDS) + "\n")
    for flow in flows:
        if args.json:
            out.write(_encoder.encode(flow).decode() + "\n")
        else:
            out.write(conn_line(flow) + "\n")
    say(args, f"{len(flows)} of {total} flows from {_iso(low)} to {_iso(high)}")
    lost = history.losses()
    if lost:
        say(args, f"rows lost in crashes of the flow process so far: {lost}")
    return ExitCode.OK


def cmd_hosts(args: argparse.Namespace) -> int:
    history = _history(args)
    low, high = _range(args)
    sensors = parse_flow_filter({"sensor": args.sensor}).sensor if args.sensor else None
    rows, total = history.hosts(low, high, sort=args.sort, descending=not args.asc,
                                limit=args.limit, sensors=sensors)  # fmt: skip
    out = sys.stdout
    if not args.json:
        out.write("#fields\t" + "\t".join(HOST_FIELDS) + "\n")
    for row in rows:
        out.write((_encoder.encode(row).decode() if args.json else host_line(row)) + "\n")
    say(args, f"{len(rows)} of {total} hosts from {_iso(low)} to {_iso(high)}")
    return ExitCode.OK


def _common(parser: argparse.ArgumentParser, sorts: tuple[str, ...], default: str) -> None:
    add_config_options(parser)
    parser.add_argument("--from", dest="from_", type=_time, metavar="TIME",
                        help="ISO 8601 or Unix seconds (default: --to less 24 h)")  # fmt: skip
    parser.add_argument("--to", type=_time, metavar="TIME", help="(default: now)")
    parser.add_argument("--limit", type=_limit, default=100, metavar="N",
                        help=f"at most N lines, up to {ROWS_MAX} (default 100)")  # fmt: skip
    parser.add_argument("--sort", choices=sorts, default=default, help=f"(default {default})")
    parser.add_argument("--asc", action="store_true", help="smallest (or oldest) first")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def add_flows_parsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    flows = subparsers.add_parser("flows", help="ended flows from the flow store (conn.log-like)")
    _common(flows, tuple(FLOW_SORTS), "start")
    for key in FLOW_FILTER_KEYS:
        flows.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="VALUE")
    flows.set_defaults(func=cmd_flows)
    hosts = subparsers.add_parser("hosts", help="addresses seen, from the flow store")
    _common(hosts, tuple(HOST_SORTS), "bytes")
    hosts.add_argument("--sensor", metavar="NAME[,NAME...]",
                       help="at a fleet central: those sensors' minutes only")  # fmt: skip
    hosts.set_defaults(func=cmd_hosts)
