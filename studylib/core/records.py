"""One JSON record per run, written atomically, and the summary table built from all of them.

A record lives at ``<results>/runs/<notebook>/<run>.json`` and holds: the run's params (and their hash,
so the workflow can tell a stale record from a current one), per-direction metrics (``"de-en": {"bleu",
"chrf", "chrf++", "comet"?}``), averages over xx->en and en->xx, efficiency, the environment (git sha,
package versions, device, date), the profile (``smoke`` or ``full``) and, optionally, the system outputs
per direction (for paired bootstrap later), stored beside it compressed (:func:`write_record`, :func:`read_record`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from studylib.core.languages import DIRECTIONS, EN_XX, XX_EN

PROFILES = ("smoke", "full")
METRICS = ("bleu", "chrf", "chrf++", "comet")
FAILURES = ("off_target_rate", "runaway_rate", "empty_rate")  # studylib.core.failures.RATES
_PACKAGES = (
    "torch", "transformers", "tokenizers", "accelerate", "peft", "sacrebleu", "unbabel-comet", "bitsandbytes",
    "gptqmodel", "llmcompressor", "optimum", "gguf", "numpy", "papermill", "vllm", "compressed-tensors",
)


def results_dir(path: str | Path | None = None) -> Path:
    """The results root: the argument, else ``$STUDYLIB_RESULTS``, else ``results``."""
    return Path(path or os.environ.get("STUDYLIB_RESULTS") or "results")


def in_results(path: str | Path, results: str | Path | None = None) -> Path:
    """A path that params files write as ``results/...``, found under the results root wherever it is.

    Params name other runs' outputs relative to the repository (``results/artifacts/30_kd_data/x.jsonl.gz``); a
    run writing to another root (``$STUDYLIB_RESULTS``, ``--results``) puts them there. The copy under the root is
    preferred, and named when neither exists; the repository's copy is used when only it exists. A path not under
    ``results/``, or absolute, is returned as it is."""
    path = Path(path)
    parts = path.parts
    if path.is_absolute() or not parts or parts[0] != "results":
        return path
    moved = results_dir(results).joinpath(*parts[1:])
    return moved if moved.exists() or not path.exists() else path


def record_path(notebook: str, run: str, results: str | Path | None = None) -> Path:
    for name, value in (("notebook", notebook), ("run", run)):
        if not value or "/" in value or value.startswith("."):
            raise ValueError(f"{name} {value!r} must be a plain, non-empty file name")
    return results_dir(results) / "runs" / notebook / f"{run}.json"


def params_hash(params: dict) -> str:
    """A short, order-independent hash of the run's parameters."""
    blob = json.dumps(params, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


FILE_MODE = 0o644  # what the project writes is readable by all, like a plain `open(..., "w")` under the usual umask
WHERE_KEYS = ("results_dir", "data_dir")  # where a run read and wrote, not what it was


def comparable_params(params: dict) -> dict:
    """Params as they read back from a record (JSON round trip), without the keys that only say where."""
    out = json.loads(json.dumps(params, default=str))
    for key in WHERE_KEYS:
        out.pop(key, None)
    return out


def _git_sha() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) or None


def gpu_processes() -> int | None:
    """How many processes compute on this machine's GPUs now (this one included), from ``nvidia-smi``; None without
    one. A timing taken while another job shares the GPU is not comparable with one taken alone."""
    tool = shutil.which("nvidia-smi")
    if not tool:
        return None
    try:
        out = subprocess.run([tool, "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return len([line for line in out.stdout.splitlines() if line.strip()]) if out.returncode == 0 else None


def host_load() -> dict:
    """The host's CPUs and their load when the record is made: launch-bound timings (small batches) slow down when
    other jobs (on other GPUs of the machine, say) keep the CPUs busy; and the processes then on the GPUs."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        load = None
    return {"cpus": os.cpu_count(), "load_average_1_5_15_min": load,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpu_processes": gpu_processes()}


def environment() -> dict:
    """Where and with what a run was made."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    device = {"name": platform.processor() or platform.machine(), "kind": "cpu"}
    try:
        import torch

        if torch.cuda.is_available():
            device = {"name": torch.cuda.get_device_name(0), "kind": "cuda", "count": torch.cuda.device_count(),
                      "cuda": torch.version.cuda}
    except ImportError:
        pass
    return {
        "git_sha": os.environ.get("STUDYLIB_GIT_SHA") or _git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": device,
        "host": host_load(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def direction_averages(per_direction: dict) -> dict:
    """Mean of each metric over the xx->en and en->xx directions present (only where all have it)."""
    out = {}
    for group, dirs in (("xx-en", XX_EN), ("en-xx", EN_XX)):
        present = [d for d in dirs if d in per_direction]
        if not present:
            continue
        out[group] = {}
        for metric in (*METRICS, *FAILURES):
            values = [per_direction[d].get(metric) for d in present]
            if all(isinstance(v, (int, float)) for v in values):
                out[group][metric] = sum(values) / len(values)
        out[group]["directions"] = present
    return out


LAYOUT = 2  # the record schema: one run (one setting of a sweep) per record, ``what`` and ``layout`` in it
# Records of an older layout stay readable; the reports mark them stale until the study's next full run remakes them.


def is_stale(record: dict) -> bool:
    """Whether a record was made under an older layout than :data:`LAYOUT` (reports mark it, field by field alike)."""
    return int(record.get("layout") or 1) < LAYOUT


def make_record(*, notebook: str, run: str, params: dict, profile: str, metrics: dict, efficiency: dict | None = None,
                outputs: dict | None = None, extra: dict | None = None, family: str = "other",
                sweep: dict | None = None, method: str | None = None, engine: dict | None = None) -> dict:
    """Assemble a record; checks the profile and direction keys. ``family``, ``sweep`` (``{"parent", "axes"}`` of
    one setting) and ``method`` say what the run is (:func:`studylib.core.what.describe`); ``engine`` which engine
    decoded its translations (``studylib.core.evaluation.Evaluation.engine``)."""
    from studylib.core import what

    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {PROFILES}")
    unknown = [d for d in metrics if d not in DIRECTIONS]
    if unknown:
        raise ValueError(f"metrics for unknown directions {unknown}; expected keys like 'de-en'")
    extra = extra or {}
    return {
        "notebook": notebook,
        "run": run,
        "profile": profile,
        "layout": LAYOUT,
        "what": what.describe(family, params, extra.get("compression"), sweep, method),
        "params": params,
        "params_hash": params_hash(params),
        "metrics": metrics,
        "averages": direction_averages(metrics),
        "efficiency": efficiency or {},
        "environment": environment(),
        **({"engine": engine} if engine else {}),
        **extra,
        **({"outputs": outputs} if outputs else {}),
    }


def write_json_atomic(obj, path: Path, *, compressed: bool = False) -> Path:
    """Write JSON through a temporary file and an atomic rename: a reader sees the old file or the new, never half.
    ``compressed``: gzip (no timestamp, so the same object gives the same bytes), without indentation."""
    import gzip

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compressed:
        payload = gzip.compress(json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8"), mtime=0)
    else:
        payload = json.dumps(obj, ensure_ascii=False, indent=1, default=str).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


OUTPUTS_SUFFIX = ".outputs.json.gz"



def outputs_path(path: Path) -> Path:
    """Where a record's system outputs live: beside it, gzip-compressed (``<run>.outputs.json.gz``)."""
    path = Path(path)
    return path.with_name(path.stem + OUTPUTS_SUFFIX)



def _testset_key(outputs: dict) -> str:
    blob = json.dumps({d: [o.get("src"), o.get("ref")] for d, o in sorted(outputs.items())}, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def testset_path(results_root: Path, key: str) -> Path:
    """Sources and references shared by every record of one test selection: ``<results>/testsets/<key>.json.gz``.
    They are the test data themselves, so they are never committed (``.gitignore``): a reader that lacks one makes it
    again from the data folder (:func:`rebuild_testset`)."""
    return results_root / "testsets" / f"{key}.json.gz"


def rebuild_testset(results_root: Path, key: str, params: dict, directions: list[str]) -> Path:
    """The test selection a record was scored on, made again from the data folder (``$STUDYLIB_DATA``) by its
    params (``test_source``, ``n_test``, ``test_seed``) and written where :func:`testset_path` says; checked against
    ``key``, the hash of the sources and references the run saw. A DataError of one line when the data are not here
    or give another selection."""
    from studylib.core import data

    root = data.resolve_data_dir(None)  # this machine's data; the record's own data_dir named the machine that ran it
    source, n, seed = params.get("test_source", "alma"), params.get("n_test"), params.get("test_seed", 0)
    shared = {}
    for d in directions:
        examples = data.load_split(source, d, "test", n=n, seed=seed, root=root)
        shared[d] = {"src": [ex.src for ex in examples], "ref": [ex.tgt for ex in examples]}
    if _testset_key(shared) != key:
        raise data.DataError(f"test selection {key}: {source} test sets from {root} (n_test {n}, test_seed {seed}) "
                             f"are not the segments the record was scored on")
    return write_json_atomic(shared, testset_path(results_root, key), compressed=True)


def write_record(record: dict, results: str | Path | None = None) -> Path:
    """Write a record atomically. Its system outputs go beside it, gzip-compressed: the hypotheses in
    ``<run>.outputs.json.gz``, the sources and references once per test selection in ``<results>/testsets/`` (every
    run of the study translates the same segments). Those are written first: the record itself, written last, is
    what makes a run done."""
    path = record_path(record["notebook"], record["run"], results)
    outputs = record.get("outputs")
    if outputs:
        key = _testset_key(outputs)
        shared = testset_path(results_dir(results), key)
        if not shared.is_file():
            write_json_atomic({d: {"src": o.get("src"), "ref": o.get("ref")} for d, o in outputs.items()}, shared,
                              compressed=True)
        side = write_json_atomic({"testset": key, "hyp": {d: o.get("hyp") for d, o in outputs.items()}},
                                 outputs_path(path), compressed=True)
        record = {k: v for k, v in record.items() if k != "outputs"} | {"outputs_file": side.name}
    return write_json_atomic(record, path)


def _read_gzip_json(path: Path):
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def read_record(path: str | Path) -> dict:
    """A record as written, with its outputs (``{direction: {"src", "ref", "hyp"}}``, from the files beside it)
    under ``outputs`` when it has any. ``path`` is ``<results>/runs/<notebook>/<run>.json``. A test selection not
    here yet is made again from the data folder (:func:`rebuild_testset`)."""
    path = Path(path)
    rec = json.loads(path.read_text(encoding="utf-8"))
    if rec.get("outputs_file"):
        side = _read_gzip_json(path.parent / rec["outputs_file"])
        root = path.parent.parent.parent
        shared_path = testset_path(root, side["testset"])
        if not shared_path.is_file():
            rebuild_testset(root, side["testset"], rec.get("params") or {}, list(side["hyp"]))
        shared = _read_gzip_json(shared_path)
        rec["outputs"] = {d: {"src": shared[d]["src"], "ref": shared[d]["ref"], "hyp": hyp}
                          for d, hyp in side["hyp"].items()}
    return rec
