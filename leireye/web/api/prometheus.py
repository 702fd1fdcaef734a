"""What /metrics reports: capture, ring, stats and every web worker's counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from leireye.errors import LeirEyeError
from leireye.fleet.model import SensorState
from leireye.ring.storestatus import StoreState
from leireye.web.hub import Hub
from leireye.web.metrics import Metric, MetricType, Sample
from leireye.web.registry import COUNTERS
from leireye.web.statusview import capture_view


def _one(name: str, kind: MetricType, help_text: str, value: float) -> Metric:
    return Metric(name, kind, help_text, [({}, value)])


def store_metrics(hub: Hub) -> list[Metric]:
    store = hub.store.read()
    if store is None:
        return []
    return [
        _one("leireye_store_up", "gauge", "1 while the packet store writes (0: stopped or "
             "failed, see the log)", int(store.state == StoreState.WRITING)),
        Metric("leireye_store_state", "gauge", "The packet store's state (1 for the current)",
               [({"state": s.value}, int(store.state == s)) for s in StoreState]),
        _one("leireye_store_frames_written_total", "counter", "Frames written to the store",
             store.frames_written),
        _one("leireye_store_frames_lost_total", "counter", "Frames the store missed (writer "
             "lapped or restarted, disk failed); never lost to the capture", store.frames_lost),
        _one("leireye_store_lag_frames", "gauge", "Frames captured, not yet read by the store "
             "writer", store.lag_frames),
        _one("leireye_store_bytes", "gauge", "Bytes held by the store's files", store.disk_bytes),
        _one("leireye_store_files", "gauge", "Files held by the store", store.files),
        _one("leireye_store_oldest_seconds", "gauge", "Time (Unix s) of the oldest packet held",
             store.oldest_ns / 1e9),
    ]  # fmt: skip


_FLOW_COUNTERS: Final = (
    ("records", "Ring records the flow process read"),
    ("not_ip", "Records the flow process read that belong to no IP flow"),
    ("started", "Flows started"),
    ("ended", "Flows ended (teardown, timeouts, eviction)"),
    ("evicted", "Flows ended early because flows.max_active was reached"),
    ("hosts_evicted", "Hosts dropped from the host table because it was full"),
    ("collisions", "Records dropped on a 64-bit flow key hash collision"),
    ("overflow", "Records of new flows a batch brought beyond what the table holds"),
    ("ring_lost", "Ring records the flow process missed (it fell behind)"),
    ("lost_on_restart", "Active flows lost when the flow process restarted"),
)


def flow_metrics(hub: Hub) -> list[Metric]:
    """The flow process's counters, from its shared-memory view (none when flows are off)."""
    if hub.flows is None:
        return []
    try:
        counters = hub.flows.view.snapshot(retry_s=0.01)[2]
    except LeirEyeError:  # a writer died mid-publish: the next scrape reads the new one
        return []
    metrics = [
        _one("leireye_flows_active", "gauge", "Flows held by the flow process",
             counters["active_flows"]),
        _one("leireye_flows_hosts", "gauge", "Hosts held by the flow process",
             counters["active_hosts"]),
    ]  # fmt: skip
    metrics += [
        _one(f"leireye_flows_{name}_total", "counter", help_text, counters[name])
        for name, help_text in _FLOW_COUNTERS
    ]
    return metrics


def sensor_metrics(states: list[SensorState]) -> list[Metric]:
    """At a fleet central: one sample per sensor (label `sensor`) of what its table shows."""
    if not states:
        return []

    def each(pick: Callable[[SensorState], float]) -> list[Sample]:
        return [({"sensor": s.name}, pick(s)) for s in states]

    def stat(key: str) -> Callable[[SensorState], float]:
        def pick(s: SensorState) -> float:
            value = (s.stats or {}).get(key, 0)
            return value if isinstance(value, int | float) else 0

        return pick

    return [
        Metric("leireye_sensor_up", "gauge", "1 while the sensor's messages arrive (live)",
               each(lambda s: int(s.state == "live"))),
        Metric("leireye_sensor_last_message_seconds", "gauge",
               "Time (Unix s) of the sensor's last message (0: none yet)",
               each(lambda s: s.last_message_ns / 1e9)),
        Metric("leireye_sensor_packets_total", "counter", "Records received from the sensor",
               each(lambda s: s.packets)),
        Metric("leireye_sensor_bytes_total", "counter",
               "Bytes (wire lengths) of the records received from the sensor",
               each(lambda s: s.bytes)),
        Metric("leireye_sensor_lost_total", "counter",
               "Records the sensor could not send, or missing from its stream",
               each(lambda s: s.lost)),
        Metric("leireye_sensor_bad_batches_total", "counter",
               "Messages of the sensor the central could not decode",
               each(lambda s: s.bad_batches)),
        Metric("leireye_sensor_flows_total", "counter",
               "Ended flows received from the sensor (in the central's flow store)",
               each(lambda s: s.flows)),
        Metric("leireye_sensor_flows_missed_total", "counter",
               "Flow events the sensor could not send (its flows messages' missed)",
               each(lambda s: s.flows_missed)),
        Metric("leireye_sensor_minutes_total", "counter",
               "Host and app minute rows received from the sensor (in the central's store)",
               each(lambda s: s.minutes)),
        Metric("leireye_sensor_minutes_missed_total", "counter",
               "Minute rows the sensor could not send (its minutes messages' missed)",
               each(lambda s: s.minutes_missed)),
        Metric("leireye_sensor_packets_per_second", "gauge",
               "Packets per second at the sensor (its last stats)",
               each(stat("packets_per_second"))),
        Metric("leireye_sensor_bytes_per_second", "gauge",
               "Bytes per second at the sensor (its last stats)",
               each(stat("bytes_per_second"))),
    ]  # fmt: skip


def fleet_metrics(hub: Hub) -> list[Metric]:
    fleet = hub.fleet.read()
    if fleet is None:
        return []
    who = {"sensor": fleet.sensor}

    def one(name: str, kind: MetricType, help_text: str, value: float) -> Metric:
        return Metric(name, kind, help_text, [(who, value)])

    return [
        one("leireye_fleet_connected", "gauge", "1 while the publisher is connected to NATS",
            int(fleet.connected)),
        one("leireye_fleet_published_records_total", "counter",
            "Packet records JetStream acknowledged (this run)", fleet.published_records),
        one("leireye_fleet_published_batches_total", "counter",
            "Packet batches JetStream acknowledged", fleet.published_batches),
        one("leireye_fleet_published_bytes_total", "counter",
            "Bytes of packet batches acknowledged (as sent, compressed)", fleet.published_bytes),
        one("leireye_fleet_lost_total", "counter", "Packet ids the ring overwrote before the "
            "publisher sent them (NATS slow or away); never lost to the capture", fleet.lost),
        one("leireye_fleet_behind", "gauge", "Packet ids captured, not yet published",
            fleet.behind),
        one("leireye_fleet_in_flight", "gauge", "Batches published, not yet acknowledged",
            fleet.in_flight),
        one("leireye_fleet_retries_total", "counter",
            "Batches published again (an ack failed or did not come, a reconnect)",
            fleet.retries),
        one("leireye_fleet_messages_skipped_total", "counter",
            "Stats and status messages not sent while NATS was away", fleet.messages_skipped),
        one("leireye_fleet_flow_events_missed_total", "counter",
            "Flow events overwritten before the publisher read them", fleet.flow_events_missed),
        one("leireye_fleet_minutes_sent_total", "counter",
            "Host and app minute rows JetStream acknowledged", fleet.minutes_sent),
        one("leireye_fleet_minutes_missed_total", "counter",
            "Minute rows not sent (a store file gone or unreadable, a row too big)",
            fleet.minutes_missed),
        one("leireye_fleet_stream_mismatch", "gauge",
            "Stream settings that differ from fleet.streams (see the status)",
            len(fleet.stream_mismatch)),
    ]  # fmt: skip


def collect(hub: Hub, sensors: tuple[str, ...] | None = None) -> list[Metric]:
    """Every metric; at a fleet central, those of the sensors `sensors` (None: every one). A
    user limited to some sensors gets only their sensors' lines: every other metric (capture,
    ring, stats, store, web) counts every sensor's traffic."""
    if not hub.sensors.sees_all(sensors):
        hub.sensors.refresh()
        return sensor_metrics(hub.sensors.states(sensors))
    hub.tick_status()
    metrics: list[Metric] = []
    if hub.status is not None:
        status = capture_view(hub.status)
        metrics += [
            _one("leireye_capture_up", "gauge", "1 while capturing", int(status.is_capturing)),
            _one("leireye_capture_packets_total", "counter",
                 "Packets captured by the current capture process", status.packets_captured),
            _one("leireye_capture_bytes_total", "counter",
                 "Bytes (on the wire) captured by the current capture process",
                 status.bytes_captured),
            _one("leireye_capture_restarts_total", "counter",
                 "Capture process restarts after a failure", status.restarts),
            Metric("leireye_drops_total", "counter", "Packets lost, by cause", [
                ({"cause": "kernel"}, status.kernel_drops),
                ({"cause": "interface"}, status.if_drops),
            ]),
            Metric("leireye_decode_errors_total", "counter", "Frames the decoder flagged, by kind",
                   [({"kind": k}, v) for k, v in sorted(status.decode_errors_by_kind.items())]),
        ]  # fmt: skip
    ring = hub.ring
    metrics += [
        _one("leireye_ring_written_total", "counter",
             "Records written to the ring by this run (not the last id)", ring.written),
        _one("leireye_ring_capacity", "gauge", "Records the ring holds", ring.capacity),
        _one("leireye_ring_fill_ratio", "gauge", "Fraction of the ring in use", ring.fill),
    ]  # fmt: skip
    try:
        snap = hub.stats_series.read()
    except LeirEyeError:
        snap = None
    if snap is not None:
        metrics += [
            _one("leireye_packets_per_second", "gauge", "Packets per second (last second)",
                 snap.packets_per_second),
            _one("leireye_bytes_per_second", "gauge", "Bytes per second (last second)",
                 snap.bytes_per_second),
            _one("leireye_stats_ring_lost_total", "counter",
                 "Ring records the stats process missed", snap.ring_lost),
        ]  # fmt: skip
    metrics += store_metrics(hub)
    metrics += flow_metrics(hub)
    if hub.sensors.central:
        metrics += sensor_metrics(hub.sensors.states(sensors))
    metrics += fleet_metrics(hub)
    counters = hub.registry.read_counters()
    helps: dict[str, tuple[MetricType, str]] = {
        "connections": ("gauge", "Open WebSocket connections"),
        "messages_sent": ("counter", "WebSocket messages sent"),
        "packets_delivered": ("counter", "Packets handed to WebSocket sessions"),
        "packets_encoded": ("counter", "Packets JSON-encoded (once per worker)"),
        "client_dropped": ("counter", "Packets skipped for clients that did not keep up"),
        "ring_lost": ("counter", "Ring records overwritten before the worker read them"),
        "http_requests": ("counter", "REST API requests answered"),
    }
    for name in COUNTERS:
        kind, help_text = helps[name]
        metric = f"leireye_web_{name}" + ("_total" if kind == "counter" else "")
        samples: list[Sample] = [({"worker": str(i)}, v) for i, v in enumerate(counters[name])]
        metrics.append(Metric(metric, kind, help_text, samples))
    return metrics
