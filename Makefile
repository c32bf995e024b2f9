# The two commands a new user needs: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test test-fast demo es-start es-stop es-fetch clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Whole suite against a real Elasticsearch (fetched with Maven and started by the tests).
test: install es-fetch
	$(BIN)/python -m pytest

## Unit tests only: no Elasticsearch, a few seconds.
test-fast: install
	$(BIN)/python -m pytest -m "not es" --deselect tests/test_es_local.py

## Stream events flowing into a local Elasticsearch, end to end.
demo: install es-fetch
	$(BIN)/python scripts/demo.py

es-fetch:
	$(PYTHON) scripts/es_local.py fetch

es-start:
	@$(PYTHON) scripts/es_local.py start --name dev

es-stop:
	$(PYTHON) scripts/es_local.py stop --name dev

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
