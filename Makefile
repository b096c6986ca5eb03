# The study's two commands:  make reproduce  (the main job, offline default)  ·  make test
# Both build their own environment (.venv, from environment.yml's pip section) on a fresh machine.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= full
JOBS    ?= 1
GPUS    ?=
PARAMS  ?= $(sort $(wildcard params/*.yaml))
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
REPORT    = --results $(RESULTS_DIR) --profile $(PROFILE) --reference $(REFERENCE)

.PHONY: env reproduce reproduce-smoke reproduce-smoke-ci pipeline test unit nbval summary significance tables figures paper lab clean-env
.DEFAULT_GOAL := help

help:
	@echo "make reproduce [PROFILE=full|smoke]   every params/*.yaml not yet recorded, then summary -> significance -> tables -> figures -> paper"
	@echo "make paper [PROFILE=...]              summary -> significance -> tables -> figures -> paper from the records there are"
	@echo "make figures [PROFILE=...]            summary -> significance -> tables -> figures"
	@echo "make test                             unit tests + nbval over every notebook (CPU smoke profile)"
	@echo "make reproduce-smoke                  make reproduce PROFILE=smoke (every params file; CI runs it after make test)"
	@echo "make lab                              JupyterLab in the study's environment"

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

# the whole chain; resumable: runs whose record exists with the same params are skipped
reproduce: pipeline
	$(MAKE) --no-print-directory paper PROFILE=$(PROFILE)

pipeline: env
	$(PY) -m studylib.pipeline --profile $(PROFILE) --jobs $(JOBS) $(if $(GPUS),--gpus $(GPUS)) --results $(RESULTS_DIR) $(PARAMS)

reproduce-smoke:
	$(MAKE) --no-print-directory reproduce PROFILE=smoke

# CI speed: the whole chain (pipeline -> ... -> paper) in the smoke profile on a few params files: the base, the
# reference teacher and one compressed run. `make reproduce PROFILE=smoke` then finds these done and runs the rest.
SMOKE_CI_PARAMS ?= params/00_baseline_gemma3-270m-3shot.yaml params/01_teacher_gemma3-270m-lora.yaml \
                   $(firstword $(sort $(wildcard params/12_gptq_*.yaml)))
reproduce-smoke-ci:
	$(MAKE) --no-print-directory reproduce PROFILE=smoke PARAMS="$(SMOKE_CI_PARAMS)"

test: unit nbval

unit: env
	STUDYLIB_RESULTS=$(CURDIR)/build/test-results $(PY) -m pytest -q tests

nbval: env
	rm -rf build/nbval-results
	STUDYLIB_RESULTS=$(CURDIR)/build/nbval-results $(PY) -m pytest -q --nbval-lax -p no:cacheprovider notebooks

summary: env
	mkdir -p $(RESULTS_DIR)
	$(PY) -c "from studylib import records; print(records.write_summary('$(RESULTS_DIR)', '$(PROFILE)'))"

significance: summary
	$(PY) -m studylib.report.significance $(REPORT)

tables: significance
	$(PY) -m studylib.report.tables $(REPORT)

figures: tables
	$(PY) -m studylib.report.figures $(REPORT) --out $(FIGURES_DIR)

paper: figures
	$(PY) -m studylib.report.paper $(REPORT) --figures $(FIGURES_DIR) --out $(PAPER_DIR)

lab: env
	$(VENV)/bin/jupyter lab notebooks

clean-env:
	rm -rf $(VENV)
