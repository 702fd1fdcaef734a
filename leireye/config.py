"""The run configuration: a frozen, typed tree decoded once from YAML and passed explicitly.

Unknown keys and wrong types fail with the key's path (`at $.capture.snaplen`); range checks live
in the type annotations. Only `load_config` touches the file system; only the CLI prints.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
import yaml

from leireye.errors import ConfigError
from leireye.origins import parse_origin

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
# A DNS name or IPv4 address, optionally with a leading "." (the name and its subdomains).
_HOST_NAME: Final = re.compile(r"\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")


class ReplayConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # "original": the file's own timing; "max": as fast as possible; a number: that many times
    # the original speed.
    speed: Literal["original", "max"] | PositiveFloat = "original"
    loop: bool = False


BPF_MAX_BYTES = 4096  # as much as the capture status block shows


class CaptureConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    interface: str = "auto"
    bpf: str = ""
    # Capture the sensor's own web traffic (its port on its addresses) too; by default the
    # kernel filter leaves it out (leireye.capture.ownfilter).
    include_own_traffic: bool = False
    snaplen: Annotated[int, msgspec.Meta(ge=64, le=262144)] = 1600
    promisc: bool = False
    buffer_mb: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    pcap: str | None = None
    replay: ReplayConfig = ReplayConfig()
    # The account the capture and stats processes drop to: the writer of the shared memory.
    # Created as a system user when missing; "nobody", shared by many daemons, only warns.
    user: str | None = "leireye"
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 4096
    poll_ms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    coalesce_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 2
    heartbeat_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 5.0
    # The live capture processes' scheduling niceness (-20..19), set while still root; None:
    # the sensor's own. A trade-off on few cores, measured in docs/store.md: not the default.
    nice: Annotated[int, msgspec.Meta(ge=-20, le=19)] | None = None
    # Capture processes sharing the interface through PACKET_FANOUT; "auto": cores - 1 (>= 1).
    workers: Literal["auto"] | Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    fanout_mode: Literal["hash", "lb", "cpu"] = "hash"
    # The PACKET_FANOUT group id; "auto": from the supervisor's pid, so two sensors on one host
    # do not meet by accident. Fix it when another tool's group must be avoided (or joined).
    fanout_group: Literal["auto"] | Annotated[int, msgspec.Meta(ge=0, le=65535)] = "auto"

    def __post_init__(self) -> None:
        if len(self.bpf.encode("utf-8", "replace")) > BPF_MAX_BYTES:
            raise ValueError(f"bpf is longer than {BPF_MAX_BYTES} bytes")


class RingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str | None = None
    capacity: Annotated[int, msgspec.Meta(ge=1024, le=1 << 28)] = 1 << 18
    raw_bytes: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 256


class StatsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    history_s: Annotated[int, msgspec.Meta(ge=60, le=86400)] = 900
    update_ms: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 100
    top_n: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    top_window_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 60
    log_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 1.0


class IdleTimeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Seconds without a packet after which a flow of that transport ends (Zeek: 300, 60, 60).
    tcp: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    udp: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    icmp: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0
    other: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 60.0


class FlowsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    # Flows held at once; when full, the longest idle ones are ended early ("evicted", counted).
    max_active: Annotated[int, msgspec.Meta(ge=1024, le=16_777_216)] = 262_144
    # Hosts (IP addresses) held at once; when full, the longest idle ones are forgotten.
    max_hosts: Annotated[int, msgspec.Meta(ge=256, le=16_777_216)] = 65_536
    idle_timeout_s: IdleTimeouts = IdleTimeouts()
    # A TCP flow torn down (FIN both ways, or a RST) ends this long after, so that the last ACK
    # and retransmitted FINs or RSTs still count in it.
    tcp_close_s: Annotated[float, msgspec.Meta(ge=0, le=600)] = 5.0
    # A flow longer than this is reported and goes on under the same uid (0: never).
    active_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 1800.0
    # How often the live snapshot (flows and hosts) in shared memory is refreshed.
    update_ms: Annotated[int, msgspec.Meta(ge=100, le=60_000)] = 1000
    # Active flows and hosts in the snapshot: the top by bytes when there are more.
    snapshot_flows: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2000
    snapshot_hosts: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2000
    # Flow events (started, updated, ended) the shared feed keeps for the web workers.
    events: Annotated[int, msgspec.Meta(ge=1024, le=4_194_304)] = 65_536
    # An active flow gets an "updated" event at most this often (0: never).
    event_interval_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0


class StoreConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The packet store (docs/store.md): every captured frame, whole up to capture.snaplen, in
    # rotating pcapng files, written by a process of its own; the capture never waits for it.
    enabled: bool = True
    # Where the files go; relative paths are resolved against state_dir.
    dir: str = "store"
    # Retention: the oldest files are deleted first while the store holds more than max_gb, or
    # when their newest packet is older than max_age_h.
    max_gb: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 2.0
    max_age_h: Annotated[float, msgspec.Meta(gt=0, le=87_600)] = 168.0
    # A new file is begun when the current one reaches file_mb or has been open file_s.
    file_mb: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 256
    file_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 3600.0
    # The shared memory each capture process hands whole frames through (MiB): how far the
    # writer may fall behind before frames are lost to the store (counted; never to the ring).
    buffer_mb: Annotated[int, msgspec.Meta(ge=1, le=16384)] = 64

    def __post_init__(self) -> None:
        if self.file_mb > self.max_gb * 1024:
            raise ValueError(
                f"store.file_mb ({self.file_mb}) is larger than store.max_gb ({self.max_gb}):"
                f" set file_mb to at most {int(self.max_gb * 1024)}"
            )


class SupervisorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    restart_backoff_s: tuple[PositiveFloat, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)
    shutdown_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0


class TlsFiles(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # PEM files; relative paths are resolved against state_dir.
    cert: str
    key: str


class WebConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    # "auto": one worker per core.
    workers: Literal["auto"] | Annotated[int, msgspec.Meta(ge=1, le=64)] = "auto"
    # The account the web workers drop to (created when missing): it reads the shared memory
    # but cannot write it, so it must not be capture.user.
    user: str | None = "leireye-web"
    # Origins (scheme://host[:port]) allowed to open the WebSocket from a browser, besides the
    # sensor's own; "*" allows any. Clients that send no Origin (scripts) are not affected.
    allowed_origins: tuple[str, ...] = ()
    poll_ms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 2
    outbox_messages: Annotated[int, msgspec.Meta(ge=16, le=1_000_000)] = 4096
    # The kernel send buffer of each connection (KiB; 0: the kernel's autotuning, up to 4 MiB,
    # the most slack for fast readers). A cap (e.g. 128) makes a client that stops reading hit
    # its outbox after ~1k packets instead of absorbing ~10k into kernel memory first, at the
    # cost of slack for readers that stall briefly.
    send_buffer_kib: Annotated[int, msgspec.Meta(ge=0, le=65536)] = 0
    # GET /metrics without a token (for a Prometheus on a trusted network); else any user's
    # bearer token is needed.
    metrics_public: bool = False
    # uvicorn's access log: one INFO line per HTTP request (tokens redacted).
    access_log: bool = False
    # HTTP hygiene (docs/security.md): a connection must send its whole request head within
    # header_timeout_s of opening (or of the previous response) and its body within
    # body_timeout_s of the head; a worker holds at most max_connections (HTTP and WebSocket).
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    body_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 512
    # Host names the sensor answers to besides its own (the bound address, localhost, any IP
    # address, the machine's hostname and FQDN); ".example.org" also allows its subdomains,
    # "*" any name.
    allowed_hosts: tuple[str, ...] = ()
    # Proxies (addresses or CIDR networks) whose X-Forwarded-For / X-Forwarded-Proto are
    # believed; from anyone else those headers, and Forwarded, are ignored.
    trusted_proxies: tuple[str, ...] = ()

    # HTTPS and WSS: "auto" (a self-signed certificate made in state_dir on first run),
    # {cert: PATH, key: PATH}, or "off". Unset: off on a loopback host, refused on any other.
    tls: Literal["auto", "off"] | TlsFiles | None = None

    def __post_init__(self) -> None:
        for index, entry in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"web.trusted_proxies[{index}]: {entry!r} is not an address or network"
                ) from None
        for index, entry in enumerate(self.allowed_hosts):
            if entry != "*" and not _HOST_NAME.fullmatch(entry.lower()):
                raise ValueError(
                    f"web.allowed_hosts[{index}]: {entry!r} is not a host name "
                    '(no scheme, port or path; IP addresses need no entry), ".domain" or "*"'
                )


class AuthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # HS256 secret: read from the environment variable named here when set, else from
    # secret_file (created with mode 0600 and 64 random bytes on first run).
    secret_env: str | None = None
    secret_file: str = "secret.key"
    users_file: str = "users.yaml"
    token_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=31_536_000)] = 3600
    auth_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    # POST /api/auth/login: lifetimes of the access and refresh tokens, and of a WebSocket ticket.
    access_ttl_s: Annotated[int, msgspec.Meta(ge=10, le=86_400)] = 1800
    refresh_ttl_s: Annotated[int, msgspec.Meta(ge=60, le=31_536_000)] = 604_800
    ticket_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=600)] = 30
    # Failed logins free of delay per (username, client address) and per address; past them each
    # failure doubles the wait (login_backoff_first_s, twice that, ... up to login_backoff_max_s;
    # 429 meanwhile) for that pair, or that address for names that never logged in from it.
    # Failures are forgotten login_window_s after the last one (leireye/accounts/limiter.py).
    login_failures_per_user_address: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 5
    login_failures_per_address: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 20
    login_window_s: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 300
    login_backoff_first_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 1.0
    login_backoff_max_s: Annotated[int, msgspec.Meta(ge=1, le=86_400)] = 300
    # Password verifications at once ("auto": one per core), how many more may wait, and for
    # how long; the rest get 429 at once (leireye/accounts/gate.py).
    password_checks: Literal["auto"] | Annotated[int, msgspec.Meta(ge=1, le=64)] = "auto"
    password_queue: Annotated[int, msgspec.Meta(ge=0, le=64)] = 4
    password_wait_s: Annotated[float, msgspec.Meta(ge=0, le=30)] = 1.0


class LimitsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    connections_per_user: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 5
    messages_per_second: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 100
    max_message_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16_777_216)] = 65536
    idle_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 300.0
    stats_interval_min_ms: Annotated[int, msgspec.Meta(ge=10, le=3_600_000)] = 100
    stats_interval_max_ms: Annotated[int, msgspec.Meta(ge=10, le=3_600_000)] = 60_000
    # The REST API: the largest request body (413 above it) and the most packets one
    # GET /api/capture/packets returns.
    api_max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16_777_216)] = 65536
    api_packets_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # Follow Stream (GET /api/stream): the most payload bytes one answer carries.
    follow_max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 16 << 20
    # WebSocket resume from the packet store (`options.from_store`): the most stored packets
    # per second one connection is replayed (read, decoded and filtered) before it joins live.
    store_replay_pps: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 20_000


class HistoryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The flow store (leireye/flows/store.py): ended flows and per-minute host and protocol
    # summaries as Parquet files, one directory per hour. `dir` is relative to state_dir.
    dir: Annotated[str, msgspec.Meta(min_length=1)] = "flows"
    # Retention: hours older than flows_days, then the oldest hours while the store is over
    # max_gb, are deleted (whole hours, oldest first, each one logged).
    flows_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 7.0
    max_gb: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 10.0
    # Rows are kept in memory and written as one file per table every flush_s: a crash loses
    # at most that much (counted at the next start).
    flush_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0
    # A query (REST, CLI) is interrupted after this long; one page holds at most query_rows_max.
    query_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    query_rows_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000


class LoggingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


# A fleet sensor's name: also part of NATS subjects and JetStream stream names, so no dots,
# wildcards or spaces (leireye/fleet/model.py).
SensorName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")]


class NatsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # The NATS servers (nats:// or tls:// URLs); the client fails over between them.
    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    # At most one way to authenticate: a .creds file (JWT + nkey seed), an nkey seed file, or a
    # user and a password file (the password is never in the YAML). Relative paths: state_dir.
    creds: str | None = None
    nkey_seed: str | None = None
    user: str | None = None
    password_file: str | None = None
    # TLS: the CA that signed the servers' certificates (verification on), and optionally a
    # client certificate and key for mutual TLS.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 2.0


class FleetPublish(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    packets: bool = True
    flows: bool = True
    stats: bool = True
    status: bool = True


class FleetStreams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Retention of this sensor's streams, set when the sensor creates them; a stream that
    # exists with other settings is used as it is and reported (log, status).
    max_age_h: Annotated[float, msgspec.Meta(gt=0, le=87_600)] = 24.0
    max_gb: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] = 10.0
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1


class FleetConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Off by default: `make run` is one sensor with nothing else to start.
    enabled: bool = False
    # This sensor's name, unique in the fleet (required when enabled).
    sensor: SensorName | None = None
    nats: NatsConfig = NatsConfig()
    publish: FleetPublish = FleetPublish()
    streams: FleetStreams = FleetStreams()
    # A packet batch is sent when it holds batch_records records or is batch_ms old.
    batch_records: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 4096
    batch_ms: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 5
    # Most batches published and not yet acknowledged by JetStream.
    max_pending: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    # A batch not acknowledged within this is published again (same Nats-Msg-Id: stored once).
    ack_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0


class CentralConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Read by `leireye central` only (a sensor refuses a config whose central is enabled).
    enabled: bool = False
    # This central's name: its durable JetStream consumers are `leireye-central-<name>`, so a
    # restarted central resumes where it acknowledged (two centrals need two names).
    name: SensorName = "central"
    nats: NatsConfig = NatsConfig()
    # The sensors to follow, by name; empty: every sensor whose streams exist (new ones are
    # picked up within discover_s).
    sensors: list[SensorName] = msgspec.field(default_factory=list)
    discover_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    # A sensor with no message (its status is published every second) for this long shows as
    # silent.
    silent_after_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Where the sensor keeps its state: the JWT secret, the users file, saved stuck frames.
    # Relative paths in `auth` are resolved against it.
    state_dir: str = "/var/lib/leireye"
    capture: CaptureConfig = CaptureConfig()
    ring: RingConfig = RingConfig()
    stats: StatsConfig = StatsConfig()
    flows: FlowsConfig = FlowsConfig()
    store: StoreConfig = StoreConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    web: WebConfig = WebConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    history: HistoryConfig = HistoryConfig()
    logging: LoggingConfig = LoggingConfig()
    fleet: FleetConfig = FleetConfig()
    central: CentralConfig = CentralConfig()

    @property
    def store_dir(self) -> Path:
        return self.state_path(self.store.dir)

    def state_path(self, path: str) -> Path:
        """`path` resolved against `state_dir` (absolute paths are kept)."""
        return Path(self.state_dir) / path

    @property
    def history_dir(self) -> Path:
        """The flow store's directory (`history.dir` resolved against `state_dir`)."""
        return self.state_path(self.history.dir)


def parse_config(data: Any) -> Config:
    """Validate an already-parsed YAML document (None means all defaults). Every problem is
    reported at once, each with its path (`config_errors`)."""
    try:
        config = msgspec.convert(data or {}, Config, strict=True)
    except msgspec.ValidationError as exc:
        errors = _field_errors(data or {}) or [str(exc)]
        raise ConfigError(_report(errors + _cross_errors(data or {}))) from None
    errors = _cross_errors(msgspec.to_builtins(config))
    if errors:
        raise ConfigError(_report(errors))
    return config


def config_errors(data: Any, kind: type[msgspec.Struct] = Config, path: str = "$") -> list[str]:
    """Every problem of `data` against the struct `kind`: each unknown key and bad value (see
    `_field_errors`), and for a whole config the checks between keys too (`fleet.enabled`
    without `fleet.sensor`, …): the list `parse_config` reports."""
    errors = _field_errors(data, kind, path)
    if kind is Config and path == "$":
        errors += _cross_errors(data if data is not None else {})
    return errors


def _field_errors(data: Any, kind: type[msgspec.Struct] = Config, path: str = "$") -> list[str]:
    """Every unknown key and bad value in `data` against the struct `kind`, each as msgspec
    words it (`Expected `int`, got `str` - at `$.capture.snaplen``). msgspec stops at the first
    error: this walks the mapping and converts each value on its own, and a struct whose
    values all pass is converted whole too (its `__post_init__` checks)."""
    if not isinstance(data, dict):
        try:
            msgspec.convert(data, kind, strict=True)
        except msgspec.ValidationError as exc:
            return [_located(str(exc), path)]
        return []
    fields = {field.encode_name: field for field in msgspec.structs.fields(kind)}
    errors: list[str] = []
    for key, value in data.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            errors.append(f"Object contains unknown field `{key}` - at `{path}`")
            continue
        where = f"{path}.{key}"
        if isinstance(field.type, type) and issubclass(field.type, msgspec.Struct):
            errors += _field_errors(value, field.type, where)
            continue
        try:
            msgspec.convert(value, field.type, strict=True)
        except msgspec.ValidationError as exc:
            errors.append(_located(str(exc), where))
    if not errors:
        try:
            msgspec.convert(data, kind, strict=True)
        except msgspec.ValidationError as exc:
            errors.append(_located(str(exc), path))
    return errors


def _located(message: str, where: str) -> str:
    """msgspec's message for a value converted on its own, with the path it has in the file."""
    text, found, rest = message.partition(" - at `$")
    return f"{text} - at `{where}{rest}" if found else f"{text} - at `{where}`"


def _cross_errors(data: Any) -> list[str]:
    """The checks between keys, or beyond a key's type, on the raw or converted document."""
    errors: list[str] = []
    web = data.get("web") if isinstance(data, dict) else None
    origins = web.get("allowed_origins") if isinstance(web, dict) else None
    for index, entry in enumerate(origins if isinstance(origins, list | tuple) else ()):
        if isinstance(entry, str) and entry != "*" and parse_origin(entry) is None:
            errors.append(
                f"{entry!r} is not an origin (scheme://host[:port], scheme http or https, no"
                f' path) nor "*" - at `$.web.allowed_origins[{index}]`'
            )
    limits = data.get("limits") if isinstance(data, dict) else None
    if isinstance(limits, dict):
        low = limits.get("stats_interval_min_ms", LimitsConfig().stats_interval_min_ms)
        high = limits.get("stats_interval_max_ms", LimitsConfig().stats_interval_max_ms)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            errors.append("stats_interval_min_ms is above stats_interval_max_ms - at `$.limits`")
    if isinstance(web, dict):
        host = web.get("host", WebConfig().host)
        if web.get("tls") is None and isinstance(host, str) and not is_loopback(host):
            errors.append(
                f"web.host {host!r} is reachable from the network and web.tls is not set: set"
                " web.tls to auto (a self-signed certificate), to {cert: PATH, key: PATH}, or to"
                " off to serve plain HTTP (passwords and tokens in clear) on purpose - at"
                " `$.web.tls`"
            )
    fleet = data.get("fleet") if isinstance(data, dict) else None
    if isinstance(fleet, dict) and fleet.get("enabled") and not fleet.get("sensor"):
        errors.append("fleet.enabled needs fleet.sensor, this sensor's name - at `$.fleet`")
    for section in ("fleet", "central"):
        part = data.get(section) if isinstance(data, dict) else None
        nats = part.get("nats") if isinstance(part, dict) else None
        if isinstance(nats, dict):
            ways = [k for k in ("creds", "nkey_seed", "user") if nats.get(k)]
            if len(ways) > 1:
                errors.append(f"choose one of {', '.join(ways)} - at `$.{section}.nats`")
            if bool(nats.get("user")) != bool(nats.get("password_file")):
                errors.append(f"user and password_file go together - at `$.{section}.nats`")
    return errors


def _report(errors: list[str]) -> str:
    if len(errors) == 1:
        return f"invalid configuration: {errors[0]}"
    lines = "".join(f"\n  {error}" for error in errors)
    return f"invalid configuration ({len(errors)} errors):{lines}"


def is_loopback(host: str) -> bool:
    """Whether `host` (web.host) binds a loopback address only: 127.0.0.0/8, ::1, localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy with keys of the given sections replaced (None values are ignored), re-validated:
    `with_overrides(c, capture={"bpf": "udp"}, web={"port": None})`."""
    data = msgspec.to_builtins(config)
    changed = False
    for section, values in sections.items():
        for key, value in values.items():
            if value is not None:
                data[section][key] = value
                changed = True
    return parse_config(data) if changed else config
