# The two commands a newcomer needs: `make demo` and `make test`. Both set up what is
# missing (Debian packages, TimescaleDB, the Python venv) and start the local services.
SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test services stop lint env bench bench-genealogy bench-ingest fuzz-api fuzz soak

$(STAMP): pyproject.toml deploy/python-env.sh
	bash deploy/python-env.sh
	touch $@

env: $(STAMP)

services:
	@bash deploy/services.sh up

# `eval "$$(...)"` alone would hide a failed services step and run the demo anyway.
demo: $(STAMP)
	@services=$$(bash deploy/services.sh up) && eval "$$services" && $(VENV)/bin/tracectl demo

test: $(STAMP)
	@bash deploy/services.sh up >/dev/null
	@bash deploy/browser.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

stop:
	@if [ -f .services/collector.pid ]; then kill "$$(cat .services/collector.pid)" 2>/dev/null || true; rm -f .services/collector.pid; fi
	@bash deploy/services.sh down

bench: $(STAMP)
	@eval "$$(bash deploy/services.sh up)" && $(VENV)/bin/python bench/edge_pipeline.py

bench-genealogy: $(STAMP)
	@eval "$$(bash deploy/services.sh up)" && $(VENV)/bin/python -m bench.genealogy

# Fleet -> broker -> cloud-collector process(es) -> TimescaleDB, beside a binary COPY in the
# same run; 3 runs of 1 and 2 collectors x 500 and 100 records per message, and p95 latency
# at 20,000 readings/s. Other choices: make bench-ingest INGEST_ARGS="--runs 1 --collectors 1".
INGEST_ARGS ?=
bench-ingest: $(STAMP)
	@eval "$$(bash deploy/services.sh up)" && bash deploy/services.sh standby down >/dev/null \
		&& $(VENV)/bin/python -m bench.ingest $(INGEST_ARGS)

# schemathesis against the collector's OpenAPI (admin and partner keys) for longer than the
# test suite's short run: no 5xx, no hang. Longer still: make fuzz-api FUZZ_TIME_S=3600.
FUZZ_EXAMPLES ?= 200
FUZZ_TIME_S ?= 600
fuzz-api: $(STAMP)
	@bash deploy/services.sh up >/dev/null
	TRACE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) TRACE_FUZZ_MAX_TIME_S=$(FUZZ_TIME_S) \
		$(VENV)/bin/pytest tests/cloud_collector/test_openapi_fuzz.py -q

# The property tests of every parser of outside bytes with 5,000 generated inputs per test
# (`make test` runs the same tests with 200, derandomized). A failure prints its
# @reproduce_failure blob.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long $(VENV)/bin/pytest -q $$(find tests -name 'test_*properties.py' | sort)

# The chaos scenarios of tests/chaos/ (which `make test` runs short) with a bigger fleet,
# longer outages and each fault repeated, the whole run SOAK_REPEAT times; every recovery
# time is appended to SOAK_REPORT (scenario, seconds per fault, reconciliation); the processes'
# logs and state folders of the last run are kept under .services/soak-N/.
SOAK_EDGES ?= 8
SOAK_OUTAGE_S ?= 20
SOAK_WARMUP_S ?= 10
SOAK_ROUNDS ?= 5
SOAK_STORM_MESSAGES ?= 5000
SOAK_REPEAT ?= 3
SOAK_REPORT ?= soak-report.tsv
soak: $(STAMP)
	@bash deploy/services.sh up >/dev/null
	@for run in $$(seq 1 $(SOAK_REPEAT)); do \
		echo "soak run $$run of $(SOAK_REPEAT)"; \
		CHAOS_EDGES=$(SOAK_EDGES) CHAOS_OUTAGE_S=$(SOAK_OUTAGE_S) CHAOS_WARMUP_S=$(SOAK_WARMUP_S) \
		CHAOS_ROUNDS=$(SOAK_ROUNDS) CHAOS_STORM_MESSAGES=$(SOAK_STORM_MESSAGES) \
		CHAOS_RECOVERY_TIMEOUT_S=600 CHAOS_REPORT=$(abspath $(SOAK_REPORT)) \
		$(VENV)/bin/pytest tests/chaos -q --basetemp=$(abspath .services/soak-$$run) || exit 1; \
	done
