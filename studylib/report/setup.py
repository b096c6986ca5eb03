"""The setup section and the reproducibility appendix: the facts of the setup (``setup.json``: model, test data,
metrics and their signatures, decoding, devices, packages, teachers, stale records), the environment each record was
made in and the command that remakes it, all read from the records."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path

import yaml

from studylib.core import records
from studylib.core.languages import DIRECTIONS, LANG_NAMES, XX_LANGS
from studylib.report.markdown import STALE, STALE_MEANING, code, join, md_table, stale_mark
from studylib.report.significance import DEFAULT_REFERENCE, parse_reference

log = logging.getLogger(__name__)

PARAMS_DIR = Path(__file__).resolve().parents[2] / "params"


def _key(rec: dict) -> str:
    return f"{rec['notebook']}/{rec['run']}"


def _named(rec: dict) -> str:
    return _key(rec) + stale_mark(records.is_stale(rec))


def _what(rec: dict, field: str):
    return (rec.get("what") or {}).get(field)


def _env_key(rec) -> tuple:
    env = rec.get("environment") or {}
    dev = env.get("device") or {}
    pk = env.get("packages") or {}
    return (dev.get("name"), dev.get("count"), dev.get("cuda"), env.get("python"), pk.get("torch"),
            pk.get("transformers"), pk.get("peft"), pk.get("sacrebleu"))


def _sha(rec: dict) -> str:
    sha = str((rec.get("environment") or {}).get("git_sha") or "")
    return sha[:7] + ("-dirty" if sha.endswith("-dirty") else "")


def environment_table(recs: list[dict]) -> str:
    """Runs grouped by identical device and package versions."""
    if not recs:
        return "*No records yet.*\n"
    groups = defaultdict(list)
    for rec in recs:
        groups[_env_key(rec)].append(rec)
    header = ["Runs", "Device", "CUDA", "Python", "torch", "transformers", "peft", "sacrebleu", "Dates", "Git"]
    body = []
    for (name, count, cuda, python, torch, transformers, peft, sacrebleu), rs in groups.items():
        dates = sorted({str((r.get("environment") or {}).get("date", ""))[:10] for r in rs} - {""})
        device = f"{count} × {name}" if count and count > 1 else str(name)
        body.append([", ".join(_named(r) for r in rs), device, cuda or "—", python or "—", torch or "—",
                     transformers or "—", peft or "—", sacrebleu or "—",
                     " – ".join([dates[0], dates[-1]] if len(dates) > 1 else dates) or "—",
                     ", ".join(sorted({_sha(r) for r in rs} - {""})) or "—"])
    return md_table(header, body) + _stale_line(recs)


def _stale_line(recs: list[dict]) -> str:
    return f"\n{STALE} {STALE_MEANING}.\n" if any(records.is_stale(r) for r in recs) else ""


def params_files(params_dir: str | Path = PARAMS_DIR) -> dict:
    """(notebook, run_name) -> params file, for every YAML in ``params_dir``."""
    out = {}
    for path in sorted(Path(params_dir).glob("*.yaml")):
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            out[(spec["notebook"], (spec.get("parameters") or {})["run_name"])] = path
        except (yaml.YAMLError, KeyError, TypeError):
            log.warning("%s: not a params file", path)
    return out


def params_file(files: dict, rec: dict) -> Path | None:
    """The params file that made ``rec``: its own run name, or the sweep's (one params file, one record per setting)."""
    sweep = _what(rec, "sweep") or {}
    return files.get((rec["notebook"], rec["run"])) or files.get((rec["notebook"], sweep.get("parent")))


def commands_table(recs: list[dict], params_dir: str | Path = PARAMS_DIR, profile: str = "full") -> str:
    if not recs:
        return "*No records yet.*\n"
    files = params_files(params_dir)
    smoke = " PROFILE=smoke" if profile == "smoke" else ""
    body = []
    for rec in sorted(recs, key=lambda r: (r["notebook"], r["run"])):
        path = params_file(files, rec)
        name = f"params/{path.name}" if path else None
        cmd = f"`make reproduce{smoke} PARAMS={name}`" if name else "— (no params file)"
        body.append([_named(rec), f"`{name}`" if name else "—", cmd, _sha(rec)[:7] or "—"])
    return md_table(["Record", "Params file", "Command", "Git"], body) + _stale_line(recs)


def _sorted_set(values) -> list:
    return sorted({v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))},
                  key=lambda v: (str(type(v)), v))


def _teacher(rec: dict) -> dict:
    t, p = rec.get("training") or {}, rec.get("params") or {}
    return {"method": p.get("method"), "examples": t.get("examples"), "steps": t.get("steps"),
            "epochs": p.get("epochs"), "learning_rate": p.get("learning_rate"), "seconds": t.get("seconds"),
            "trainable_share": t.get("trainable_share"), "lora_r": p.get("lora_r") if p.get("method") == "lora" else None,
            "dropped_test_overlap": rec.get("train_dropped_test_overlap")}


def setup_facts(recs: list[dict], reference: str = DEFAULT_REFERENCE, profile: str | None = None) -> dict:
    """The facts of the setup section, all read from the records."""
    scored = [r for r in recs if r.get("metrics")]
    fam = defaultdict(list)
    for r in scored:
        fam[_what(r, "family") or "other"].append(_key(r))
    sigs, n_test, directions, comet = defaultdict(set), set(), set(), False
    for r in scored:
        for d, s in r["metrics"].items():
            directions.add(d)
            if isinstance(s.get("n"), int):
                n_test.add(s["n"])
            comet = comet or isinstance(s.get("comet"), (int, float))
            for m, sig in (s.get("signatures") or {}).items():
                sigs[(m, "zh" if d.split("-")[1] == "zh" and m == "bleu" else "other")].add(sig)
    envs = [r.get("environment") or {} for r in recs]
    packages = defaultdict(set)
    for e in envs:
        for name, version in (e.get("packages") or {}).items():
            packages[name].add(version)
    params = [r.get("params") or {} for r in scored]
    dates = [str(e.get("date"))[:10] for e in envs if e.get("date")]
    ref = "/".join(parse_reference(reference))
    return {
        "profile": profile or _sorted_set(r.get("profile") for r in recs),
        "reference": ref,
        "reference_present": any(_key(r) == ref for r in scored),
        "n_records": len(recs),
        "n_scored_runs": len(scored),
        "stale_records": [_key(r) for r in recs if records.is_stale(r)],
        "runs_by_family": dict(sorted(fam.items())),
        "base_models": _sorted_set(p.get("model_id") for r, p in zip(scored, params)
                                   if _what(r, "family") in ("base", "teacher")),
        "test_sets": _sorted_set(_what(r, "testset") for r in scored),
        "directions": [d for d in DIRECTIONS if d in directions],
        "languages": [LANG_NAMES[x] for x in XX_LANGS if any(x in d.split("-") for d in directions)],
        "n_test": sorted(n_test),
        "signatures": {f"{m}:{k}": sorted(v) for (m, k), v in sorted(sigs.items())},
        "comet": comet,
        "prompt_styles": _sorted_set(p.get("prompt_style") for p in params),
        "shots": _sorted_set(p.get("shots") for p in params),
        "max_new_tokens": _sorted_set(p.get("max_new_tokens") for p in params),
        "dtypes": _sorted_set(p.get("dtype") for p in params),
        "speed_new_tokens": _sorted_set(p.get("speed_new_tokens") for p in params),
        "speed_batch_sizes": _sorted_set(b for p in params for b in (p.get("speed_batch_sizes") or [])),
        "devices": _sorted_set(f"{(e.get('device') or {}).get('name')}" for e in envs),
        "device_kinds": _sorted_set((e.get("device") or {}).get("kind") for e in envs),
        "packages": {k: sorted(v) for k, v in sorted(packages.items())},
        "python": _sorted_set(e.get("python") for e in envs),
        "dates": [min(dates), max(dates)] if dates else [],
        "git_shas": _sorted_set(str(e.get("git_sha"))[:7] for e in envs if e.get("git_sha")),
        "teachers": {r["run"]: _teacher(r) for r in scored if _what(r, "family") == "teacher"},
    }


def text_teachers_setup(ctx) -> str:
    teachers = ctx.setup.get("teachers") or {}
    if not teachers:
        return "No teacher has been recorded yet."
    parts = []
    for run, t in sorted(teachers.items()):
        how = "full fine-tuning" if t.get("method") == "full" else f"LoRA (rank {t.get('lora_r')})"
        share = t.get("trainable_share")
        extra = f", {share:.1%} of the parameters trainable" if isinstance(share, (int, float)) and share < 1 else ""
        epochs, steps = t.get("epochs"), t.get("steps")
        parts.append(f"{code(run)}: {how}, learning rate {t.get('learning_rate'):g}, "
                     f"{epochs:g} epoch{'' if epochs == 1 else 's'}"
                     + (f" ({steps:,} steps)" if isinstance(steps, int) else "") + extra)
    examples = sorted({t.get("examples") for t in teachers.values() if t.get("examples")})
    dropped = sorted({t.get("dropped_test_overlap") for t in teachers.values()
                      if t.get("dropped_test_overlap") is not None})
    lead = (f"The teachers are trained on {join([f'{e:,}' for e in examples], 'or')} human-written training pairs"
            + (f" (after dropping {join([str(d) for d in dropped], 'or')} pairs that share a sentence with a test set)"
               if dropped else "") + ". ")
    return lead + "; ".join(parts) + "."


def text_stale(ctx) -> str:
    """What the stale mark means and how many of the records carry it."""
    stale, n = ctx.setup.get("stale_records") or [], ctx.setup.get("n_records") or 0
    if not stale:
        return "Every record was made by the current layout of the code."
    which = ("Every record here was" if len(stale) == n else
             f"{len(stale)} of the {n} records here {'was' if len(stale) == 1 else 'were'}")
    return (f"{which} made by an older layout of the code: each is marked {STALE} in the tables and figures that "
            "name it, and the study's next full run remakes it. Its figures stand as its run measured them, including "
            "any that the current code measures differently (the commit each record names says which code made it).")
