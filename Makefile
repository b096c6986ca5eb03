# The study's two commands:  make reproduce  (the main job, offline default)  ·  make test
# Both build their own environment (.venv, from environment.yml's pip section) on a fresh machine.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= full
PARAMS  ?=
DRY     ?=
ALLOW_CPU ?= 0
CORES   ?= all
STAMP   := $(VENV)/.installed-$(shell cksum < environment.yml | cut -d' ' -f1)

# data root (alma/, wmt24/, tatoeba/): override with STUDYLIB_DATA=/path
export STUDYLIB_DATA ?= $(abspath ../shared/data)

# where each profile's records, figures and paper go: the smoke profile never touches the committed ones
ifeq ($(PROFILE),smoke)
RESULTS_DIR = build/smoke-results
FIGURES_DIR = build/smoke-figures
PAPER_DIR   = build/smoke-paper
else
RESULTS_DIR = results
FIGURES_DIR = figures
PAPER_DIR   = paper/build
endif
# every run is tested against this one (<notebook>/<run>)
REFERENCE ?= 01_teacher/gemma3-270m-lora
WORKFLOW  = --cores $(CORES) --config profile=$(PROFILE) results=$(RESULTS_DIR) allow_cpu=$(ALLOW_CPU) $(if $(PARAMS),params="$(PARAMS)")

.PHONY: env reproduce workflow test unit nbval paper lab clean-env
.DEFAULT_GOAL := help

help:
	@echo "make reproduce [PROFILE=full|smoke]   the workflow (Snakemake: every params file's runs not yet recorded), then the paper"
	@echo "make reproduce DRY=1                  what would run, and why (nothing runs)"
	@echo "make reproduce ALLOW_CPU=1            also start GPU-scale runs on a machine without a GPU"
	@echo "make paper [PROFILE=...]              summary -> significance -> tables -> figures -> paper from the records there are"
	@echo "make test                             unit tests + nbval over every notebook (CPU smoke profile)"
	@echo "make lab                              JupyterLab on notebooks/ in the study's environment"

env: $(STAMP)

$(STAMP): environment.yml pyproject.toml tools/env_requirements.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PYTHON) tools/env_requirements.py environment.yml > $(VENV)/requirements.txt
	$(PY) -m pip install -q -r $(VENV)/requirements.txt
	$(PYTHON) tools/env_requirements.py environment.yml --no-deps > $(VENV)/requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -r $(VENV)/requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

# the workflow, then the paper from the records; a dry run lists what would run and why
reproduce: workflow
	$(if $(DRY),,$(MAKE) --no-print-directory paper PROFILE=$(PROFILE))

workflow: env
	$(VENV)/bin/snakemake $(if $(DRY),--dry-run --quiet rules) $(WORKFLOW)

test: unit nbval

unit: env
	STUDYLIB_RESULTS=$(CURDIR)/build/test-results $(PY) -m pytest -q tests

nbval: env
	rm -rf build/nbval-results
	STUDYLIB_RESULTS=$(CURDIR)/build/nbval-results $(PY) -m pytest -q --nbval-lax -p no:cacheprovider notebooks

paper: env
	$(PY) -m studylib.report --results $(RESULTS_DIR) --profile $(PROFILE) --reference $(REFERENCE) \
	    --figures $(FIGURES_DIR) --out $(PAPER_DIR)

# JupyterLab on notebooks/, the records and data where the workflow has them; as root it says so to Jupyter
lab: env
	STUDYLIB_RESULTS=$(CURDIR)/results $(VENV)/bin/jupyter lab notebooks --no-browser --ServerApp.ip=127.0.0.1 \
	    $(if $(filter 0,$(shell id -u)),--allow-root)

clean-env:
	rm -rf $(VENV)
