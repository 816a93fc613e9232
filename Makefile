PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: venv demo test lint format bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,hf,lightning]'
	touch $(STAMP)

demo: venv
	$(BIN)/flatscape reproduce --preset quick --out-dir runs/demo --threads 1

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The bench extra pulls PyPI's CUDA torchvision, which cannot be imported beside the CPU
# torch and breaks transformers' import: the peers get a venv of their own.
$(BENCH_STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BENCH_BIN)/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/python -m pip install --quiet --upgrade pip
	$(BENCH_BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_BIN)/python bench/curvature.py
	$(BENCH_BIN)/python bench/tolerance.py
	$(BENCH_BIN)/python bench/memory.py
	$(BENCH_BIN)/python bench/surface.py
	$(BENCH_BIN)/python bench/distributed.py
	$(BENCH_BIN)/python bench/startup.py
	$(BENCH_BIN)/python bench/tracking.py
	$(BENCH_BIN)/python bench/warm_starts.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) runs build *.egg-info
