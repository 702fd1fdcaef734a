#!/usr/bin/env bash
# Install what LeirEye needs on a Debian machine, idempotently: system packages (as root, only
# those missing) and a virtualenv in .venv with the package and its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium + chromium-driver: the browser tests (tests/browser) drive the console headless.
PACKAGES=(libpcap-dev gcc python3-dev python3-venv iproute2 tcpdump tshark util-linux
          chromium chromium-driver)
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
  .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v -e '^WARNING: Location' -e '^$' || true
  .venv/bin/python -c 'import pcap, dpkt, numpy, msgspec, yaml' # fail loudly if anything is missing
  touch "$stamp"
fi
