#!/usr/bin/env bash
# Here: copy the part of the study's data that the GPU runs read into .carry/data (ignored; carried with a call).
# ALMA's human-written data: train text, valid and test JSON, HW-5-shot (≈ 20 MiB; not the duplicate train JSON),
# and the Tatoeba out-of-domain pool (≈ 5 MiB; the distillation notebooks 31-33 read it).
# With --small: .carry/data-small, the same but only the first 400 train lines per pair (≈ 7 MiB), for GPU checks
# that must travel with both wheel bundles.
set -euo pipefail
SMALL=0; [ "${1:-}" = "--small" ] && SMALL=1
cd "$(dirname "$0")/../.."
SRC=${STUDYLIB_DATA:-../shared/data}
TOP=.carry/data; [ $SMALL = 1 ] && TOP=.carry/data-small
DST=$TOP/alma/human_written_data
rm -rf "$TOP" && mkdir -p "$DST"
(cd "$SRC/alma/human_written_data" && find . \( -name 'train.*-en.??' -o -name 'valid.*.json' -o -name 'test.*.json' -o -path './HW-5-shot/*' \) -type f) |
  while read -r f; do
    mkdir -p "$DST/$(dirname "$f")"
    case "$SMALL:$f" in 1:*/train.*) head -n 400 "$SRC/alma/human_written_data/$f" > "$DST/$f" ;; *) cp "$SRC/alma/human_written_data/$f" "$DST/$f" ;; esac
  done
[ $SMALL = 1 ] || cp -r "$SRC/tatoeba" "$TOP/tatoeba"
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >> .git/info/exclude
du -sh "$TOP"
