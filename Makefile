# langrun: `make run` starts the service on the embedded default, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
SECRET_FILE := var/secret_key

.PHONY: run test lint bench venv dev-venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt

dev-venv: $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt

$(SECRET_FILE):
	mkdir -p var
	$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $(SECRET_FILE)
	chmod 600 $(SECRET_FILE)

run: venv $(SECRET_FILE)
	export SECRET_KEY="$${SECRET_KEY:-$$(cat $(SECRET_FILE))}"; \
	$(BIN)/python manage.py migrate --noinput -v0 && \
	$(BIN)/python manage.py collectstatic --noinput -v0 && \
	$(BIN)/python manage.py bootstrap --base-url "http://$(HOST):$(PORT)" && \
	exec $(BIN)/python manage.py serve --host "$(HOST)" --port "$(PORT)"

test: dev-venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmark (bench/run.py): a fresh database of its own, the service as deployed, N webhooks at concurrency C.
# SCENARIO=io: a flow that calls a local API answering after DELAY seconds (1,000 webhooks, one round by default).
# SCENARIO=waits|streams: the N webhooks while HELD callers wait (`?wait=30`) or HELD event streams are open, on
# runs that wait DELAY seconds on that API (one round).
PROFILE ?= production
SCENARIO ?= quick
HELD_SCENARIOS := waits streams
DELAY ?= $(if $(filter $(HELD_SCENARIOS),$(SCENARIO)),20,1)
N ?= $(if $(filter io,$(SCENARIO)),1000,5000)
C ?= 32
CLUSTERS ?= 1
CLIENT ?= auto
ROUNDS ?= $(if $(filter io $(HELD_SCENARIOS),$(SCENARIO)),1,3)
HELD ?= 200
bench: dev-venv
	$(BIN)/python -m bench.run --profile "$(PROFILE)" --scenario "$(SCENARIO)" --delay "$(DELAY)" --n "$(N)" --c "$(C)" \
		--clusters "$(CLUSTERS)" --rounds "$(ROUNDS)" --client "$(CLIENT)" --held "$(HELD)" $(BENCH_ARGS)

lint: dev-venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache
