# The two commands of the README: `make run` (as root) and `make test`.
# CONFIG: the config file (default: $LEIREYE_CONFIG, else configs/default.yaml).
CONFIG ?=
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test lint bench bench-smoke fleet-demo clean

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/leireye run $(if $(CONFIG),-c $(CONFIG)) $(ARGS)

# A fleet on this machine (as root): NATS, namespaces with traffic, sensors and a central
# (docs/fleet-deploy.md). ARGS: e.g. ARGS="--sensors 2 --keep".
fleet-demo: setup
	.venv/bin/leireye fleet-demo $(ARGS)

test: setup
	.venv/bin/python -m pytest --durations=15 $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/python -m tests.layers

bench: setup
	.venv/bin/python benchmarks/bench_decode.py
	.venv/bin/python benchmarks/bench_capture_path.py --process
	.venv/bin/python benchmarks/bench_ring.py
	.venv/bin/python benchmarks/bench_stats.py
	.venv/bin/python benchmarks/bench_encode.py
	.venv/bin/python benchmarks/bench_capture_live.py
	.venv/bin/python benchmarks/bench_ws.py
	.venv/bin/python benchmarks/bench_idle.py
	.venv/bin/python benchmarks/bench_e2e.py --json bench-e2e.json
	.venv/bin/python benchmarks/bench_fanout_ws.py --json bench-fanout.json

bench-smoke: setup
	bash benchmarks/smoke.sh

clean:
	rm -rf .venv build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
