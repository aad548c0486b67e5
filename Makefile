# make run: serve the API with demo data.  make test: the whole suite against a real PostgreSQL.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test fuzz schema bench bench-queries bench-reruns load clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install_graphiql_assets.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed; set PYTHON=python3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	PYTHON=$(PY) bash scripts/install_graphiql_assets.sh
	touch $(STAMP)

run: setup
	$(PY) -m graphql_api run

test: setup
	$(PY) -m pytest -q

# A long fuzz run against the real server; FUZZ_EXAMPLES=N sets its length. Prints cases run and failures by kind.
fuzz: setup
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-5000} $(PY) -m pytest -q -s -p no:cacheprovider tests/test_fuzz.py

schema: setup
	$(PY) -m strawberry export-schema graphql_api.schema:schema --output schema.graphql

bench: bench-queries bench-reruns

bench-queries: setup
	$(PY) -m bench.queries

bench-reruns: setup
	$(PY) -m bench.reruns

# Mixed well-behaved load, alone then beside an abusive stream (issue 8); LOAD_SECONDS, LOAD_CLIENTS ... in bench/load.py.
load: setup
	$(PY) -m bench.load

clean:
	rm -rf $(VENV) .pytest_cache
