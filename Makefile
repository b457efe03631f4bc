# hwc-gateway: run / test / demo / fuzz / bench / attack. Everything runs from a virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.toml
STAMP := $(VENV)/.installed

.PHONY: run test lint demo fuzz bench attack mutate check-gpg clean

check-gpg:
	@command -v gpg >/dev/null 2>&1 || { echo "gpg not found: install GnuPG 2.2 or newer (Debian/Ubuntu: apt-get install gnupg)"; exit 1; }

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# axe-core, the accessibility rules the pickup page's browser tests run in the page (npm registry).
AXE := $(VENV)/axe/node_modules/axe-core/axe.min.js
$(AXE):
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: the browser tests need axe-core from the npm registry (Debian: apt-get install npm)"; exit 1; }
	npm install --silent --no-save --no-audit --no-fund --prefix $(VENV)/axe axe-core@4

run: check-gpg $(STAMP)
	@$(BIN)/hwc-gateway --config $(CONFIG) keys init --if-missing
	$(BIN)/hwc-gateway --config $(CONFIG) serve

test: check-gpg $(STAMP) $(AXE) lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check gateway tests fuzz bench attack mutate
	$(BIN)/mypy
	$(BIN)/mypy bench/*.py  # on its own: fuzz/run.py is a module named run too
	$(BIN)/mypy attack/*.py  # likewise (every module of the harness, not only those run.py imports)
	$(BIN)/mypy mutate/run.py  # likewise

demo: check-gpg $(STAMP)
	$(BIN)/hwc-gateway demo

# The properties of tests/property_checks.py (run by tests/test_properties_*.py) with many more
# examples (FUZZ_SECONDS of work).
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

# Throughput, latency and memory against the raw gpg work, in one run (bench/README.md).
bench: check-gpg $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The attack review: the real daemon of this checkout attacked over loopback (attack/README.md);
# the report goes to a temp directory unless ATTACK_ARGS="--out FILE". Not part of `make test`.
attack: check-gpg $(STAMP)
	$(BIN)/python attack/run.py $(ATTACK_ARGS)

# Mutation testing of the decision modules against their fast tests (mutate/modules.toml), one
# module after the other with one worker: see README "Mutation testing". Not part of `make test`.
MUTATE_WORKERS ?= 1
mutate: check-gpg $(STAMP)
	$(BIN)/python mutate/run.py --workers $(MUTATE_WORKERS) $(MUTATE_MODULES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutate/work
