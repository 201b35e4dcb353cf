# SPARKS Presence: `make run` serves the embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/sparks_presence
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1

.PHONY: run test lint format worker beat

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

## run: install, migrate, seed the demo and serve on http://127.0.0.1:$(PORT) (ASGI) with nothing else running
run: $(VENV)/.installed-runtime
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py seed_demo
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

## test: lint, then the whole suite against PostgreSQL and Redis on 127.0.0.1 (a fresh test database).
## Tasks run in-process for determinism; the worker tests start real Celery workers on Redis.
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) SECRET_KEY=test-only-secret-key DEBUG=0 \
		CELERY_TASK_ALWAYS_EAGER=1 PRESENCE_IN_PROCESS_SWEEP=0 $(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## worker / beat: the Celery processes of a deployment on PostgreSQL and Redis (set DATABASE_URL, REDIS_URL)
worker: $(VENV)/.installed-runtime
	$(BIN)/celery -A sparks_site worker --loglevel=INFO

beat: $(VENV)/.installed-runtime
	$(BIN)/celery -A sparks_site beat --loglevel=INFO

.PHONY: bench serve-prod

## bench: every benchmark at smoke size (PostgreSQL and Redis on 127.0.0.1, `wrk` installed; each
## creates and drops its own database and Redis db). Full sizes and figures: BENCHMARKS.md.
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/engine.py --quick
	$(BIN)/python bench/expiry_sweep.py --quick
	$(BIN)/python bench/heartbeat_ingest.py --quick --no-synapse
	$(BIN)/python bench/load.py --quick

## serve-prod: the production processes on PostgreSQL and Redis (set DATABASE_URL, REDIS_URL and
## SECRET_KEY): gunicorn gthread workers (keep-alive) for the REST API on $(PORT), uvicorn for websockets and SSE
## on $(WS_PORT), a Celery worker and Celery beat (the expiry sweep). Route /ws/ and the SSE stream
## to uvicorn, the rest to gunicorn. Ctrl-C stops all four; a deployment runs each under its supervisor.
## All four share $(METRICS_DIR) (PROMETHEUS_MULTIPROC_DIR), emptied at start: /metrics adds them up.
WS_PORT ?= 8001
METRICS_DIR ?= $(CURDIR)/.prometheus-multiproc
WEB_WORKERS ?= 4
WEB_THREADS ?= 1
serve-prod: $(VENV)/.installed-runtime
	@test -n "$$DATABASE_URL" && test -n "$$REDIS_URL" && test -n "$$SECRET_KEY" || \
		{ echo "serve-prod: set DATABASE_URL, REDIS_URL and SECRET_KEY (see .env.example)"; exit 2; }
	rm -rf "$(METRICS_DIR)" && mkdir -p "$(METRICS_DIR)"
	DEBUG=0 PROMETHEUS_MULTIPROC_DIR="$(METRICS_DIR)" $(BIN)/python manage.py migrate --noinput
	export PROMETHEUS_MULTIPROC_DIR="$(METRICS_DIR)"; trap 'kill 0' INT TERM EXIT; \
	DEBUG=0 PRESENCE_IN_PROCESS_SWEEP=0 $(BIN)/gunicorn sparks_site.wsgi:application \
		--bind 127.0.0.1:$(PORT) --workers $(WEB_WORKERS) --worker-class gthread --threads $(WEB_THREADS) & \
	DEBUG=0 PRESENCE_IN_PROCESS_SWEEP=0 $(BIN)/uvicorn sparks_site.asgi:application --host 127.0.0.1 --port $(WS_PORT) \
		--loop uvloop --http httptools --ws websockets-sansio --ws-per-message-deflate false --lifespan off --no-access-log & \
	DEBUG=0 $(BIN)/celery -A sparks_site worker --loglevel=INFO & \
	DEBUG=0 $(BIN)/celery -A sparks_site beat --loglevel=INFO & \
	wait
