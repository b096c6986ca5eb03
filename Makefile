# The study's two commands:  make reproduce  (the main job, offline default)  ·  make test
# Both build their own environment (.venv, from environment.yml's pip section) on a fresh machine.

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PROFILE ?= full
PARAMS  ?= $(sort $(wildcard params/*.yaml))
STAMP   := $(VENV)/.installed-$(shell cksum < environment.yml | cut -d' ' -f1)

# data root (alma/, wmt24/, tatoeba/): override with STUDYLIB_DATA=/path
export STUDYLIB_DATA ?= $(abspath ../shared/data)

.PHONY: env reproduce test unit nbval summary lab clean-env
.DEFAULT_GOAL := help

help:
	@echo "make reproduce [PROFILE=full|smoke]   run every params/*.yaml through its notebook, then the summary"
	@echo "make test                             unit tests + nbval over every notebook (CPU smoke profile)"
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

reproduce: env
	$(PY) -m studylib.pipeline --profile $(PROFILE) $(if $(filter smoke,$(PROFILE)),--results build/smoke-results) $(PARAMS)

test: unit nbval

unit: env
	STUDYLIB_RESULTS=$(CURDIR)/build/test-results $(PY) -m pytest -q tests

nbval: env
	rm -rf build/nbval-results
	STUDYLIB_RESULTS=$(CURDIR)/build/nbval-results $(PY) -m pytest -q --nbval-lax -p no:cacheprovider notebooks

summary: env
	$(PY) -c "from studylib import records; print(records.write_summary(profile='full'))"

lab: env
	$(VENV)/bin/jupyter lab notebooks

clean-env:
	rm -rf $(VENV)
