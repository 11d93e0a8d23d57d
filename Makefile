# The verbs of the README. Everything is installed by the project's own scripts:
# a virtualenv from requirements.lock (scripts/bootstrap.sh), then jars, MinIO and Postgres
# (python -m devstack install). State and logs: .state/ ; downloads: ~/.cache/rtap/.
SHELL := /bin/bash
PY    := .venv/bin/python
EVENTS ?= 20000

.DEFAULT_GOAL := help
.PHONY: help venv install run up demo reconcile upgrade compact marts scaleout chaos test test-unit stop status password lint format lock bench measure docs clean

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv:
	@scripts/bootstrap.sh

install: venv ## install everything (virtualenv, Kafka/Spark jars, MinIO, Postgres) into caches
	@$(PY) -m devstack install

run: install ## command one: start the platform, its supervised stream and a demo
	@$(PY) -m devstack up
	@$(PY) -m devstack demo --events $(EVENTS)

up: install ## start every service (no demo)
	@$(PY) -m devstack up

demo: install ## produce demo events, start the supervised stream, wait for it, summarize
	@$(PY) -m devstack demo --events $(EVENTS)

SINCE ?=
UNTIL ?=
reconcile: install ## account for every produced event (SINCE=/UNTIL= ISO times; default: 24 h)
	@$(PY) -m devstack reconcile $(if $(SINCE),--since $(SINCE)) $(if $(UNTIL),--until $(UNTIL))

upgrade: install ## upgrade a first-release stream (four queries) in place; stop it first (docs/deployment.md)
	@$(PY) -m devstack upgrade

DAY ?=
MEMORY ?=
compact: install ## compact one event day into the Iceberg warehouse and marts (DAY=YYYY-MM-DD; default yesterday; MEMORY=6g for a large day)
	@$(PY) -m devstack compact $(if $(DAY),--day $(DAY)) $(if $(MEMORY),--driver-memory $(MEMORY))

marts: install ## rebuild marts from the Iceberg events table (SINCE=, UNTIL=: YYYY-MM-DD; MARTS=a,b; default all)
	@$(PY) -m devstack marts $(if $(SINCE),--since $(SINCE)) $(if $(UNTIL),--until $(UNTIL)) $(if $(MARTS),--marts $(MARTS))

SCALEOUT ?= up
scaleout: install ## a Spark standalone cluster + 3-broker Kafka next to the stack (SCALEOUT=up|down|status)
	@$(PY) -m devstack scaleout $(SCALEOUT)

QUICK ?=
SEED ?=
chaos: install ## live traffic + faults through the supervised stream, then proof (QUICK=1: ~10 min; default ~60-90 min)
	@$(PY) -m devstack chaos $(if $(QUICK),--quick) $(if $(SEED),--seed $(SEED))

# Two pytest-xdist workers share the stack: much of an integration test waits (JVM and Airflow
# start-up, S3 round trips), so two of them fill the 2 cores better than one. A module is one
# unit of work (its module fixtures are set up once), taken in the order of tests/conftest.py
# (slowest first). TEST_WORKERS=0 runs everything in one process. Then the quick chaos soak,
# alone (it stops and starts the shared services), on the stack the first run leaves running.
TEST_WORKERS ?= 2
test: install ## command two: lint, unit tests, integration tests on the real stack, dags test
	@$(PY) -m devstack install --browser
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@status=0; \
	RTAP_STACK_HANDOFF=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		-m "not chaos" || status=$$?; \
	$(PY) -m pytest -m chaos tests/integration/test_chaos.py || status=$$?; \
	exit $$status

test-unit: venv ## unit tests and DAG checks only (no services)
	@$(PY) -m pytest -m "not integration"

stop: ## stop everything the stack started (by pid, no orphans)
	@if [ -x $(PY) ]; then $(PY) -m devstack down; else echo "nothing installed"; fi

status: ## each service, its ports, pid and health; the stream (driver, lag, control, health)
	@$(PY) -m devstack status

password: ## print the Airflow admin login
	@$(PY) -m devstack password

lint: venv ## ruff check and format check
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .

format: venv
	@$(PY) -m ruff check --fix .
	@$(PY) -m ruff format .

lock: venv ## re-pin requirements.lock from requirements.txt
	@.venv/bin/uv pip compile requirements.txt --python-version 3.11 --generate-hashes --no-header -o requirements.lock

SCENARIOS ?=
bench: install ## benchmarks: print figures, write bench-results/ and docs/benchmarks.md
	@$(PY) -m bench $(SCENARIOS)

measure: install ## measure cold install, warm start and idle memory (writes docs/footprint.md)
	@$(PY) scripts/measure.py

docs: venv ## regenerate generated docs (event contract)
	@$(PY) -m include.events.contract > docs/event-contract.md

clean: stop ## stop and delete all state (keeps the download cache)
	rm -rf .state
