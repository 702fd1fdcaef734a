#!/usr/bin/env bash
# A short run of every benchmark, so CI proves they still work (figures from a smoke are not
# measurements: see docs/performance.md for the real runs and their commands).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
$py benchmarks/bench_decode.py --packets 20000 --repeat 1
$py benchmarks/bench_decode_ab.py --base HEAD --packets 5000 --rounds 1
$py benchmarks/bench_capture_path.py --packets 20000 --repeat 1
$py benchmarks/bench_ring.py --seconds 0.2
$py benchmarks/bench_stats.py --records 200000
$py benchmarks/bench_flows.py --flows 20000 --records 20000 --batch 4096 --mix 5000
$py benchmarks/bench_encode.py --records 20000 --repeat 1
$py benchmarks/bench_frames.py --batch 2048 --subs 2 --repeat 1
$py benchmarks/bench_js_decode.py --packets 20000 --repeat 3
$py benchmarks/bench_flow_events.py --events 1000 --subs 2 --groups 2 --repeat 1
$py benchmarks/bench_ringscan.py --capacity 16384 --repeat 1
$py benchmarks/bench_follow.py --mb 0.5 --repeat 1
$py benchmarks/bench_flowstore.py --hours 0.01 --writer-flows 2000 --repeat 1
$py benchmarks/bench_flow_sink.py --flows 5000 --repeat 1
$py benchmarks/bench_flowstore_day.py --dir "${TMPDIR:-/tmp}/leireye-smoke-day-$$" --hours 2 --rate 20 --proof-rate 20 --repeat 1 --min-free-gb 1
$py benchmarks/bench_store.py --packets 5000 --store-gb 0.01 --repeat 1
$py benchmarks/bench_store_read.py --packets 5000 --repeat 1
$py benchmarks/bench_fleet_publish.py --packets 20000 --repeat 1
if [ "$(id -u)" -eq 0 ]; then
  $py benchmarks/bench_capture_live.py --rates 5000 --seconds 1
  $py benchmarks/bench_fanout.py --smoke
  $py benchmarks/bench_idle.py --seconds 1
  if [ -f benchmarks/bench_ws.py ]; then $py benchmarks/bench_ws.py --quick; fi
  if command -v tcpreplay >/dev/null; then
    $py benchmarks/bench_e2e.py --quick
    $py benchmarks/bench_fanout_ws.py --quick
    if command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; then
      $py benchmarks/bench_fleet_e2e.py --quick
    else
      echo "smoke: nats-server missing (scripts/setup.sh installs it): bench_fleet_e2e skipped" >&2
    fi
  else
    echo "smoke: tcpreplay missing (scripts/setup.sh installs it): bench_e2e/bench_fanout_ws skipped" >&2
  fi
fi
