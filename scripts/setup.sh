#!/usr/bin/env bash
# Install what LeirEye needs on a Debian machine, idempotently: system packages (as root, only
# those missing) and a virtualenv in .venv with the package, the sensor extra and the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium + chromium-driver: the browser tests (tests/browser) drive the console headless;
# tcpreplay: the end-to-end benchmarks; nats-server: the fleet's tests and demo start their own
# JetStream servers (tests/fleet, `make fleet-demo`); iputils-ping: concurrent pings are separate
# ICMP flows (tests/integration/test_flows_icmp.py).
PACKAGES=(libpcap-dev gcc python3-dev python3-venv iproute2 tcpdump tshark tcpreplay util-linux
          chromium chromium-driver nats-server iputils-ping)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# python3-dev/python3-venv are only needed when the python3 on PATH is Debian's own.
if [ "$(command -v python3)" != "/usr/bin/python3" ]; then
  keep=()
  for pkg in "${missing[@]}"; do
    case "$pkg" in python3-dev|python3-venv) ;; *) keep+=("$pkg") ;; esac
  done
  missing=("${keep[@]}")
fi
# Node runs the JavaScript client's tests (tests/js); a fresh machine usually has it already.
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing system packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # pip and setuptools talk a lot (build-backend notices): keep it in a log, show it on failure.
  if ! .venv/bin/python -m pip install -q -e '.[sensor,dev]' >.venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    echo "setup: pip install failed (log: .venv/pip-install.log)" >&2
    exit 1
  fi
  .venv/bin/python -c 'import pcap, dpkt, numpy, msgspec, yaml, pyarrow, duckdb' # fail loudly if anything is missing
  touch "$stamp"
fi

# Node before 20.10 has no WebSocket even with --experimental-websocket: the JavaScript client's
# tests then use the `ws` package, installed into the git-ignored tests/js/node_modules.
has_ws='if (typeof WebSocket !== "function") process.exit(1)'
if command -v node >/dev/null 2>&1 && ! node -e "$has_ws" 2>/dev/null \
    && ! node --experimental-websocket -e "$has_ws" 2>/dev/null \
    && [ ! -d tests/js/node_modules/ws ]; then
  echo "setup: installing the ws package for the JavaScript client tests"
  npm install --silent --no-save --no-package-lock --prefix tests/js ws@8 >/dev/null
fi
