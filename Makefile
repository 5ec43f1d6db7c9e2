# streamshop: `make run` starts everything, `make test` runs the suite. See README.md.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test chromium faults lint format schemas install lock lock-check upgrade java-example bench clean

# uv installs exactly what uv.lock pins (hashes included); uv itself comes pinned by hash
# from scripts/uv-requirements.txt into a bootstrap venv. No download of a Python: the
# machine's interpreter is used.
TOOLS  ?= .tools
UV     := $(TOOLS)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

$(UV): scripts/uv-requirements.txt
	@test -n "$(PYTHON)" || { echo "make: no Python 3.11+ found; install it (Debian/Ubuntu 12+: sudo apt-get install -y python3 python3-venv) or run with PYTHON=/path/to/python3.11"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make: streamshop needs Python 3.11+, $(PYTHON) is $$($(PYTHON) --version 2>&1); run with PYTHON=/path/to/python3.11"; exit 1; }
	@$(PYTHON) -m venv $(TOOLS) || { rm -rf $(TOOLS); echo "make: cannot create $(TOOLS); on Debian/Ubuntu: sudo apt-get install -y python3-venv"; exit 1; }
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r scripts/uv-requirements.txt
	@touch $(UV)

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $(STAMP)

$(BIN)/python: $(STAMP)

## lock-check: fail when pyproject.toml and uv.lock disagree (CI runs it before the tests)
lock-check: | $(UV)
	@$(UV) lock --check --python $(PYTHON) || { echo "make: uv.lock is stale against pyproject.toml; run 'make lock' and commit uv.lock"; exit 1; }

## lock: re-resolve uv.lock after a change to pyproject.toml (keeps every version it can)
lock: | $(UV)
	$(UV) lock --python $(PYTHON)

## upgrade: bump every locked version within pyproject.toml's ranges, install, run the suite
upgrade: | $(UV)
	$(UV) lock --upgrade --python $(PYTHON)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $(STAMP)
	$(MAKE) test

install: $(STAMP)

## run: the whole system (Redis, MongoDB-protocol server, API, workers) until Ctrl-C
run: $(STAMP)
	@$(BIN)/python scripts/run.py

## test: the whole suite against the machine's Redis and PostgreSQL; installs Debian's
## chromium for the browser tests when it is missing and this runs as root (else they skip)
test: lock-check $(STAMP) chromium
	@$(BIN)/python scripts/test_services.py
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

chromium:
	@command -v chromium >/dev/null 2>&1 || [ -n "$$CHROMIUM" ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }; } || echo "make test: chromium is not installed (sudo apt-get install chromium); the browser tests will skip"

## faults: the fault-injection suite (tests/faults): kill -9 each process under load, cut
## PostgreSQL, then check exactly-once in the log and every view; figures in .data/faults/
faults: $(STAMP)
	@$(BIN)/python scripts/test_services.py
	$(BIN)/python -m pytest -q -m faults tests/faults $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: $(STAMP)
	$(BIN)/streamshop schemas

java-example:
	bash examples/java-producer/run.sh

## bench: the benchmarks (several minutes; BENCH_QUICK=1 for a short smoke run); installs the
## bench dependency group (the peer, py-spy) and wrk from Debian's packages when root
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && { apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }; }; } || echo "make bench: wrk is not installed (sudo apt-get install wrk); the http figures use bench.loadgen"
	$(UV) sync --frozen --group bench --python $(PYTHON)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .data
