#!/usr/bin/env bash
# A full fine-tuned teacher (bf16, ~540 MB) between here and the GPU machine, in parts that fit one call each way.
# There, `session.sh pack RUN` cuts it into 15 MiB parts and `session.sh out K` returns four a call. Here:
#   artifact.sh take DIR...   copy the parts a call returned (its files_at folder) into .device/pack
#   artifact.sh join          check the parts against their sha256 and unpack the teacher into results/artifacts/01_teacher
#                             (ignored by git: a full teacher is never committed)
#   artifact.sh stage         cut .device/pack into carries .carry/a1..aN of two parts each (30 MiB beside the tree);
#                             there, `session.sh artifact .carry/aN` for each, in order, unpacks it into /tmp/results
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
P=.device/pack
case "${1:-}" in
take)
  shift; mkdir -p $P
  for d in "$@"; do cp "$d"/part.[0-9]* "$d"/sha256 "$d"/parts "$d"/run $P/ 2>/dev/null || cp "$d"/sha256 "$d"/parts "$d"/run $P/; done
  echo "$(ls $P/part.* 2>/dev/null | wc -l) of $(cat $P/parts) parts of $(cat $P/run) here"
  ;;
join)
  [ "$(ls $P/part.* | wc -l)" = "$(cat $P/parts)" ] || { echo "$(ls $P/part.* | wc -l) of $(cat $P/parts) parts: take the rest first" >&2; exit 1; }
  echo "$(cat $P/sha256)  -" > $P/sum && cat $(ls $P/part.* | sort) | sha256sum -c $P/sum
  mkdir -p results/artifacts/01_teacher && cat $(ls $P/part.* | sort) | tar -C results/artifacts/01_teacher -xf -
  git check-ignore -q "results/artifacts/01_teacher/$(cat $P/run)/merged/config.json" \
    || { echo "results/artifacts/01_teacher/$(cat $P/run) is not ignored by git: it would travel with every call" >&2; exit 1; }
  du -sh "results/artifacts/01_teacher/$(cat $P/run)"
  ;;
stage)
  n=$(cat $P/parts); rm -rf .carry/a[0-9]*
  i=0
  for f in $(ls $P/part.* | sort); do
    c=.carry/a$(( i / 2 + 1 )); mkdir -p $c && cp "$f" $c/ && cp $P/sha256 $P/parts $c/; i=$(( i + 1 ))
  done
  echo "staged $n parts in $(ls -d .carry/a[0-9]* | wc -l) carries: .carry/a1..a$(( (n + 1) / 2 ))"
  ;;
*) sed -n 2,8p "$0"; exit 2 ;;
esac
