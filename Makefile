# cutlight: every target bootstraps .venv on first use.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.cutlight-installed
TORCH   ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup train ablate test test-fast lint bench fid-weights notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e '.[dev,sweep,export]'
	@touch $(STAMP)

# ARGS: extra Hydra overrides, e.g. make train ARGS="seed=1"
train: $(STAMP) fid-weights
	$(BIN)/python -m cutlight.cli.train experiment=builtin_cpu $(ARGS)

# The paper's ablations on the make-train recipe (conf/experiment/ablation_cpu.yaml): 7 rows x 3 seeds of 1500
# iterations, two runs at a time (about 50 min on 2 CPU cores), then the sweep report (means, 95% intervals, paired
# differences to CUT, verdicts against the paper). ABLATE_DIR: where the sweep goes.
ifndef ABLATE_DIR
ABLATE_DIR := multirun/ablation_$(shell date +%Y-%m-%d_%H-%M-%S)
endif
ABLATIONS  ?= cut,no_idt,last_layer,external_negatives,patches_16,patches_64,fastcut
SEEDS      ?= 0,1,2
ablate: $(STAMP) fid-weights
	$(BIN)/python -m cutlight.cli.train -m experiment=ablation_cpu ablation=$(ABLATIONS) seed=$(SEEDS) \
		hydra/launcher=parallel hydra.sweep.dir=$(ABLATE_DIR) \
		|| echo "some ablation runs failed: the report lists them"
	$(BIN)/python -m cutlight.cli.report $(ABLATE_DIR)

# two pytest-xdist workers (TEST_WORKERS), one test file each at a time, the cores shared between them
TEST_WORKERS ?= 2
test: $(STAMP) fid-weights
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not network"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks notebooks
	$(BIN)/lint-imports  # the package's layers: [tool.importlinter] in pyproject.toml

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py --quick

fid-weights: $(STAMP)
	$(BIN)/python -m cutlight.metrics.inception_weights

# Executes notebooks/NN_*.ipynb in order and saves them with their outputs (full mode: 01 trains make train's
# run, 02 a small ablation sweep, 03 analyses 01's checkpoint; 13 min on a busy 2-core machine, one thread). The
# notebooks extra comes with dev (setup). NB_QUICK=1: tiny settings, 40 s, copies in notebooks/runs/quick.
# CUTLIGHT_ABLATE_DIR=<a make ablate folder>: 02 reports that sweep; CUTLIGHT_CKPT=<ckpt>: 03 analyses that one.
notebooks: $(STAMP) fid-weights
	$(BIN)/python notebooks/run.py $(if $(NB_QUICK),--quick)

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache
