# Two set-up commands for a fresh clone: `make demo` and `make test`.
# Both create .venv (if missing) and install subsetlm with pinned versions first.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.10 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.subsetlm-installed
# The CPU build of torch (this pin is what the lock file records; any torch>=2.3 works).
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-all test-slow bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; v=sys.version_info[:2]; sys.exit(0 if (3,10)<=v<=(3,12) else "subsetlm needs Python 3.10-3.12 (submodlib-py wheels); got %d.%d: set PYTHON=python3.11" % v)'
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt "$(TORCH)"
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
	@touch $(STAMP)

demo: install
	$(BIN)/subsetlm demo

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/embed.py
	$(BIN)/python benchmarks/selection.py

lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(subsetlm|-e )' | sed 's/^torch==\(.*\)+cpu/torch==\1/' > constraints.txt

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
