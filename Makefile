# Two commands for users: `make run` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WEB    := web
WEB_STAMP := $(WEB)/node_modules/.installed

.PHONY: run test lint setup clean

setup: $(STAMP) $(WEB_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The job page's player libraries (shaka-player, hls.js, dash.js) from npm, exactly as the lock
# file pins them, into the git-ignored web/node_modules that the API serves (app/api/routers/pages.py).
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for the job page's player libraries (Debian: apt-get install npm)"; exit 1; }
	cd $(WEB) && npm ci --no-audit --no-fund
	@touch $(WEB_STAMP)

run: setup
	$(BIN)/cosmos dev

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -ra

clean:
	rm -rf $(VENV) $(WEB)/node_modules .cosmos .pytest_cache .mypy_cache .ruff_cache
