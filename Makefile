# SPARKS Presence: `make run` serves the embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/sparks_presence
TEST_REDIS_URL ?= redis://127.0.0.1:6379/1
# The suites of the hot state and the live fan-out run again on a real Redis Cluster on loopback
# (three masters and their replicas, started and stopped by tests/redis_cluster.py).
TEST_CLUSTER_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/sparks_presence_cluster
TEST_CLUSTER_REDIS_URL ?= redis://127.0.0.1:6379/2
CLUSTER_SUITES := tests/presence/hot tests/presence/services tests/presence/test_hot_path.py \
	tests/presence/test_rate_limits.py tests/presence/test_fastpath.py tests/presence/test_fastlane.py \
	tests/presence/test_reads.py tests/presence/test_history.py tests/presence/test_websocket.py \
	tests/presence/test_hub.py tests/presence/test_shared_snapshot.py tests/presence/test_snapshot_pages.py

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

## run: install, migrate, seed the demo (its colleagues acting out their presence) and serve on
## http://127.0.0.1:$(PORT) (ASGI) with nothing else running
run: $(VENV)/.installed-runtime
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py seed_demo
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py demo_presence
	DEBUG=$${DEBUG:-1} DEMO_COLLEAGUES=$${DEMO_COLLEAGUES:-1} $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

## test: lint, then the whole suite against PostgreSQL and Redis on 127.0.0.1 (a fresh test database).
## Tasks run in-process for determinism; the worker tests start real Celery workers on Redis.
## Then the hot state's and live fan-out's suites again on a local Redis Cluster (redis-server), and
## the web client's unit tests on Node's own test runner (Node 20 or later, no npm package).
NODE ?= node
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) SECRET_KEY=test-only-secret-key DEBUG=0 \
		CELERY_TASK_ALWAYS_EAGER=1 BEAT_IN_PROCESS=0 $(BIN)/pytest $(PYTEST_ARGS)
	DATABASE_URL=$(TEST_CLUSTER_DATABASE_URL) REDIS_URL=$(TEST_CLUSTER_REDIS_URL) SECRET_KEY=test-only-secret-key \
		DEBUG=0 CELERY_TASK_ALWAYS_EAGER=1 BEAT_IN_PROCESS=0 \
		$(BIN)/python -m tests.redis_cluster -- $(BIN)/pytest -q $(CLUSTER_SUITES)
	$(NODE) --test tests/js/*.test.mjs

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
	$(BIN)/python bench/stale_reads.py --quick
	$(BIN)/python bench/heartbeat_ingest.py --quick --no-synapse
	$(BIN)/python bench/load.py --quick
	$(BIN)/python bench/unit_costs.py --quick
	$(BIN)/python bench/scaling.py --quick
	$(BIN)/python bench/cluster_scaling.py --quick

## serve-prod: the whole product on one port, http://$(HOST):$(PORT) (https with TLS_CERT_FILE and
## TLS_KEY_FILE), on PostgreSQL and Redis (set DATABASE_URL, REDIS_URL and SECRET_KEY): nginx serves the
## static files and proxies /ws/ and the SSE stream to the live server (uvicorn), the rest to the web
## server (granian, WSGI), both on loopback; a Celery worker and beat (deploy/processes.py). deploy/serve.py
## migrates, collects the static files, checks the deployment settings, then starts all five; Ctrl-C
## stops them, and so does any one of them exiting. nginx's config and temporary files: $(RUN_DIR).
## All processes share $(METRICS_DIR) (PROMETHEUS_MULTIPROC_DIR), emptied at start: /metrics adds them up.
HOST ?= 0.0.0.0
RUN_DIR ?= $(CURDIR)/.serve-prod
METRICS_DIR ?= $(CURDIR)/.prometheus-multiproc
NGINX ?= /usr/sbin/nginx
serve-prod: $(VENV)/.installed-runtime | $(NGINX)
	$(BIN)/python deploy/serve.py --host $(HOST) --port $(PORT) --run-dir "$(RUN_DIR)" \
		--metrics-dir "$(METRICS_DIR)" $(if $(WEB_WORKERS),--web-workers $(WEB_WORKERS)) --nginx $(NGINX)

## nginx (Debian's package), installed when missing.
$(NGINX):
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq nginx >/dev/null
