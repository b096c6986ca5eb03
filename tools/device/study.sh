#!/usr/bin/env bash
# On the GPU machine, from the carried repo root: run params files through the pipeline in the background,
# from a private copy under /tmp (later calls re-sync the repo and would remove carried folders under it).
#   bash tools/device/study.sh start PARAMS...   # needs .whl and .carry/data carried, GGUF staged in /tmp/stage
#   bash tools/device/study.sh wait [SECONDS]    # follow the log until the job ends or SECONDS pass
#   bash tools/device/study.sh collect           # tar the records and logs into $OUT
set -uo pipefail
W=/tmp/work; LOG=/tmp/study.log; DONE=/tmp/study.done
case "${1:-}" in
start)
  shift
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  rm -rf "$W" && mkdir -p "$W" && cp -r studylib notebooks params pyproject.toml "$W"/ && cp -r .carry/data /tmp/data
  if [ ! -f /tmp/gemma-3-270m-q4_k_m.gguf ]; then
    cat /tmp/stage/gemma-3-270m-q4_k_m.gguf.part0{0,1,2,3} > /tmp/gemma-3-270m-q4_k_m.gguf || exit 1
  fi
  rm -f "$DONE"
  cd "$W" && setsid nohup env PYTHONPATH=/tmp/site:$W PYTHONUNBUFFERED=1 STUDYLIB_DATA=/tmp/data \
    STUDYLIB_CACHE=/tmp/studylib-cache STUDYLIB_GGUF=/tmp/gemma-3-270m-q4_k_m.gguf STUDYLIB_RESULTS=/tmp/results \
    STUDYLIB_GIT_SHA="${STUDYLIB_GIT_SHA:-}" \
    bash -c "python3 -m studylib.pipeline --results /tmp/results $* ; echo \$? > $DONE" > "$LOG" 2>&1 < /dev/null &
  sleep 5; echo "started: $*"
  ;;
wait)
  end=$(( $(date +%s) + ${2:-500} ))
  while [ ! -f "$DONE" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 10; done
  grep -E '^\[(run |skip)\]|Error|error|Traceback|loss=' "$LOG" | tail -n 15
  tail -c 1500 "$LOG" | tr '\r' '\n' | tail -n 8
  if [ -f "$DONE" ]; then echo "DONE rc=$(cat $DONE)"; else echo "RUNNING"; fi
  ;;
collect)
  mkdir -p "$OUT" && tar -czf "$OUT/results.tgz" -C /tmp results && cp "$LOG" "$OUT/study.log"
  [ -d "$W/build/executed" ] && tar -czf "$OUT/executed.tgz" -C "$W/build" executed
  ls -la "$OUT"
  ;;
*) echo "usage: $0 start PARAMS... | wait [SECONDS] | collect" >&2; exit 2 ;;
esac
