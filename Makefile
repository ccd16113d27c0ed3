# Two commands matter: `make run` (the service on its embedded default, with demo data) and
# `make test` (everything the tests need, then the suite on PostgreSQL + Redis and on SQLite).
PYTHON ?= $(shell scripts/find-python)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
FAKE_PROVIDER_PORT ?= 8765
SERVE_PORT ?= 8080
SERVE_STREAM_PORT ?= 8081
# The suite's PostgreSQL and Redis: the machine's, on loopback.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/promptregistry
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

SQLITE_TESTS := tests/registry/test_immutability.py \
  tests/registry/test_services.py tests/registry/test_demo.py \
  tests/releases/test_events_append_only.py tests/releases/test_services.py \
  tests/api/test_run.py tests/api/test_events.py tests/runs/test_shadows.py \
  tests/evaluations/test_eval_runs.py tests/evaluations/test_eval_runs_api_admin.py \
  tests/evaluations/test_gates.py tests/api/test_gates_api.py \
  tests/evaluations/test_canary_analysis.py tests/evaluations/test_canary_api.py \
  tests/evaluations/test_experiment_results.py tests/registry/test_hub.py \
  tests/api/test_prompt_files.py tests/api/test_budgets.py tests/runs/test_spend.py \
  tests/api/test_response_cache.py tests/api/test_guardrails.py

.PHONY: run serve test lint check-python venv install demo clean

check-python:
	@test -n "$(PYTHON)" || { echo "No Python >= 3.12 found; pass PYTHON=/path/to/python3.12+" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 12))' || \
	  { echo "$(PYTHON) is older than Python 3.12, which Django 6 needs" >&2; exit 1; }

$(BIN)/python: | check-python
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml sdk/pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,serve]" -e ./sdk
	test -f .env || printf '# Local development settings (see config/settings.py); not committed.\nDEBUG=true\n' > .env
	touch $(STAMP)

install: $(STAMP)

# make run is the development server: DEBUG on, the development SECRET_KEY, 127.0.0.1 only.
run: export DEBUG ?= true
# The suite runs with production-like settings and a throwaway key; plain HTTP test clients.
lint test: export SECRET_KEY ?= insecure-test-only-key-0123456789abcdefghijklmnopqrstuvwxyz
lint test: export SECURE_SSL_REDIRECT ?= false
lint test: export DEBUG = false
# The suite starts hundreds of Python processes (xdist workers, Celery workers, servers, fresh
# interpreters for settings checks): each must find the project's bytecode and pytest's rewritten
# tests cached, not compile them again (a shell that sets PYTHONDONTWRITEBYTECODE costs the suite
# about a minute). Empty means unset to Python.
lint test: export PYTHONDONTWRITEBYTECODE =
# The local OpenAI-compatible server (runs/fake_provider.py) runs beside the web server as the
# provider named local, so a prompt can be run with no API key; it stops with the web server.
# devserver is runserver ending its banner with the admin's address and login in a box, printed
# once it listens on $(HOST):$(PORT) (api/management/commands/devserver.py).
run: install
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py provider add local --base-url http://127.0.0.1:$(FAKE_PROVIDER_PORT)/v1 --timeout 10
	$(BIN)/python manage.py demo --admin-url http://$(HOST):$(PORT)/admin/
	$(BIN)/python -m runs.fake_provider --port $(FAKE_PROVIDER_PORT) & fake=$$!; \
	  trap 'kill $$fake 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/python manage.py devserver $(HOST):$(PORT)

# make serve is the production-like stack on this machine: PostgreSQL and Redis, DEBUG off, a
# generated secret kept in var/serve.env, and every process of the Procfile (scripts/serve).
serve: install
	BIN=$(BIN) PORT=$(SERVE_PORT) STREAM_PORT=$(SERVE_STREAM_PORT) scripts/serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null

test: install lint
	scripts/check-sdk
	scripts/ensure-services
	scripts/ensure-browser
	# Four processes on two cores (pytest-django gives each its own test database): much of the
	# run waits rather than computes (live servers, workers, beat and gunicorn started by the
	# tests, PostgreSQL's flushes between transactional tests), and the extra processes fill those
	# waits (on 2026-12-07, quiet: 8 min 29 s with four against 10 min 33 s with three; with the
	# suite of a week before, four had been slower than three). It includes the API fuzzing
	# (tests/api/test_fuzz.py: Schemathesis on every operation, bounded and seeded), one test per
	# operation, shared like any other. The slowest tests are listed at the end: the suite's
	# budget is 10 minutes on 2 cores.
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest -n 4 --durations=30
	# The embedded default: SQLite, local-memory cache, eager Celery. The tests whose behaviour
	# depends on the database (triggers, constraints, transactions, the runtime and run paths);
	# the pure ones (rendering, bucketing, redaction...) need no second run, nor tests/test_settings.py:
	# each of its cases starts a fresh Python with the whole environment it states, whichever run it is in.
	# Two processes here too: each has its own in-memory database.
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -n 2 -m "not postgres" -q $(SQLITE_TESTS)

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
