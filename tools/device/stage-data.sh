#!/usr/bin/env bash
# Here: copy the part of the study's data that the GPU runs read into .carry/data (ignored; carried with a call).
# ALMA's human-written data: train text, valid and test JSON, HW-5-shot (≈ 20 MiB; not the duplicate train JSON).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${STUDYLIB_DATA:-../shared/data}
DST=.carry/data/alma/human_written_data
rm -rf .carry/data && mkdir -p "$DST"
(cd "$SRC/alma/human_written_data" && find . \( -name 'train.*-en.??' -o -name 'valid.*.json' -o -name 'test.*.json' -o -path './HW-5-shot/*' \) -type f) |
  while read -r f; do mkdir -p "$DST/$(dirname "$f")"; cp "$SRC/alma/human_written_data/$f" "$DST/$f"; done
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >> .git/info/exclude
du -sh .carry/data
