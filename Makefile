# The two commands a newcomer types: `make reproduce-table2` and `make test`.
# Both depend on `setup`, which builds the environment once and is a no-op when current.

SHELL := /bin/bash
PYTHON_VERSION ?= 3.11
# CPU torch where there is no GPU. On this project's machines torch==2.13.0 resolves to a
# local CPU wheel; elsewhere set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for CPU.
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
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m "" 

lint: setup
	$(PY) -m ruff check benchmark tests

clean-env:
	rm -rf .venv .conda-env
