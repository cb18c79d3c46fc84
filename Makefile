# Set-up installs torch from the CPU wheel pinned below first, so nothing pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# test workers: tests run on one intra-op thread each (tests/conftest.py), so one worker per core
TEST_WORKERS ?= 2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench docs clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "alignctl: error: Python 3.11+ is needed (TRL 1.16 requires it); this is " + sys.version.split()[0] + ": run make PYTHON=python3.11 (or newer)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/alignctl train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal -m "not slow"

docs: $(STAMP)  # the option lists in README.md and docs/objectives.md, from the registries
	$(BIN)/python -m alignctl.cli.docs .

bench: $(STAMP)
	$(BIN)/python scripts/bench_kernels.py --load both --rounds 3
	$(BIN)/python scripts/bench_dpo_step.py
	$(BIN)/python scripts/bench_online_step.py
	$(BIN)/python scripts/bench_demo.py
	$(BIN)/python scripts/bench_sweep.py train.max_steps=200
	$(BIN)/python scripts/bench_distributed.py
	$(BIN)/python scripts/bench_eval.py

clean:
	rm -rf $(VENV) runs multirun outputs
