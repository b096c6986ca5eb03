#!/usr/bin/env bash
# On the GPU machine, from the carried repo root: one study session kept in /tmp (a warm machine keeps /tmp; it is
# given back after ~30 s idle, so the calls go back to back). Prepared here by tools/device/stage-kit.sh.
#   session.sh kit DIR                   (carry DIR: .carry/k1, k2, k3 from stage-kit.sh) its whl/*.whl -> /tmp/site and its data.tar.xz
#                                        -> /tmp/data, each where present; results -> /tmp/results (once: the stamp)
#   session.sh piece N|DIR               (carry .carry/pN or DIR) GGUF piece -> /tmp/stage (and a data.tar.xz in DIR ->
#                                        /tmp/data); the last piece (gguf.parts's count) assembles and checks
#   session.sh vllm-piece DIR            (carry DIR = .carry/vllm/pieces/vN, made by tools/device/vllm-wheels.sh) a piece of
#                                        the vLLM closure -> /tmp/vstage; the last one assembles it (sha256 checked) and
#                                        installs it into /tmp/vllm-site (its own target: vLLM pins compressed-tensors
#                                        0.17.0, llm-compressor 0.19.0); start vLLM runs with PYTHONPATH=/tmp/vllm-site:...
#   session.sh start NAME [--after OTHER[,OTHER...]] [--warm MODEL_ID] [--gpu ID] -- SNAKEMAKE_ARGS...
#                                        snapshot studylib/notebooks/params/Snakefile/profiles/results into
#                                        /tmp/work-NAME and run the workflow there in the background (setsid):
#                                        `python3 -m snakemake --cores all SNAKEMAKE_ARGS`, e.g.
#                                        `--config profile=full results=/tmp/results params="params/1*.yaml"`;
#                                        --after waits for each OTHER to end first; --warm materializes a model into the
#                                        shared cache before the workflow starts (no race between jobs); --gpu shows
#                                        it only that GPU (CUDA_VISIBLE_DEVICES)
#                                        (carry .carry/snap, made by `tools/device/stage-kit.sh --snap`, to run a commit)
#   session.sh jobs NAME [--after OTHER[,OTHER...]] [--no-vllm] JOB...
#                                        like start, but runs the given jobs one after another (once OTHER has
#                                        ended, with --after: e.g. timing jobs queued behind a training job), each
#                                        `python3 -m studylib.workflow run` (what a Snakemake rule runs): JOB is
#                                        NOTEBOOK:PARAMS_FILE[:SETTING_JSON], e.g. 41_engines:params/41_engines_teacher-lora.yaml
#                                        or '40_efficiency_7b:params/40_efficiency_7b_llama2-7b.yaml:{"variant":"vllm-fp8"}';
#                                        /tmp/vllm-site, where installed, comes first on PYTHONPATH (--no-vllm: left
#                                        out, for llm-compressor's jobs: it needs compressed-tensors 0.19, vLLM 0.17)
#   session.sh wait NAME [SECONDS]       follow NAME until it ends or SECONDS pass (prints the job lines and the tail;
#                                        every new record so far into $OUT/records.tgz, as collect does)
#   session.sh collect NAME...           new records (records.tgz), logs and executed notebooks (NAME.tgz) into $OUT
#   session.sh pack RUN                  a full fine-tuned teacher made here (/tmp/results/artifacts/01_teacher/RUN),
#                                        its weights cast to bf16 (what every later run loads), as a tar cut into
#                                        15 MiB parts in /tmp/pack (its sha256 beside them); prints how many
#   session.sh out K                     the K-th four parts (1: parts 00-03) into $OUT, one call each (at most 8 files of
#                                        16 MiB, 64 MiB together, come back a call);
#                                        here, tools/device/artifact.sh joins them into results/artifacts
#   session.sh artifact DIR              (carry DIR = .carry/aN, made here by tools/device/artifact.sh stage) a part of
#                                        such a pack -> /tmp/astage; the last one is checked and unpacked into
#                                        /tmp/results/artifacts/01_teacher (later jobs there use it instead of training)
# Set STUDYLIB_GIT_SHA in the calling command (the checkout's commit) so records name it.
set -uo pipefail
GGUF=/tmp/gemma-3-270m-q4_k_m.gguf
SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
records_tgz() {  # the records and test selections written since the kit came (.kit-stamp) -> $OUT/records.tgz
  mkdir -p "$OUT" && (cd /tmp/results && { find runs testsets -name '*.json*' -newer .kit-stamp 2>/dev/null || true; } \
    | tar -czf "$OUT/records.tgz" -T -)
}
cmd=${1:-}; shift || true
case "$cmd" in
kit)
  K=${1:-.carry/k1}; [ -d "$K" ] || { echo "no $K here: carry it" >&2; exit 1; }
  if ls "$K"/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$K"/whl/*.whl || exit 1
  fi
  if [ -f "$K/data.tar.xz" ]; then
    rm -rf /tmp/data && mkdir -p /tmp/data && tar -C /tmp/data --strip-components=1 -xJf "$K/data.tar.xz" || exit 1
  fi
  [ -f /tmp/results/.kit-stamp ] || { mkdir -p /tmp/results && cp -rn results/. /tmp/results/ && touch /tmp/results/.kit-stamp; }
  PYTHONPATH=/tmp/site python3 -c "import importlib.util as u, importlib.metadata as m, torch; \
print('kit: torch', torch.__version__, '|', torch.cuda.get_device_name(0), '|', ', '.join(f'{n} {m.version(n)}' \
for n in ('papermill', 'gguf', 'gptqmodel', 'bitsandbytes', 'llmcompressor') if u.find_spec(n)))"
  du -sh /tmp/site /tmp/data
  ;;
piece)
  P=${1:?piece number or folder}; [ -d "$P" ] || P=.carry/p$P
  mkdir -p /tmp/stage && cp "$P"/gguf.part[0-9]* /tmp/stage/ || exit 1
  if [ -f "$P/data.tar.xz" ]; then
    rm -rf /tmp/data && mkdir -p /tmp/data && tar -C /tmp/data --strip-components=1 -xJf "$P/data.tar.xz" || exit 1
  fi
  total=6; [ -f "$P/gguf.parts" ] && total=$(cat "$P/gguf.parts")
  ls /tmp/stage
  if [ "$(ls /tmp/stage/gguf.part[0-9]* 2>/dev/null | wc -l)" = "$total" ]; then
    cat $(ls /tmp/stage/gguf.part[0-9]* | sort -V) > $GGUF.tmp && echo "$SHA  $GGUF.tmp" | sha256sum -c - \
      && mv $GGUF.tmp $GGUF && rm -f /tmp/stage/gguf.part[0-9]* && echo "GGUF assembled and checked"
  fi
  ;;
vllm-piece)
  P=${1:?piece folder}; [ -f "$P/parts" ] || { echo "no $P/parts: carry a piece made by vllm-wheels.sh" >&2; exit 1; }
  mkdir -p /tmp/vstage && cp "$P"/vllm.tar.part* /tmp/vstage/ || exit 1
  total=$(cat "$P/parts"); have=$(ls /tmp/vstage/vllm.tar.part* | wc -l); echo "vLLM pieces here: $have of $total"
  if [ "$have" = "$total" ]; then
    cat $(ls /tmp/vstage/vllm.tar.part* | sort) > /tmp/vllm.tar && echo "$(cat "$P/sha256")  /tmp/vllm.tar" \
      | sha256sum -c - || exit 1
    rm -rf /tmp/vstage /tmp/vkit && mkdir -p /tmp/vkit && tar -C /tmp/vkit -xf /tmp/vllm.tar && rm /tmp/vllm.tar
    t0=$(date +%s)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/vllm-site \
      /tmp/vkit/whl/*.whl || exit 1
    rm -rf /tmp/vkit
    PYTHONPATH=/tmp/vllm-site python3 -c "import vllm, torch; print('vllm', vllm.__version__, '| torch', torch.__version__)" \
      && echo "installed in $(( $(date +%s) - t0 )) s; $(du -sh /tmp/vllm-site | cut -f1)"
  fi
  ;;
start)
  name=${1:?name}; shift; after=""; warm=""; gpu=""
  while [ "${1:-}" != "--" ] && [ $# -gt 0 ]; do
    case "$1" in --after) after=$2; shift 2 ;; --warm) warm=$2; shift 2 ;; --gpu) gpu=$2; shift 2 ;;
      *) echo "unknown option $1" >&2; exit 2 ;; esac
  done
  shift
  # code from .carry/snap when carried (`git archive` of a commit: edits in progress here do not travel), else the tree
  S=.; [ -d .carry/snap/studylib ] && S=.carry/snap
  W=/tmp/work-$name; rm -rf "$W" /tmp/$name.done && mkdir -p "$W" \
    && cp -r $S/studylib $S/notebooks $S/params $S/pyproject.toml $S/Snakefile $S/profiles results "$W"/ || exit 1
  echo "code from $S"
  args=$(printf ' %q' "$@")  # quoted as given (params="a.yaml b.yaml" stays one argument)
  cat > /tmp/$name.sh <<SCRIPT
cd $W
export PYTHONPATH=/tmp/site:$W PATH=/tmp/site/bin:\$PATH PYTHONUNBUFFERED=1 STUDYLIB_DATA=/tmp/data \
  STUDYLIB_CACHE=/tmp/studylib-cache STUDYLIB_GGUF=$GGUF STUDYLIB_RESULTS=/tmp/results \
  STUDYLIB_GIT_SHA="${STUDYLIB_GIT_SHA:-}" TORCH_CUDA_ARCH_LIST=9.0 TORCH_EXTENSIONS_DIR=/tmp/torch-ext \
  TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=4
[ -n "$gpu" ] && export CUDA_VISIBLE_DEVICES=$gpu
for a in ${after//,/ }; do echo "waiting for \$a"; while [ ! -f /tmp/\$a.done ]; do sleep 5; done; done
if [ -n "$warm" ]; then
  while [ ! -f $GGUF ]; do sleep 5; done
  python3 -c "from studylib.core import models; models.load_model('$warm', 'bfloat16', 'cpu'); print('warm: $warm')" || exit 1
fi
echo "workflow start \$(date -u +%T)"
python3 -m snakemake --cores all$args
SCRIPT
  setsid nohup bash -c "bash /tmp/$name.sh; echo \$? > /tmp/$name.done" > /tmp/$name.log 2>&1 < /dev/null &
  sleep 3; echo "started $name (after: ${after:-none}, warm: ${warm:-none}, gpu: ${gpu:-all}): $*"
  ;;
jobs)
  name=${1:?name}; shift; after=""
  [ "${1:-}" = "--after" ] && { after=${2:?--after needs a name}; shift 2; }
  vsite=/tmp/vllm-site:; [ "${1:-}" = "--no-vllm" ] && { vsite=""; shift; }
  S=.; [ -d .carry/snap/studylib ] && S=.carry/snap
  W=/tmp/work-$name; rm -rf "$W" /tmp/$name.done && mkdir -p "$W" \
    && cp -r $S/studylib $S/notebooks $S/params $S/pyproject.toml results "$W"/ || exit 1
  : > /tmp/$name.jobs
  for job in "$@"; do printf '%s\n' "$job" >> /tmp/$name.jobs; done
  cat > /tmp/$name.sh <<SCRIPT
cd $W
export PYTHONPATH=${vsite}/tmp/site:$W PATH=/tmp/site/bin:\$PATH PYTHONUNBUFFERED=1 STUDYLIB_DATA=/tmp/data \
  STUDYLIB_CACHE=/tmp/studylib-cache STUDYLIB_GGUF=$GGUF STUDYLIB_RESULTS=/tmp/results \
  STUDYLIB_GIT_SHA="${STUDYLIB_GIT_SHA:-}" TORCH_CUDA_ARCH_LIST=9.0 TORCH_EXTENSIONS_DIR=/tmp/torch-ext \
  TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=4
for a in ${after//,/ }; do echo "waiting for \$a"; while [ ! -f /tmp/\$a.done ]; do sleep 5; done; done
rc=0
while IFS= read -r job; do
  nb=\${job%%:*}; rest=\${job#*:}; pf=\${rest%%:*}; setting={}; [ "\$rest" != "\$pf" ] && setting=\${rest#*:}
  echo "job start \$(date -u +%T): \$nb \$pf \$setting"
  python3 -m studylib.workflow run "\$nb" "\$pf" "\$setting" --profile full --results /tmp/results \
    --out "build/executed/\$nb-\$(echo "\$setting" | tr -dc 'a-z0-9-').ipynb"
  r=\$?; echo "job end \$(date -u +%T) rc=\$r: \$nb \$setting"; [ \$r = 0 ] || rc=\$r
done < /tmp/$name.jobs
exit \$rc
SCRIPT
  setsid nohup bash -c "bash /tmp/$name.sh; echo \$? > /tmp/$name.done" > /tmp/$name.log 2>&1 < /dev/null &
  sleep 2; echo "started $name (after: ${after:-none}): $# jobs"; cat /tmp/$name.jobs
  ;;
wait)
  name=${1:?name}; end=$(( $(date +%s) + ${2:-540} ))
  while [ ! -f /tmp/$name.done ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
  grep -aE '^  (run|held) |^\[bench|^(workflow|warm|error|job )|runs: |Finished job|steps \(|Traceback|Error' /tmp/$name.log | tail -n 40
  tail -c 1200 /tmp/$name.log | tr '\r' '\n' | tail -n 6
  if [ -f /tmp/$name.done ]; then echo "DONE $name rc=$(cat /tmp/$name.done)"; else echo "RUNNING $name"; fi
  # every record made so far comes back with each call (a machine can be taken back mid-call: the next may not come)
  if [ -n "${OUT:-}" ] && [ -f /tmp/results/.kit-stamp ]; then
    records_tgz && echo "new records: $(tar -tzf "$OUT/records.tgz" | grep -c '^runs/.*\.json$')"
  fi
  ;;
collect)
  records_tgz && tar -tzf "$OUT/records.tgz"
  for name in "$@"; do
    W=/tmp/work-$name; cp /tmp/$name.log "$OUT/$name.log"
    tar -czf "$OUT/$name.tgz" -C "$W" $(cd "$W" && ls -d build/logs build/executed .snakemake/log 2>/dev/null)
  done
  ls -la "$OUT"
  ;;
pack)
  run=${1:?teacher run name}; src=/tmp/results/artifacts/01_teacher/$run
  [ -f "$src/merged/config.json" ] || { echo "no teacher at $src/merged" >&2; exit 1; }
  rm -rf /tmp/pack /tmp/pack-src && mkdir -p /tmp/pack /tmp/pack-src/$run && cp -r "$src/merged" /tmp/pack-src/$run/ || exit 1
  PYTHONPATH=/tmp/site python3 - /tmp/pack-src/$run/merged <<'PY' || exit 1
import json, sys, pathlib, torch
from safetensors.torch import load_file, save_file
d = pathlib.Path(sys.argv[1])
for f in sorted(d.glob("*.safetensors")):
    tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in load_file(f).items()}
    save_file(tensors, f, metadata={"format": "pt"})
cfg = json.loads((d / "config.json").read_text())
for key in ("torch_dtype", "dtype"):
    if key in cfg: cfg[key] = "bfloat16"
(d / "config.json").write_text(json.dumps(cfg, indent=2))
print("cast to bf16:", ", ".join(f.name for f in d.glob("*.safetensors")))
PY
  tar -C /tmp/pack-src -cf - "$run" | split -b 15M -d -a 2 - /tmp/pack/part. && rm -rf /tmp/pack-src
  (cd /tmp/pack && cat part.* | sha256sum | cut -d' ' -f1 > sha256 && echo "$run" > run && ls part.* | wc -l > parts)
  echo "packed $run: $(cat /tmp/pack/parts) parts, sha256 $(cat /tmp/pack/sha256)"; ls -la /tmp/pack
  ;;
out)
  K=${1:?group number, from 1}; mkdir -p "$OUT" && cp /tmp/pack/sha256 /tmp/pack/parts /tmp/pack/run "$OUT"/ || exit 1
  for i in 0 1 2 3; do f=/tmp/pack/part.$(printf '%02d' $(( 4 * (K - 1) + i ))); [ -f "$f" ] && cp "$f" "$OUT"/; done
  ls -la "$OUT"
  ;;
artifact)
  A=${1:?part folder}; [ -f "$A/parts" ] || { echo "no $A/parts: carry a folder made by tools/device/artifact.sh stage" >&2; exit 1; }
  mkdir -p /tmp/astage && cp "$A"/part.[0-9]* /tmp/astage/ || exit 1
  have=$(ls /tmp/astage/part.* | wc -l); total=$(cat "$A/parts"); echo "artifact parts here: $have of $total"
  if [ "$have" = "$total" ]; then
    echo "$(cat "$A/sha256")  -" > /tmp/astage.sum && cat $(ls /tmp/astage/part.* | sort) | sha256sum -c /tmp/astage.sum || exit 1
    mkdir -p /tmp/results/artifacts/01_teacher && cat $(ls /tmp/astage/part.* | sort) \
      | tar -C /tmp/results/artifacts/01_teacher -xf - && rm -rf /tmp/astage && ls /tmp/results/artifacts/01_teacher/*
  fi
  ;;
*) sed -n "2,/^set -uo/p" "$0" | sed "\$d"; exit 2 ;;
esac
