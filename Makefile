# Archify: every target creates .venv on first use and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARCHIFY := $(BIN)/archify
STAMP := $(VENV)/.installed
TENANT ?= acme

.PHONY: demo test test-scheduler lint soak bench bench-fleets bench-airflow install \
        migrate-status migrate-public migrate-tenants \
        migrate-tenant migrate-all clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# compat: a plain path entry, not an import hook (which costs every command ~40 ms)
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[dev,airflow]'
	@# bytecode now, as a wheel install has it: with PYTHONDONTWRITEBYTECODE set (CI images,
	@# containers) every command would otherwise compile archify from source (~70 ms)
	$(BIN)/python -m compileall -q archify_core archify_airflow benchmarks > /dev/null
	touch $(STAMP)

install: $(STAMP)

## The main job on an embedded PostgreSQL: register demo tenants, migrate everything, show status.
demo: $(STAMP)
	$(ARCHIFY) public
	$(ARCHIFY) create-tenant acme --name "Acme" --no-migrate --if-not-exists
	$(ARCHIFY) create-tenant corp --name "Corp" --no-migrate --if-not-exists
	$(ARCHIFY) create-tenant startup --name "Startup" --no-migrate --if-not-exists
	$(ARCHIFY) all
	$(ARCHIFY) status

## The whole suite, against a PostgreSQL the suite starts itself.
test: $(STAMP)
	$(BIN)/pytest -q

## The example DAG under a real Airflow scheduler, dag-processor and api-server (LocalExecutor).
test-scheduler: $(STAMP)
	$(BIN)/pytest -q -m scheduler tests/scheduler

## Trigger-to-finished of 2,000 tenants in 8 shards under the scheduler vs `archify all`.
bench-airflow: $(STAMP)
	$(BIN)/python -m benchmarks.airflow_scheduler

lint: $(STAMP)
	$(BIN)/ruff check .

soak: $(STAMP)
	$(BIN)/pytest -q -m soak

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run --write-docs

## One rollout over 3 databases on 3 servers (docs/fleets.md).
bench-fleets: $(STAMP)
	$(BIN)/python -m benchmarks.fleets --servers 3 --n 2000

migrate-status: $(STAMP)
	$(ARCHIFY) status
migrate-public: $(STAMP)
	$(ARCHIFY) public
migrate-tenants: $(STAMP)
	$(ARCHIFY) tenants
migrate-tenant: $(STAMP)
	$(ARCHIFY) tenant $(TENANT)
migrate-all: $(STAMP)
	$(ARCHIFY) all

clean:
	rm -rf .archify
