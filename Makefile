# Two commands do all of the set-up on a fresh machine (Python 3.11):
#   make demo   - create .venv, install mtmoe, run a small real job on the CPU
#   make test   - create .venv, install mtmoe with test extras, run the tests
# torch is installed first and pinned: an unpinned torch may pull a multi-GB CUDA build.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,ray]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/mtmoe run --suite minatar-single --steps 100000 --out runs

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info
