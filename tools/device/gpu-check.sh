#!/usr/bin/env bash
# On the GPU machine, from the carried repo root: check the CUDA paths of the study on the tiny model.
# Carry .whl (notebook bundle), .whl-methods (shared/device/build-gpu-wheels.sh) and .carry/data-small
# (ALMA test/valid/few-shot files and the first 400 train lines per pair; tools/device/stage-data.sh --small).
#   bash tools/device/gpu-check.sh [PYTEST_ARGS...]
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl .whl-methods/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 STUDYLIB_DATA=$PWD/.carry/data-small \
  STUDYLIB_CACHE=/tmp/studylib-cache STUDYLIB_RESULTS=/tmp/gpu-results GPTQMODEL_CPU_WORKERS=4
mkdir -p "${OUT:-/tmp/out}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider -rs "$@" 2>&1 | tee "${OUT:-/tmp/out}/gpu-check.log" | tail -n 40
