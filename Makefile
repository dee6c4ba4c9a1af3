# Two commands set everything up on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip's `-c` pins every package to the versions the suite last passed with.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
# The browser tests drive Debian's chromium: Playwright cannot download its own browsers everywhere.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run serve test lock clean

run: $(VENV)/.installed-run  ## Run the whole flow on the built-in synthetic demo data
	$(BIN)/segments run

serve: $(VENV)/.installed-run  ## Local Prefect server, work pool, deployments and worker until Ctrl-C
	$(BIN)/segments serve

test: $(VENV)/.installed-test $(CHROMIUM)  ## Install what the tests need and run the whole suite
	$(BIN)/python -m pytest

# A file target: apt runs only on machines without the browser.
$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(VENV)/.installed-run

lock: $(VENV)/.installed-test  ## Refresh constraints.txt from the current environment
	$(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check > constraints.txt

clean:
	rm -rf $(VENV) artifacts .pytest_cache

# Phony: bench/ is also a folder, which would otherwise count as an up-to-date target.
.PHONY: bench
bench: $(VENV)/.installed-test  ## Time the project against DuckDB and pandas (--quick); BENCH_ARGS=--full for 50M lines
	$(BIN)/python -m bench $(BENCH_ARGS)
