"""One JSON record per run, written atomically, and the summary table built from all of them.

A record lives at ``<results>/runs/<notebook>/<run>.json`` and holds: the run's params (and their hash,
so a pipeline can tell a stale record from a current one), per-direction metrics (``"de-en": {"bleu",
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
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from studylib.core import gpulock
from studylib.core.languages import DIRECTIONS, EN_XX, XX_EN

PROFILES = ("smoke", "full")
METRICS = ("bleu", "chrf", "chrf++", "comet")
_PACKAGES = (
    "torch", "transformers", "tokenizers", "accelerate", "peft", "sacrebleu", "unbabel-comet", "bitsandbytes",
    "gptqmodel", "llmcompressor", "optimum", "gguf", "numpy", "papermill",
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


WHERE_KEYS = ("results_dir", "data_dir")  # where a run read and wrote, not what it was


def comparable_params(params: dict) -> dict:
    """Params as they read back from a record (JSON round trip), without the keys that only say where."""
    out = json.loads(json.dumps(params, default=str))
    for key in WHERE_KEYS:
        out.pop(key, None)
    return out


def load_record(notebook: str, run: str, results: str | Path | None = None) -> dict:
    return read_record(record_path(notebook, run, results))


FORCE_ENV = "STUDYLIB_FORCE"  # "1": `pipeline --force` asked for every setting of a sweep to run again


def rerun_requested() -> bool:
    """Whether the pipeline was started with ``--force`` (``$STUDYLIB_FORCE`` is "1"): then a sweep runs again the
    settings it would skip as already recorded. Checks after a run (that a record matches) are not affected."""
    return os.environ.get(FORCE_ENV) == "1"


def resumable(notebook: str, run: str, params: dict, results: str | Path | None = None) -> bool:
    """Whether a sweep may skip this setting: its record matches and no re-run was asked for (``--force``)."""
    return not rerun_requested() and record_matches(notebook, run, params, results)


def record_matches(notebook: str, run: str, params: dict, results: str | Path | None = None) -> bool:
    """A record of ``notebook``/``run`` exists and was made with exactly ``params`` (where-keys aside)."""
    path = record_path(notebook, run, results)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["params"]
    except (OSError, ValueError, KeyError):
        return False
    return comparable_params(saved) == comparable_params(params)


def _git_sha() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) or None


def host_load() -> dict:
    """The host's CPUs and their load when the record is made: launch-bound timings (small batches) slow down when
    other jobs (on other GPUs of the machine, say) keep the CPUs busy."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not on every platform
        load = None
    return {"cpus": os.cpu_count(), "load_average_1_5_15_min": load,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


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
        "gpu_sharing": gpulock.describe(),
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
        for metric in METRICS:
            values = [per_direction[d].get(metric) for d in present]
            if all(isinstance(v, (int, float)) for v in values):
                out[group][metric] = sum(values) / len(values)
        out[group]["directions"] = present
    return out


def make_record(*, notebook: str, run: str, params: dict, profile: str, metrics: dict, efficiency: dict | None = None,
                outputs: dict | None = None, extra: dict | None = None) -> dict:
    """Assemble a record; checks the profile and direction keys."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {PROFILES}")
    unknown = [d for d in metrics if d not in DIRECTIONS]
    if unknown:
        raise ValueError(f"metrics for unknown directions {unknown}; expected keys like 'de-en'")
    return {
        "notebook": notebook,
        "run": run,
        "profile": profile,
        "params": params,
        "params_hash": params_hash(params),
        "metrics": metrics,
        "averages": direction_averages(metrics),
        "efficiency": efficiency or {},
        "environment": environment(),
        **(extra or {}),
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
    """Sources and references shared by every record of one test selection: ``<results>/testsets/<key>.json.gz``."""
    return results_root / "testsets" / f"{key}.json.gz"


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
    under ``outputs`` when it has any. ``path`` is ``<results>/runs/<notebook>/<run>.json``."""
    path = Path(path)
    rec = json.loads(path.read_text(encoding="utf-8"))
    if rec.get("outputs_file"):
        side = _read_gzip_json(path.parent / rec["outputs_file"])
        shared = _read_gzip_json(testset_path(path.parent.parent.parent, side["testset"]))
        rec["outputs"] = {d: {"src": shared[d]["src"], "ref": shared[d]["ref"], "hyp": hyp}
                          for d, hyp in side["hyp"].items()}
    return rec


ERRATA_FIELDS = ("params", "nonzero_params", "storage_gb", "peak_memory_gb", "time_per_token_ms", "tokens_per_s")
# a benchmark record (notebook 40) holds one row per format: its errata name ``<variant>:<field>``
BENCHMARK_ERRATA_FIELDS = ("peak_memory",)


def _errata_field_ok(field: str) -> bool:
    variant, sep, name = str(field).partition(":")
    return field in ERRATA_FIELDS or bool(sep and variant and name in BENCHMARK_ERRATA_FIELDS)


def load_errata(results: str | Path | None = None) -> dict:
    """``<results>/errata.yaml``: known flaws in committed records, as ``{"<notebook>/<run>": {"fields", "reason"}}``.

    A record stays as its run wrote it; an erratum withdraws some of its efficiency fields (a measurement found
    wrong after the run) so that no table or figure shows them. Each entry needs ``record``, ``made_at`` (the git
    sha, or its start, the flawed record names), ``fields`` (from ``ERRATA_FIELDS``; for a benchmark record,
    ``<variant>:peak_memory``) and ``reason``. A record redone
    since (another sha) makes its entry stale, and reading the records fails until the entry is removed."""
    import yaml

    path = results_dir(results) / "errata.yaml"
    if not path.is_file():
        return {}
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    out = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"record", "made_at", "fields", "reason"}:
            raise ValueError(f"{path}: entry {i} must have exactly the keys record, made_at, fields, reason")
        bad = [f for f in entry["fields"] if not _errata_field_ok(f)]
        if bad or not entry["fields"] or not str(entry["reason"]).strip():
            raise ValueError(f"{path}: entry {i} ({entry['record']}): fields must be some of {ERRATA_FIELDS} "
                             f"(or <variant>:{'|'.join(BENCHMARK_ERRATA_FIELDS)} for a benchmark's format; got "
                             f"{bad or 'none'}) and the reason must be given")
        out[str(entry["record"])] = {"fields": list(entry["fields"]), "reason": str(entry["reason"]).strip(),
                                     "made_at": str(entry["made_at"])}
    return out


def load_records(results: str | Path | None = None, profile: str | None = None) -> list[dict]:
    """The records under ``<results>/runs`` (of one profile, if given), each with its erratum (``errata``) if any."""
    root = results_dir(results) / "runs"
    errata = load_errata(results)
    records = []
    for path in sorted(root.glob("*/*.json")):
        rec = read_record(path)
        key = f"{path.parent.name}/{path.stem}"
        if key in errata:
            sha = str((rec.get("environment") or {}).get("git_sha") or "")
            if len(errata[key]["made_at"]) < 7 or not sha.startswith(errata[key]["made_at"]):
                raise ValueError(f"errata.yaml: the entry for {key} is for the record made at {errata[key]['made_at']}, "
                                 f"but the record now names {sha or 'no sha'} (redone?): remove the entry")
            rec["errata"] = errata[key]
        if profile is None or rec.get("profile") == profile:
            records.append(rec)
    unknown = sorted(set(errata) - {f"{p.parent.name}/{p.stem}" for p in root.glob("*/*.json")})
    if unknown:
        raise ValueError(f"errata.yaml names records that do not exist: {unknown}")
    return records


def summary_table(records: list[dict]):
    """One row per run, test set and direction (plus the two averages): the table every figure is drawn from.

    Besides the scores and efficiency, each row carries what the run is (:func:`studylib.report.catalog.describe`:
    family, method, variant, bits, sparsity, depth, recovery, calib_per_direction, ood_total, kd). ``testset`` is
    ``wmt22`` (or the record's ``test_source``) for the main scores, ``ood`` for a student's out-of-domain test.
    """
    import pandas as pd

    from studylib.report import catalog

    rows = []
    for rec in records:
        base = {"notebook": rec["notebook"], "run": rec["run"], "profile": rec["profile"],
                "model_id": rec["params"].get("model_id"), "device": rec["environment"]["device"]["name"]}
        eff = rec.get("efficiency") or {}
        withdrawn = (rec.get("errata") or {}).get("fields", [])
        for key in ERRATA_FIELDS:
            base[key] = None if key in withdrawn else eff.get(key)
        base["errata"] = (rec.get("errata") or {}).get("reason")
        base["errata_fields"] = ",".join(withdrawn) or None
        base.update(catalog.describe(rec))  # family, method, variant and the sweep axes (bits, depth, ...)
        # the main test set, then (students) the held-out out-of-domain one
        for testset, metrics, averages in ((catalog.testset(rec), rec["metrics"], rec.get("averages", {})),
                                           ("ood", rec.get("ood_metrics") or {}, rec.get("ood_averages") or {})):
            for direction, scores in list(metrics.items()) + list(averages.items()):
                rows.append({**base, "testset": testset, "direction": direction,
                             **{m: scores.get(m) for m in METRICS}, "n": scores.get("n")})
    return pd.DataFrame(rows)


def write_summary(results: str | Path | None = None, profile: str | None = None) -> Path:
    """``<results>/summary.csv`` from all records (of one profile, if given)."""
    table = summary_table(load_records(results, profile))
    path = results_dir(results) / ("summary.csv" if profile is None else f"summary-{profile}.csv")
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
