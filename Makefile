# The README's two commands are `make demo` and `make test`; everything they need is
# installed by `make install` into .venv from PyPI (and Debian's postgresql for tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 5000
COVERAGE := --cov=members --cov=journeys --cov=experiments --cov-branch \
	--cov-report=term-missing:skip-covered --cov-fail-under=90

.PHONY: install demo test test-fast bench lint format lock postgres-binaries clean

install: $(STAMP)

# Re-runs only when the dependency files change, so a second `make install` is instant.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Tenure needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> Installing the pinned dependencies into $(VENV) (a minute or two the first time)"
	$(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/python scripts/demo.py --port $(PORT) $(if $(filter 1 yes true,$(FRESH)),--fresh)

# The suite runs every database test twice: on SQLite and on a PostgreSQL server
# that the test session starts itself (tests/services.py), with an embedded Redis;
# branch coverage of the domain packages must stay above the floor.
test: install postgres-binaries
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(COVERAGE) $(PYTEST_ARGS)

test-fast: install
	TENURE_TEST_DATABASES=sqlite $(BIN)/python -m pytest -n 2 --dist loadgroup -m 'not slow' $(PYTEST_ARGS)

postgres-binaries:
	@bash scripts/ensure-postgres.sh

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Refresh constraints.txt after changing a pin in pyproject.toml.
lock:
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	{ echo '# Every package of the resolved environment, pinned: `make lock` rewrites this file.'; \
	  $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
