# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test system-deps bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

# The main job: an example workflow, offline (Prefect locally, SQLite, fast-agent's passthrough model).
run: setup
	$(VENV)/bin/orchestra run deployments/workflows/code-review.yaml

# Debian packages the suite needs (PostgreSQL, Chromium, bubblewrap), when we may install them.
system-deps:
	@$(PY) tests/support/system_deps.py

# The suite waits on servers and child processes as much as it computes: two pytest-xdist
# workers keep both cores busy (TEST_WORKERS=0 runs it in one process).
TEST_WORKERS ?= 2

test: setup system-deps
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
