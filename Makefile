# The two commands a new user needs: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The install builds the C walk (setup.py, indexer/_walk.c): a change to either installs again.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml setup.py indexer/_walk.c | cksum | cut -d' ' -f1)

# The integration suites that reach the cluster only through the product's store: they run
# a second time against OpenSearch.
BACKEND_SUITES := tests/test_handler.py tests/test_handler_metrics.py tests/test_conflicts.py tests/test_malformed.py \
	tests/test_ordering_property.py tests/test_replay.py tests/test_replay_process.py \
	tests/test_redrive.py tests/test_localsync.py

.PHONY: install test test-opensearch test-fast demo bench es-start es-stop es-fetch clean

$(STAMP): pyproject.toml setup.py indexer/_walk.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Whole suite against a real Elasticsearch and the backend suites against a real OpenSearch,
## side by side (both fetched with Maven and started by the tests; see scripts/run_tests.sh).
test: install es-fetch
	bash scripts/run_tests.sh $(BIN)/python $(BACKEND_SUITES)

test-opensearch: install es-fetch
	SEARCH_BACKEND=opensearch PROPERTY_EXAMPLES=20 $(BIN)/python -m pytest -m es $(BACKEND_SUITES)

## Unit tests only: no Elasticsearch, no npm, a few seconds.
test-fast: install
	$(BIN)/python -m pytest -m "not es" --deselect tests/test_es_local.py --deselect tests/test_infra.py

## Stream events flowing into a local Elasticsearch, end to end.
demo: install es-fetch
	$(BIN)/python scripts/demo.py

## Benchmarks (not part of the tests): figures and ratios, medians of several runs.
bench: install es-fetch
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run_all.py

es-fetch:
	$(PYTHON) scripts/es_local.py fetch
	$(PYTHON) scripts/es_local.py fetch --distribution opensearch

es-start:
	@$(PYTHON) scripts/es_local.py start --name dev

es-stop:
	$(PYTHON) scripts/es_local.py stop --name dev

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
