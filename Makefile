# The two commands a newcomer types: `make reproduce-table2` and `make test`.
# Both depend on `setup`, which builds the environment once and is a no-op when current.

SHELL := /bin/bash
PYTHON_VERSION ?= 3.11
# CPU torch where there is no GPU. On machines where torch==2.13.0 resolves to a local CPU
# wheel nothing needs setting; elsewhere set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# for CPU.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
SCALE ?= default
DATA_DIR ?=
WORKERS ?=

CONDA := $(shell command -v conda 2>/dev/null)
ifeq ($(CONDA),)
  ENV_DIR := .venv
  PY := $(ENV_DIR)/bin/python
else
  ENV_DIR := .conda-env
  PY := $(ENV_DIR)/bin/python
endif
STAMP := $(ENV_DIR)/.msd-setup-stamp
MSD := $(ENV_DIR)/bin/msd
DATA_ENV := $(if $(DATA_DIR),MSD_DATA_DIR=$(DATA_DIR),)

.PHONY: setup test test-all lint reproduce-table2 clean-env help

help:
	@echo "make test                 set up the environment (once) and run the test suite"
	@echo "make reproduce-table2     set up, generate data, train the grid, build tables/figures/report"
	@echo "make reproduce-saliency   / reproduce-ablations: the saliency and ablation grids, then analysis"
	@echo "make reproduce-efficiency the efficiency grid (3 families x 3 sizes x 3 methods), its tables, Pareto figure, report"
	@echo "make remeasure-efficiency re-measure the efficiency runs' latency on a quiet machine (interleaved), tables, report"
	@echo "make reproduce-robustness robustness curves of the Table 2 runs (missing/noisy modalities), table, figure, report"
	@echo "make tables | figures | report   rebuild outputs from the existing run store"
	@echo "make lint                 ruff check"

setup: $(STAMP)

$(STAMP): pyproject.toml environment.yml
ifeq ($(CONDA),)
	@test -x $(PY) || python3 -m venv $(ENV_DIR)
	$(PY) -m pip install --quiet --upgrade pip
else
	@test -x $(PY) || conda env create --prefix $(ENV_DIR) --file environment.yml --quiet
endif
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -q -m "not slow and not mmf"

test-all: setup
	$(PY) -m pytest -q -m "" 

lint: setup
	$(PY) -m ruff check benchmark analysis tests bench

clean-env:
	rm -rf .venv .conda-env

# --- Reproduction: data -> grids -> tables, figures, report (analysis/, docs/analysis.md) ---
# SCALE=default writes under results/ (committed outputs; runs stay ignored); any other scale
# (SCALE=smoke) under results/<scale>/ so a quick check never overwrites the real tables.
# RESULTS=/path moves everything (runs, cache, tables, figures, report) elsewhere.
RESULTS ?= $(if $(filter default,$(SCALE)),results,results/$(SCALE))
RUN_ENV := MSD_SAVE_DIR=$(RESULTS)/runs MSD_CACHE_DIR=$(RESULTS)/cache WANDB_DIR=$(RESULTS) $(DATA_ENV)
GRID_RUN = $(RUN_ENV) $(MSD) grid run --scale $(SCALE) $(if $(WORKERS),--workers $(WORKERS),)
ANALYZE = $(RUN_ENV) $(MSD) analyze
ANALYZE_ARGS = --out $(RESULTS) --scale $(SCALE)
MSD_DATASETS := hateful_memes mmimdb visual_entailment vqa2 easy_vqa

.PHONY: data reproduce-table2 reproduce-saliency reproduce-ablations reproduce-efficiency remeasure-efficiency reproduce-robustness tables figures report

# The embedded default data, once (a no-op when up to date). Real MMF data (DATA_DIR=...) is
# never generated over; the grids generate only what is missing there (easy_vqa) and the
# small datasets of a non-default scale.
data: setup
ifeq ($(DATA_DIR)$(filter-out default,$(SCALE)),)
	@for d in $(MSD_DATASETS); do $(MSD) data make --dataset $$d > /dev/null || exit 1; echo "data $$d: ready"; done
else
	@echo "data: $(if $(DATA_DIR),using the MMF data under $(DATA_DIR),the $(SCALE) grids generate their own small datasets)"
endif

# No `data` prerequisite: each grid makes (or checks) its own data first, in its runner, while
# the fork server loads torch; `make data` would start five more interpreters to do it again.
reproduce-table2: setup
	$(GRID_RUN) experiments/table2.yaml
	$(GRID_RUN) experiments/easy_vqa.yaml
	$(ANALYZE) all $(ANALYZE_ARGS)

reproduce-saliency: data
	$(GRID_RUN) experiments/saliency.yaml
	$(ANALYZE) all $(ANALYZE_ARGS)

reproduce-ablations: data
	$(GRID_RUN) experiments/ablations.yaml
	$(ANALYZE) all $(ANALYZE_ARGS)

# What a student costs (docs/efficiency.md): efficiency and distillation-cost tables, Pareto
# figure, then the report page (which shows whatever tables and figures exist).
reproduce-efficiency: data
	$(GRID_RUN) experiments/efficiency.yaml
	$(ANALYZE) efficiency $(ANALYZE_ARGS)
	$(ANALYZE) report $(ANALYZE_ARGS)

# The efficiency runs' latency and memory measured again on a quiet machine, the runs
# interleaved (docs/efficiency.md, "Re-measuring on a quiet machine"); trains nothing. Runs
# already re-measured are skipped: REMEASURE_ARGS=--force measures them all again. 30 rounds
# (~5 min for the 60 runs on 2 cores) put runs of one architecture within 5 % of each other;
# the command's own default of 7 left them up to 20 % apart.
REMEASURE_ROUNDS ?= 30
remeasure-efficiency: data
	$(RUN_ENV) $(MSD) cost remeasure experiments/efficiency.yaml --scale $(SCALE) --rounds $(REMEASURE_ROUNDS) $(REMEASURE_ARGS)
	$(ANALYZE) efficiency $(ANALYZE_ARGS)
	$(ANALYZE) report $(ANALYZE_ARGS)

# Robustness at test time (docs/robustness.md): the Table 2 grids (trains only what is missing),
# each finished run scored under missing and noisy modalities (skips what is computed), then
# every table, figure and the report.
ROBUSTNESS = $(RUN_ENV) $(MSD) robustness --scale $(SCALE)
reproduce-robustness: data
	$(GRID_RUN) experiments/table2.yaml
	$(GRID_RUN) experiments/easy_vqa.yaml
	$(ROBUSTNESS) experiments/table2.yaml
	$(ROBUSTNESS) experiments/easy_vqa.yaml
	$(ANALYZE) all $(ANALYZE_ARGS)

tables: setup
	$(ANALYZE) tables $(ANALYZE_ARGS)

figures: setup
	$(ANALYZE) figures $(ANALYZE_ARGS)

# The report always rebuilds tables and figures first: a report of stale tables is a trap.
report: setup
	$(ANALYZE) all $(ANALYZE_ARGS)
