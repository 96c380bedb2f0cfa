# Two commands do all of the set-up on a fresh machine (Python 3.11):
#   make demo   - create .venv, install mtmoe, run a small real job on the CPU
#   make test   - create .venv, install mtmoe with test extras and Sample Factory, run the tests
# torch is installed first and pinned: an unpinned torch may pull a multi-GB CUDA build.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: install install-sf demo test bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,ray,video,wandb,parquet]"
	touch $@

install: $(VENV)/.installed

# Sample Factory 2.1.1 for `mtmoe run --backend sample-factory`: its metadata pins gymnasium<1.0,
# so it goes in without dependency resolution, its runtime dependencies pinned in the file.
$(VENV)/.installed-sf: $(VENV)/.installed requirements/sample-factory.txt
	$(BIN)/pip install -q --no-deps -r requirements/sample-factory.txt
	touch $@

install-sf: $(VENV)/.installed-sf

demo: install
	$(BIN)/mtmoe run --suite minatar-single --steps 100000 --out runs

# MTMOE_REQUIRE_SF: the Sample Factory tests fail instead of skipping when it is missing
test: install install-sf
	MTMOE_REQUIRE_SF=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info
