# hwc-gateway: run / test / demo. Everything runs from a virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.toml
STAMP := $(VENV)/.installed

.PHONY: run test lint demo check-gpg clean

check-gpg:
	@command -v gpg >/dev/null 2>&1 || { echo "gpg not found: install GnuPG 2.2 or newer (Debian/Ubuntu: apt-get install gnupg)"; exit 1; }

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: check-gpg $(STAMP)
	@$(BIN)/hwc-gateway --config $(CONFIG) keys init --if-missing
	$(BIN)/hwc-gateway --config $(CONFIG) serve

test: check-gpg $(STAMP) lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check gateway tests
	$(BIN)/mypy

demo: check-gpg $(STAMP)
	$(BIN)/hwc-gateway demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
