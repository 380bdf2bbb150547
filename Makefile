# The canonical commands. `make run` starts the whole service; `make test` runs every test.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Three on two cores: most tests wait on the real stack (processes starting, timeouts), not
# on the CPU, and a third process cut the suite from about 15 to 11.5 minutes. Tests are handed
# out one at a time to whichever process is free: xdist's default hands each process a quarter of
# its share at once, so one process could get both halves of the smoke benchmark and all of the
# API fuzzing, and run them one after another while the others idle at the end.
PYTEST_WORKERS ?= 3

.PHONY: install chromium run migrate test lint format clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet -e clients/python
	touch $(STAMP)

install: $(STAMP)

run: install
	scripts/ensure-services
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/boomerang up

migrate: install
	$(BIN)/boomerang migrate

# The portal's browser tests drive Debian's Chromium; Playwright never downloads a browser. As root
# it is installed when missing; otherwise those tests are skipped (and fail, as in .ci/run, under
# REQUIRE_BROWSER_TESTS=1).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Chromium for the browser tests"; \
	    apt-get install -y -qq chromium >/dev/null || \
	      { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
	  else \
	    echo "/usr/bin/chromium is missing: the browser tests will be skipped"; \
	  fi; }

# The multi-host tests run on their own after the rest: their hosts share the machine's cores,
# and their takeover times are measured, not only checked. (Exit 5: PYTEST_ARGS named no fleet
# test.)
test: install chromium
	scripts/ensure-services
	$(BIN)/pytest -n $(PYTEST_WORKERS) --maxschedchunk 1 -m "not fleet" $(PYTEST_ARGS)
	$(BIN)/pytest -n 0 -m fleet $(or $(PYTEST_ARGS),tests/fleet) || [ $$? = 5 ]

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app workers config

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
