# Set-up and everyday targets. Every target creates the virtual environment it needs, except
# gpu-check, which runs where nothing can be installed (a GPU machine without network).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench results lint format clean gpu-check gpu-photos

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m aprrd_cli.demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The results study (docs/results.md): train on the noisy photos of sidd7 and cc15 only, compare
# with blind CBM3D, a plain blind-spot baseline and the official student. The budget is a
# parameter: make results RESULTS_ARGS="--iters 20000 --batch-size 8 --patch-size 256 --device cuda"
RESULTS_ARGS ?= --set all --iters 80 --batch-size 1 --patch-size 128 --lr 1e-3 --val-every 20 --threads 2
results: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[results]'
	$(BIN)/python -m experiments.study --out runs/study $(RESULTS_ARGS)

# The GPU check (benchmarks/gpu_check): proves and measures the GPU paths in one command, with the
# machine's own Python and PyTorch (PYTHONPATH=., no pip install). `make gpu-photos` first, here,
# copies the real photos and the official student it uses into .gpu-carry/ (git-ignored: carry it).
GPU_OUT ?= gpu-check-out
gpu-check:
	PYTHONPATH=. $(PY) -m benchmarks.gpu_check --out $(GPU_OUT)

SHARED ?= ../shared
gpu-photos:
	mkdir -p .gpu-carry/real
	cp -r $(SHARED)/data/real/cc15 $(SHARED)/data/real/sidd7 .gpu-carry/real/
	cp $(SHARED)/reference/nbsn_1.00M_sidd_medium.pth .gpu-carry/
	chmod -R u+w .gpu-carry
	du -sh .gpu-carry

CODE := aprrd_cli tests benchmarks experiments hubconf.py

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

format: $(STAMP)
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
