#!/usr/bin/env bash
# Here: prepare what a study session carries to the GPU machine, each folder small enough to travel beside the
# working tree (≤ 64 MiB per call, the tree itself ≈ 18 MiB since the LoRA teacher's adapter is committed):
#   .carry/kit      both wheel bundles (.whl: papermill & co, .whl-methods: gptqmodel, bitsandbytes, llm-compressor…)
#                   and the study's data as data.tar.xz (ALMA's human-written data, ≈ 5.4 MiB compressed)
#   .carry/g1..g6   the Gemma-3-270M Q4_K_M GGUF in six raw pieces of ≈ 40.2 MiB (checked by sha256 first)
# Needs .whl (notebook-wheels.sh), .whl-methods (../shared/device/build-gpu-wheels.sh), .carry/data (stage-data.sh)
# and .carry/c1..c4 (stage-model.sh). On the device: tools/device/session.sh.
#   --snap          only (re)write .carry/snap: `git archive HEAD` of studylib, notebooks, params, pyproject.toml,
#                   Snakefile, profiles, so
#                   the device runs the commit, not edits in progress
set -euo pipefail
cd "$(dirname "$0")/../.."
SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
gguf() {  # gguf FILE...: the pieces joined into $TMP/model.gguf, checked by sha256
  cat "$@" > "$TMP/model.gguf"
  echo "$SHA  $TMP/model.gguf" | sha256sum -c - >/dev/null || { echo "GGUF checksum mismatch" >&2; exit 1; }
}
fits() {  # fits DIR...: each folder beside the tracked tree within a call's 64 MiB (63, to keep a margin)
  local tree size d
  tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  for d in "$@"; do
    size=$(du -cb "$d" | tail -1 | cut -f1)
    awk -v t="$tree" -v s="$size" -v d="$d" 'BEGIN { printf "%s: %.1f MiB + tree %.1f MiB = %.1f MiB (limit 64)\n", d, s/1048576, t/1048576, (s+t)/1048576; if (s+t > 63*1048576) exit 1 }' || exit 1
  done
}
if [ "${1:-}" = "--split" ]; then  # --split N: the GGUF again as N pieces .carry/p1..pN, the kit's data with p1, for a
  n=${2:?number of pieces}         # tree grown too large for 6 pieces (the wheels then travel alone: session.sh kit DIR)
  gguf .carry/g1/* .carry/g2/* .carry/g3/* .carry/g4/* .carry/g5/* .carry/g6/*
  (cd "$TMP" && split -n "$n" -d -a 2 model.gguf gguf.part)
  rm -rf .carry/p[0-9]*
  for i in $(seq 1 "$n"); do
    mkdir -p .carry/p$i && mv "$TMP/gguf.part$(printf %02d $((i-1)))" .carry/p$i/ && echo "$n" > .carry/p$i/gguf.parts
  done
  cp .carry/kit/data.tar.xz .carry/p1/
  fits .carry/p*
  exit 0
fi
if [ "${1:-}" = "--snap" ]; then
  rm -rf .carry/snap && mkdir -p .carry/snap && git archive HEAD studylib notebooks params pyproject.toml Snakefile profiles | tar -x -C .carry/snap
  echo "snap of $(git rev-parse --short HEAD): $(du -sh .carry/snap | cut -f1)"; exit 0
fi
for need in .whl .whl-methods .carry/data .carry/c1 .carry/c4; do
  [ -e "$need" ] || { echo "missing $need: see tools/device/README.md" >&2; exit 1; }
done
rm -rf .carry/kit .carry/g[1-6] && mkdir -p .carry/kit/whl
cp .whl/*.whl .whl-methods/*.whl .carry/kit/whl/
tar -C .carry -cJf .carry/kit/data.tar.xz data
gguf .carry/c1/* .carry/c2/* .carry/c3/* .carry/c4/*
(cd "$TMP" && split -n 6 -d -a 1 model.gguf gguf.part)
for i in 1 2 3 4 5 6; do mkdir -p .carry/g$i && mv "$TMP/gguf.part$((i-1))" .carry/g$i/; done
fits .carry/kit .carry/g1
