#!/usr/bin/env bash
# vllm-wheels.sh [OUTDIR]  (run here, where pip reaches PyPI)
#
# Builds the vLLM 0.26.0 closure that the GPU image lacks and splits it into pieces that travel beside the tree:
#   1. resolve vllm==0.26.0 for cp312 / manylinux x86_64 (metadata only: `pip install --dry-run --report`);
#   2. drop what the image has (its torch 2.11.0+cu130, transformers 5.17.0, numba, ... : the KINDS.md list below)
#      and 8 packages vLLM imports only for features the study does not use (video, CUTLASS-DSL cu12, tilelang...);
#   3. download the rest (103 wheels, ~482 MB) into OUTDIR/whl, check one wheel per package;
#   4. tar them and split the tar into OUTDIR/pieces/vN/vllm.tar.partNN, each piece + the tracked tree <= 63 MiB.
# vLLM pins compressed-tensors 0.17.0 and llm-compressor 0.14 pins 0.19.0: install this closure into its own target
# (/tmp/vllm-site) and start vLLM processes with PYTHONPATH=/tmp/vllm-site first. On the device:
#   session.sh vllm-piece .carry/vN      (one call per piece, back to back; the last one assembles and installs)
# OUTDIR defaults to .carry/vllm. Env: PIECE_MIB overrides the piece size.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(realpath -m "${1:-.carry/vllm}")
VLLM=vllm==0.26.0
IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
 charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
 cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
 formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
 imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
 lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
 matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
 networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
 nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
 opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
 pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
 pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
 python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
 scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
 statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
 tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
 triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"
# left out: vLLM imported and ran fp16 and FP8 on the H200 without them (video decoding, CUTLASS-DSL for CUDA 12,
# other attention DSLs, a solver, CUDA compilers the image has)
LEAVE_OUT="pynvvideocodec nvidia-cutlass-dsl-libs-cu12 tokenspeed-triton tilelang z3-solver nvidia-nvvm nvidia-cuda-nvcc
 torchcodec"
PL=(); for i in $(seq 5 39); do PL+=(--platform "manylinux_2_${i}_x86_64"); done
T=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none "${PL[@]}"
   --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform any)
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
echo "resolving $VLLM (metadata only) ..."
python3 -m pip install -q --dry-run --ignore-installed --report "$W/r.json" "${T[@]}" --target "$W/t" "$VLLM" 2>&1 \
  | grep -v 'is ignored' || true
python3 - "$W/r.json" "$IMAGE $LEAVE_OUT" > "$W/reqs.txt" <<'PY'
import json, re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
skip = set(sys.argv[2].split())
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = norm(item["metadata"]["name"]), item["metadata"]["version"]
    if name not in skip:
        print(f"{name}=={version}")
PY
echo "$(wc -l < "$W/reqs.txt") packages beyond the image; downloading ..."
rm -rf "$OUT" && mkdir -p "$OUT/whl"
python3 -m pip download -q --no-deps "${T[@]}" -d "$OUT/whl" -r "$W/reqs.txt" 2>&1 | grep -v 'is ignored' || true
n=$(ls "$OUT"/whl/*.whl | wc -l); want=$(wc -l < "$W/reqs.txt")
[ "$n" = "$want" ] || { echo "downloaded $n wheels, expected $want" >&2; exit 1; }
dups=$(ls "$OUT"/whl | sed 's/-[0-9].*//' | tr 'A-Z_' 'a-z-' | sort | uniq -d)
[ -z "$dups" ] || { echo "two wheels of: $dups" >&2; exit 1; }
cp "$W/reqs.txt" "$OUT/requirements.txt"
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
piece=${PIECE_MIB:-$(( (63 * 1048576 - tree) / 1048576 - 1 ))}
(cd "$OUT" && tar -cf "$W/vllm.tar" whl requirements.txt)
(cd "$W" && split -b "${piece}M" -d -a 2 vllm.tar vllm.tar.part)
parts=$(ls "$W"/vllm.tar.part* | wc -l); sha=$(sha256sum "$W/vllm.tar" | cut -d' ' -f1)
rm -rf "$OUT/pieces"; i=0
for p in $(ls "$W"/vllm.tar.part* | sort); do
  i=$((i + 1)); mkdir -p "$OUT/pieces/v$i" && mv "$p" "$OUT/pieces/v$i/"
  echo "$parts" > "$OUT/pieces/v$i/parts"; echo "$sha" > "$OUT/pieces/v$i/sha256"
done
du -sb "$OUT/whl" | awk -v n="$n" '{printf "%d wheels, %.0f MB\n", n, $1/1e6}'
echo "$parts pieces of <= $piece MiB (tree $(( tree / 1048576 )) MiB) in $OUT/pieces/v1..v$parts"
