# make run: serve the API with demo data.  make test: the whole suite against a real PostgreSQL.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup lock run test fuzz schema bench bench-queries bench-peer-setup bench-reruns bench-costs bench-export bench-events load studio-screenshots clean

setup: $(STAMP)

# Exact versions with hashes from requirements.lock (written by `make lock` from pyproject.toml's ranges), then
# the project itself with nothing more; pip check fails when the lock no longer covers pyproject.toml.
$(STAMP): pyproject.toml requirements.lock scripts/install_graphiql_assets.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@$(PY) -m pip check >/dev/null || { $(PY) -m pip check; echo "requirements.lock does not cover pyproject.toml: run make lock"; exit 1; }
	PYTHON=$(PY) bash scripts/install_graphiql_assets.sh
	touch $(STAMP)

# After changing a dependency in pyproject.toml; LOCK_ARGS=--upgrade moves every pin to the newest allowed.
lock:
	bash scripts/lock.sh $(LOCK_ARGS)

run: setup
	$(PY) -m graphql_api run

test: setup
	$(PY) -m pytest -q

# A long fuzz run against the real server; FUZZ_EXAMPLES=N sets its length. Prints cases run and failures by kind.
fuzz: setup
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} $(PY) -m pytest -q -s -p no:cacheprovider tests/test_fuzz.py

schema: setup
	$(PY) -m strawberry export-schema graphql_api.schema:schema --output schema.graphql

bench: bench-queries bench-reruns bench-costs

# Ours and PostGraphile side by side when node and npm are on PATH (bench.queries installs the peer when missing).
bench-queries: setup
	$(PY) -m bench.queries

# PostGraphile into bench/peer/node_modules, exact versions from its package-lock.json; then make test runs
# tests/test_bench_peer.py instead of skipping it.
bench-peer-setup: bench/peer/node_modules/.package-lock.json

bench/peer/node_modules/.package-lock.json: bench/peer/package-lock.json
	cd bench/peer && npm ci --no-audit --no-fund --loglevel=error

bench-reruns: setup
	$(PY) -m bench.reruns

# What a field-only (onlyChanged) rerun and a BATCH rerun cost against a full interactive one, on the same calls.
bench-costs: setup
	$(PY) -m bench.costs

# Peak RSS of a server process exporting 1,000 and 50,000 results (CSV, JSON lines, a slow client): flat, not growing.
bench-export: setup
	$(PY) -m bench.export

# A rerun with and without an endpoint taking analysis.completed (items/s, how soon the events arrive), then the
# delivery loop draining 10,000 events alone; BENCH_EVENTS_ARGS passes options (--analyzer gemini, --format RETELL ...).
bench-events: setup
	$(PY) -m bench.events $(BENCH_EVENTS_ARGS)

# Mixed well-behaved load, alone then beside an abusive stream (issue 8); LOAD_SECONDS, LOAD_CLIENTS ... in bench/load.py.
load: setup
	$(PY) -m bench.load

# Screenshots of the studio (docs/studio-*.png), taken by its browser tests against the demo data; needs chromium.
studio-screenshots: setup
	STUDIO_SCREENSHOTS=docs $(PY) -m pytest -q -p no:cacheprovider tests/test_studio.py

clean:
	rm -rf $(VENV) .pytest_cache
