# Set-up installs torch from the CPU wheel pinned below first, so nothing pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/alignctl train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python scripts/bench_kernels.py --load both --rounds 3
	$(BIN)/python scripts/bench_dpo_step.py
	$(BIN)/python scripts/bench_demo.py
	$(BIN)/python scripts/bench_sweep.py train.max_steps=200
	$(BIN)/python scripts/bench_distributed.py

clean:
	rm -rf $(VENV) runs multirun outputs
