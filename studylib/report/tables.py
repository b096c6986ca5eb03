"""The study's tables, generated: from the summary (scores, efficiency, what each run is), the significance table,
and the records' environment. Every number the paper prints comes from a file written here or by
:mod:`studylib.report.significance` / :mod:`studylib.report.figures`.

    python -m studylib.report.tables [--results results] [--profile full] [--reference 01_teacher/gemma3-270m-lora]

writes into ``<results>/tables/``:

``main.md`` / ``main.csv``
    every scored run (base, teachers, compressed, students): BLEU, chrF++ (and COMET where present) averaged over
    xx->en and en->xx, time per token, peak memory, storage, parameters; scores not significantly different from
    the reference are marked (from the significance table).
``directions-chrf++.md``, ``directions-bleu.md``
    the same per direction.
``significance.md``
    the differences to the reference per direction (from ``<results>/significance-<profile>.csv``).
``environment.md``, ``commands.md``
    where and with what each record was made, and the command that remakes it (the reproducibility appendix).
``setup.json``
    the facts of the setup section (model, test data, metrics and their signatures, decoding, devices).
``students.md``, ``students.json``
    the distillation study (notebooks 30-33): the KD data, and per student its layers, params, storage, training
    data, WMT22 and held-out Tatoeba chrF++ and its chrF++ retention against the teacher.
``benchmark.md``, ``benchmark.json``
    the 7B-architecture efficiency benchmark (notebook ``40_efficiency_7b``): every format's times, memory and
    storage as ratios to fp16, its floor, the compression times; the JSON is what the figure and the paper's text
    read. Without a benchmark record both say it is not measured yet (no placeholder numbers).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from studylib.report import catalog
from studylib.core import records
from studylib.core.languages import DIRECTIONS, LANG_NAMES, XX_LANGS
from studylib.report.significance import DEFAULT_REFERENCE, NOT_SIGNIFICANT, parse_reference, read_table, table_path

log = logging.getLogger(__name__)

GROUPS = ("xx-en", "en-xx")
METRIC_LABELS = {"bleu": "BLEU", "chrf": "chrF", "chrf++": "chrF++", "comet": "COMET"}
NOT_COMPARABLE = "°"


# ----------------------------------------------------------------------------------------------- formatting


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, digits: int = 1) -> str:
    if missing(v):
        return "—"
    return f"{v:.{digits}f}".replace("-", "−")


def fmt_sig(v, significant: int = 3) -> str:
    """``significant`` digits without exponent notation: 0.536, 1.81, 18.4, 268, 1,024."""
    if missing(v):
        return "—"
    if v == 0:
        return "0"
    digits = max(0, significant - 1 - math.floor(math.log10(abs(v))))
    return f"{v:,.{digits}f}".replace("-", "−")


def arrow(direction: str) -> str:
    return direction.replace("-", "→")


def md_escape(text) -> str:
    return str(text).replace("|", "\\|")


def short_reason(text, limit: int = 160) -> str:
    """A reason's main clause for a table note: the text up to its first parenthesis (where the evidence and its
    provenance follow, kept in the record), cut at a word boundary if still longer than ``limit`` characters."""
    text = " ".join(str(text).split())
    head = text.split(" (", 1)[0]
    if len(head) <= limit:
        return head
    return head[:limit].rsplit(" ", 1)[0] + "…"


def md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A GitHub-style Markdown table; ``align`` one of l/r/c per column (default: left)."""
    align = (align or "l" * len(header)).ljust(len(header), "l")
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def metric_digits(metric: str) -> int:
    return 3 if metric == "comet" else 1


# ----------------------------------------------------------------------------------------------- inputs


def summary_path(results, profile) -> Path:
    return records.results_dir(results) / (f"summary-{profile}.csv" if profile else "summary.csv")


def load_summary(path):
    """The summary CSV (:func:`studylib.core.records.write_summary`), or an empty table when there is none yet."""
    import pandas as pd

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def main_rows(summary):
    """The summary's rows of the main test set (not a student's out-of-domain test)."""
    if summary is None or not len(summary):
        return summary
    if "testset" in summary:
        return summary[summary["testset"].fillna("") != "ood"]
    return summary


def runs(summary) -> list[tuple[str, str]]:
    """(notebook, run) of every scored run, in the study's order: family, notebook, run."""
    if summary is None or not len(summary):
        return []
    order = {f: i for i, f in enumerate(catalog.FAMILY_ORDER)}
    keys = summary[["notebook", "run"]].drop_duplicates().itertuples(index=False)
    return sorted(((nb, run) for nb, run in keys),
                  key=lambda k: (order.get(catalog.family(k[0]), 99), k[0], natural(k[1])))


def natural(text: str) -> tuple:
    """Sort key that orders 'calib4' before 'calib16'."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text)))


def labels(keys: list[tuple[str, str]]) -> dict:
    """A display label per run: its name, prefixed with the notebook where two notebooks share a run name."""
    count = defaultdict(int)
    for _, run in keys:
        count[run] += 1
    return {(nb, run): (run if count[run] == 1 else f"{nb}/{run}") for nb, run in keys}


def significance_marks(sig) -> dict:
    """(notebook, run, direction, metric) -> '' (significant), '†' (not), '°' (not comparable)."""
    marks = {}
    if sig is None or not len(sig):
        return marks
    for row in sig.to_dict("records"):
        k = (row["notebook"], row["run"], row["direction"], row["metric"])
        if not row["comparable"]:
            marks[k] = NOT_COMPARABLE
        else:
            marks[k] = "" if row["significant"] else NOT_SIGNIFICANT
    return marks


def _value(summary, nb, run, direction, column):
    rows = summary[(summary["notebook"] == nb) & (summary["run"] == run) & (summary["direction"] == direction)]
    return rows[column].iloc[0] if len(rows) and column in rows else None


def present_metrics(summary) -> list[str]:
    return [m for m in ("bleu", "chrf++", "comet") if m in summary and summary[m].notna().any()]


# ----------------------------------------------------------------------------------------------- tables


WITHDRAWN = "‡"  # an efficiency figure withdrawn by results/errata.yaml


def main_table(summary, sig=None, reference: str = DEFAULT_REFERENCE):
    """(DataFrame, Markdown) of the main table: one row per scored run."""
    import pandas as pd

    summary = main_rows(summary)
    keys = runs(summary)
    if not keys:
        return pd.DataFrame(), "*No scored runs yet.*\n"
    ref = parse_reference(reference)
    names = labels(keys)
    marks = significance_marks(sig)
    metrics = present_metrics(summary)
    header = ["Run", "Family", "Method"]
    for group in GROUPS:
        header += [f"{arrow(group)} {METRIC_LABELS[m]}" for m in metrics]
    header += ["ms/token", "Peak mem. (GB)", "Storage (GB)", "Params (M)"]
    body, rows, errata = [], [], {}
    for nb, run in keys:
        one = summary[(summary["notebook"] == nb) & (summary["run"] == run)].iloc[0]
        name = names[(nb, run)] + (" (ref.)" if (nb, run) == ref else "")
        cells = [name, one["family"] if "family" in one else catalog.family(nb), one.get("method", "")]
        row = {"notebook": nb, "run": run, "reference": (nb, run) == ref, "family": cells[1], "method": cells[2]}
        for group in GROUPS:
            for m in metrics:
                v = _value(summary, nb, run, group, m)
                mark = "" if (nb, run) == ref else marks.get((nb, run, group, m), "")
                cells.append(fmt(v, metric_digits(m)) + (mark if not missing(v) else ""))
                row[f"{group} {m}"] = v
                row[f"{group} {m} significant"] = {"": True, NOT_SIGNIFICANT: False}.get(mark)
        withdrawn = str(one.get("errata_fields") or "").split(",")
        for column, scale in (("time_per_token_ms", 1), ("peak_memory_gb", 1), ("storage_gb", 1), ("params", 1e-6)):
            v = one.get(column)
            cells.append(WITHDRAWN if column in withdrawn else fmt_sig(None if missing(v) else v * scale))
            row[column] = v
        if not missing(one.get("errata")):
            errata[names[(nb, run)]] = one["errata"]
        body.append(cells)
        rows.append(row)
    align = "lll" + "r" * (len(header) - 3)
    notes = [f"Scores: mean over the five directions of each group (WMT22, {_n_text(summary)}). "
             f"Reference: {names.get(ref, '/'.join(ref))}."]
    if sig is not None and len(sig):
        notes.append(f"{NOT_SIGNIFICANT}: not significantly different from the reference (paired bootstrap, "
                     f"p ≥ {sig['alpha'].dropna().iloc[0] if sig['alpha'].notna().any() else 0.05:g}); "
                     f"{NOT_COMPARABLE}: not comparable with the reference (different test segments or no stored "
                     f"outputs); unmarked differences are significant.")
    else:
        notes.append("No significance tests (no reference record).")
    notes.append("ms/token: greedy decoding at batch size 1, median of repeats after a warm-up. Peak mem.: peak "
                 "CUDA memory while decoding. Storage: the saved safetensors.")
    for name, reason in errata.items():
        notes.append(f"{WITHDRAWN} {name}: withdrawn ({reason}).")
    return pd.DataFrame(rows), md_table(header, body, align) + "\n" + " ".join(notes) + "\n"


def _n_text(summary) -> str:
    n = summary[summary["direction"].isin(DIRECTIONS)]["n"].dropna().unique() if "n" in summary else []
    if len(n) == 1:
        return f"{int(n[0])} segments per direction"
    if len(n):
        return f"{int(min(n))}–{int(max(n))} segments per direction"
    return "segments per direction unknown"


def directions_table(summary, sig=None, metric: str = "chrf++", reference: str = DEFAULT_REFERENCE) -> str:
    summary = main_rows(summary)
    keys = runs(summary)
    if not keys or metric not in summary or not summary[metric].notna().any():
        return f"*No {METRIC_LABELS.get(metric, metric)} scores yet.*\n"
    ref = parse_reference(reference)
    names = labels(keys)
    marks = significance_marks(sig)
    columns = [d for d in DIRECTIONS if d in set(summary["direction"])]
    header = ["Run"] + [arrow(d) for d in columns]
    body = []
    for nb, run in keys:
        cells = [names[(nb, run)] + (" (ref.)" if (nb, run) == ref else "")]
        for d in columns:
            v = _value(summary, nb, run, d, metric)
            mark = "" if (nb, run) == ref or missing(v) else marks.get((nb, run, d, metric), "")
            cells.append(fmt(v, metric_digits(metric)) + mark)
        body.append(cells)
    note = (f"{METRIC_LABELS.get(metric, metric)} per direction. {NOT_SIGNIFICANT}: not significantly different from "
            f"the reference; {NOT_COMPARABLE}: not comparable.")
    return md_table(header, body, "l" + "r" * len(columns)) + "\n" + note + "\n"


def _env_key(rec) -> tuple:
    env = rec.get("environment") or {}
    dev = env.get("device") or {}
    pk = env.get("packages") or {}
    return (dev.get("name"), dev.get("count"), dev.get("cuda"), env.get("python"), pk.get("torch"),
            pk.get("transformers"), pk.get("peft"), pk.get("sacrebleu"))


def environment_table(recs: list[dict]) -> str:
    """Runs grouped by identical device and package versions."""
    if not recs:
        return "*No records yet.*\n"
    groups = defaultdict(list)
    for rec in recs:
        groups[_env_key(rec)].append(rec)
    header = ["Runs", "Device", "CUDA", "Python", "torch", "transformers", "peft", "sacrebleu", "Dates", "Git"]
    body = []
    for k, rs in groups.items():
        name, count, cuda, python, torch, transformers, peft, sacrebleu = k
        dates = sorted({str((r.get("environment") or {}).get("date", ""))[:10] for r in rs} - {""})
        shas = sorted({str((r.get("environment") or {}).get("git_sha") or "")[:7] + ("-dirty" if str(
            (r.get("environment") or {}).get("git_sha") or "").endswith("-dirty") else "") for r in rs} - {""})
        device = f"{count} × {name}" if count and count > 1 else str(name)
        body.append([", ".join(f"{r['notebook']}/{r['run']}" for r in rs), device, cuda or "—", python or "—",
                     torch or "—", transformers or "—", peft or "—", sacrebleu or "—",
                     " – ".join([dates[0], dates[-1]] if len(dates) > 1 else dates) or "—", ", ".join(shas) or "—"])
    return md_table(header, body)


def params_files(params_dir: str | Path = "params") -> dict:
    """(notebook, run_name) -> params file, for every YAML in ``params_dir``."""
    out = {}
    for path in sorted(Path(params_dir).glob("*.yaml")):
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            out[(spec["notebook"], (spec.get("parameters") or {})["run_name"])] = path
        except (yaml.YAMLError, KeyError, TypeError):
            log.warning("%s: not a params file", path)
    return out


def find_params_file(files: dict, notebook: str, run: str):
    if (notebook, run) in files:
        return files[(notebook, run)]
    # a sweep notebook writes one record per point: '<run_name>-<point>'
    matches = [p for (nb, r), p in files.items() if nb == notebook and run.startswith(f"{r}-")]
    return max(matches, key=lambda p: len(p.stem)) if matches else None


def commands_table(recs: list[dict], params_dir: str | Path = "params", profile: str = "full") -> str:
    if not recs:
        return "*No records yet.*\n"
    files = params_files(params_dir)
    smoke = " --profile smoke --results build/smoke-results" if profile == "smoke" else ""
    body = []
    for rec in sorted(recs, key=lambda r: (r["notebook"], r["run"])):
        path = find_params_file(files, rec["notebook"], rec["run"])
        sha = str((rec.get("environment") or {}).get("git_sha") or "—")[:7]
        name = f"params/{path.name}" if path else None
        cmd = f"`python -m studylib.pipeline{smoke} {name}`" if name else "— (no params file)"
        body.append([f"{rec['notebook']}/{rec['run']}", f"`{name}`" if name else "—", cmd, sha])
    return md_table(["Record", "Params file", "Command", "Git"], body)


# ----------------------------------------------------------------------------------------------- benchmark


def _gb(n_bytes):
    return None if missing(n_bytes) else n_bytes / 1e9


def benchmark_data(recs: list[dict]) -> dict:
    """The 7B benchmark records of these records, as the table, the figure and the paper use them: one entry per
    record (by run name), its rows (:func:`studylib.bench.benchmark.report_rows`), setting and compression times."""
    from studylib.bench import benchmark

    runs = []
    for rec in sorted((r for r in recs if r.get("notebook") == benchmark.NOTEBOOK and r.get("benchmark")),
                      key=lambda r: natural(r["run"])):
        b = rec["benchmark"]
        compression = {}
        for key, entry in (b.get("compression") or {}).items():
            compression[key] = {k: entry.get(k) for k in ("status", "seconds", "quantize_seconds", "error",
                                                           "calibration", "sparsity", "linear_sparsity")
                                if entry.get(k) is not None}
        runs.append({"record": f"{rec['notebook']}/{rec['run']}", "run": rec["run"],
                     "architecture": b.get("architecture"), "device": b.get("device"),
                     "date": str((rec.get("environment") or {}).get("date") or "")[:10],
                     "weights": b.get("weights"), "calibration": b.get("calibration"),
                     "bandwidth_gb_s": (b.get("bandwidth") or {}).get("gb_per_s"), "timing": b.get("timing") or {},
                     "reference": b.get("reference"), "rows": benchmark.report_rows(rec), "compression": compression,
                     "targets": b.get("targets") or []})
    for run in runs:
        _relative_to_own_reference(run)
    return {"notebook": benchmark.NOTEBOOK, "status": "measured" if runs else "not measured", "runs": runs,
            "combined": combined_run(runs)}


def reference_row(run: dict) -> dict | None:
    """The measured row of a benchmark run's reference format (fp16), or None."""
    ref_name = run.get("reference") or "fp16"
    return next((r for r in run["rows"] if r["variant"] == ref_name and r["status"] == "ok"), None)


def _relative_to_own_reference(run: dict) -> None:
    """Add to each row its graph decode times and its floor relative to the eager time of the reference measured
    in the same record (``graph_b1_vs_ref``, ``graph_large_vs_ref``, ``floor_vs_ref``): the figure's one scale,
    which stays within one process when rows of several records are shown together."""
    ref = reference_row(run)
    for r in run["rows"]:
        for key, ms_key, base_key in (("graph_b1_vs_ref", "graph_b1_ms", "decode_b1_ms"),
                                      ("graph_large_vs_ref", "graph_large_ms", "decode_large_ms"),
                                      ("floor_vs_ref", "floor_ms", "decode_b1_ms")):
            base = None if ref is None else ref.get(base_key)
            ok = r["status"] == "ok" and not missing(r.get(ms_key)) and not missing(base) and base
            r[key] = r[ms_key] / base if ok else None


def combined_run(runs: list[dict]) -> dict | None:
    """One view of the benchmark records of one architecture on one device, for the figure and the paper: the
    record with the most measured formats, where each of its formats that did not run (and each compression time
    that failed) is taken from another record in which it did. A row taken so names its record (``from_record``)
    and keeps its ratios to the reference measured in that record's own process; nothing is rescaled across
    processes. ``sources`` lists the records used; ``reference_by_record`` the reference's batch-1 times in each
    (eager and graph), which shows how much the same format moved between processes; ``targets`` the study's
    targets (:func:`studylib.bench.benchmark.targets`) on these rows, each with the record it comes from."""
    from studylib.bench.benchmark import TARGETS, targets

    if not runs:
        return None
    main = max(runs, key=lambda run: sum(r["status"] == "ok" for r in run["rows"]))  # ties: the first (by name)
    peers = [run for run in runs if run is not main and run.get("architecture") == main.get("architecture")
             and run.get("device") == main.get("device")]
    rows, used = [], [main["record"]]
    for row in main["rows"]:
        if row["status"] != "ok":
            other = next(iter(_measured_in(peers, row["variant"])), None)
            if other is not None:
                run, r = other
                row = {**r, "from_record": run["record"], "failed_in_main": row.get("error")}
                if run["record"] not in used:
                    used.append(run["record"])
        rows.append(row)
    compression = {}
    for key in sorted({k for run in [main, *peers] for k in run.get("compression") or {}}):
        entry = (main.get("compression") or {}).get(key)
        if not entry or entry.get("status") != "ok":
            other = next((run for run in peers if ((run.get("compression") or {}).get(key) or {}).get("status")
                          == "ok"), None)
            if other is not None:
                entry = {**other["compression"][key], "from_record": other["record"]}
                if other["record"] not in used:
                    used.append(other["record"])
        if entry:
            compression[key] = entry
    refs = {}
    for run in [main, *peers]:
        ref = reference_row(run) if run["record"] in used else None
        if ref is not None:
            refs[run["record"]] = {"decode_b1_ms": ref.get("decode_b1_ms"), "graph_b1_ms": ref.get("graph_b1_ms")}
    repeats = measured_again(main, peers)
    goals = targets({"variants": rows, "compression": compression})
    by_key = {r["variant"]: r.get("from_record") for r in rows}
    by_key.update({f"compression:{k}": v.get("from_record") for k, v in compression.items()})
    for goal, (key, *_) in zip(goals, TARGETS):
        goal["record"] = by_key.get(key) or main["record"]
    return {**main, "rows": rows, "compression": compression, "sources": used, "reference_by_record": refs,
            "repeats": repeats, "targets": goals}


def _measured_in(runs: list[dict], variant: str) -> list[tuple[dict, dict]]:
    """``(run, row)`` for each of ``runs`` in which ``variant`` was measured (status ok), in the order given."""
    return [(run, r) for run in runs for r in run["rows"] if r["variant"] == variant and r["status"] == "ok"]


def measured_again(main: dict, peers: list[dict]) -> dict:
    """The main record's formats that another record of the same architecture and device measured too, each in its
    own process beside its own reference: per format, ``{"main": figures, "others": [figures, ...]}``, where figures
    are the record's name and its batch-1 eager and graph times with their ratios to that record's own reference.
    Nothing is averaged or rescaled: it shows how far the same format moved between processes. The reference itself
    is listed under its own name when it ran in more than one record."""
    def figures(run: dict, row: dict) -> dict:
        return {"record": run["record"], **{k: row.get(k) for k in ("decode_b1_ms", "decode_b1_ratio", "graph_b1_ms",
                                                                    "graph_b1_ratio")}}

    out = {}
    for row in main["rows"]:
        if row["status"] != "ok":
            continue
        others = [figures(run, r) for run, r in _measured_in(peers, row["variant"])]
        if others:
            out[row["variant"]] = {"label": row["label"], "main": figures(main, row), "others": others}
    return out


def targets_table(combined: dict | None) -> str:
    """Markdown: the benchmark's targets (reported, never asserted) against what the records measured, each with
    the record it comes from; a target with nothing measured says so."""
    if not combined or not combined.get("targets"):
        return ""
    body = []
    for g in combined["targets"]:
        measured = "not measured" if missing(g.get("measured")) else fmt_sig(g["measured"])
        met = "—" if g.get("met") is None else ("met" if g["met"] else "not met")
        figure = g.get("figure", "")
        if not missing(g.get("eager")):
            figure += f" (eager: {fmt_sig(g['eager'])})"
        body.append([g["target"], g["goal"], measured, met, figure, g.get("record") or "—"])
    return ("**Targets** (set for the study, reported and never asserted; batch-1 decode targets use the static-cache "
            "graph figure where a format has one)\n\n"
            + md_table(["Target", "Goal", "Measured", "Met", "Figure", "Record"], body, "llrlll"))


# ----------------------------------------------------------------------------------------------- students


def _mean_range(values: dict) -> dict | None:
    vals = [v for v in (values or {}).values() if not missing(v)]
    if not vals:
        return None
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _loss_path(log: list) -> dict | None:
    """The first logged training loss, the highest (and its step) and the last, from ``[[step, loss], ...]``."""
    if not log:
        return None
    peak_step, peak = max(log, key=lambda e: e[1])
    return {"first_step": log[0][0], "first": log[0][1], "peak_step": peak_step, "peak": peak,
            "last_step": log[-1][0], "last": log[-1][1]}


def students_data(recs: list[dict], reference: str = DEFAULT_REFERENCE) -> dict:
    """The distillation study (notebooks 30-33) as the students table and the paper read it: the KD data (30),
    the reference teacher, and one entry per student record (a record with a ``student`` section): layers, params,
    storage (4-bit base + adapter, as saved, decimal GB), training data, trainable share, WMT22 chrF++ per direction
    group, retention (student / teacher chrF++ per direction: mean, lowest, highest) and the held-out Tatoeba
    chrF++. Nothing is filled in that a record does not hold."""
    ref_nb, ref_run = parse_reference(reference)
    teacher = next((r for r in recs if r.get("notebook") == ref_nb and r.get("run") == ref_run), None)
    kd = next((r for r in recs if r.get("kd")), None)
    out = {"reference": reference, "teacher": None, "kd": None, "students": []}
    if teacher is not None:
        eff = teacher.get("efficiency") or {}
        out["teacher"] = {"record": reference, "layers": (teacher.get("params") or {}).get("num_layers"),
                          "params": eff.get("params"), "storage_bytes": eff.get("storage_bytes"),
                          "wmt_chrf++": {g: (teacher.get("averages") or {}).get(g, {}).get("chrf++") for g in GROUPS}}
    if kd is not None:
        k = kd["kd"]
        out["kd"] = {"record": f"{kd['notebook']}/{kd['run']}", "pairs": k.get("pairs"), "sources": k.get("sources"),
                     "per_direction": k.get("per_direction"), "dropped_test_overlap": k.get("dropped_test_overlap"),
                     "model": (kd.get("params") or {}).get("model_id")}
    for rec in sorted((r for r in recs if r.get("student")), key=lambda r: (r["notebook"], natural(r["run"]))):
        student, train = rec["student"], rec.get("training") or {}
        storage = student.get("storage_bytes") or {}
        out["students"].append({
            "record": f"{rec['notebook']}/{rec['run']}", "notebook": rec["notebook"], "run": rec["run"],
            "layers": student.get("layers"), "prune_recipe": student.get("prune_recipe"),
            "params": (rec.get("efficiency") or {}).get("params"),
            "storage_bytes": sum(storage.values()) if storage else None, "storage_parts": storage,
            "training_data": rec.get("training_data") or {},
            "ood_total": (rec.get("params") or {}).get("ood_total"),
            "trainable_share": (train.get("qlora") or {}).get("trainable_share"),
            "steps": train.get("steps"), "final_loss": train.get("final_loss"),
            "loss_path": _loss_path(train.get("loss_log") or []),
            "qlora": {k: (train.get("qlora") or {}).get(k) for k in ("r", "alpha", "dropout", "rslora", "double_quant",
                                                                      "compute_dtype")},
            "epochs": (rec.get("params") or {}).get("epochs"),
            "learning_rate": (rec.get("params") or {}).get("learning_rate"),
            "wmt_chrf++": {g: (rec.get("averages") or {}).get(g, {}).get("chrf++") for g in GROUPS},
            "ood_chrf++": {g: (rec.get("ood_averages") or {}).get(g, {}).get("chrf++") for g in GROUPS},
            "retention": _mean_range(rec.get("retention_chrf++")),
            "retention_by_direction": rec.get("retention_chrf++") or {},
            "teacher_record": rec.get("teacher_record")})
    return out


def students_table(data: dict) -> str:
    """Markdown: the teacher and each student -- layers, params (B), storage (GB), training pairs, WMT22 and
    held-out Tatoeba chrF++ by direction group, chrF++ retention against the teacher."""
    students = (data or {}).get("students") or []
    if not students:
        return "*Not measured yet: no student record (notebooks `31_model_a`, `32_model_b`, `33_ood_size`).*\n"
    header = ["Model", "Layers", "Params (B)", "Storage (GB)", "Training pairs (human + KD + OOD)",
              "WMT22 chrF++ xx→en", "en→xx", "Retention (mean; range)", "Tatoeba chrF++ xx→en", "en→xx"]
    rows = []
    t = data.get("teacher")
    if t:
        rows.append([f"{t['record']} (teacher)", fmt_sig(t.get("layers")) if t.get("layers") else "—",
                     fmt_sig((t.get("params") or math.nan) / 1e9), fmt_sig((t.get("storage_bytes") or math.nan) / 1e9),
                     "—", fmt(t["wmt_chrf++"].get("xx-en")), fmt(t["wmt_chrf++"].get("en-xx")), "1 (reference)",
                     "not measured", "not measured"])
    for s in students:
        d = s["training_data"]
        pairs = (f"{d.get('total', 0):,} ({d.get('human', 0):,} + {d.get('kd', 0):,} + {d.get('ood', 0):,})"
                 if d else "—")
        ret = s["retention"]
        rows.append([s["record"], str(s["layers"] or "—"), fmt_sig((s["params"] or math.nan) / 1e9),
                     fmt_sig((s["storage_bytes"] or math.nan) / 1e9), pairs,
                     fmt(s["wmt_chrf++"].get("xx-en")), fmt(s["wmt_chrf++"].get("en-xx")),
                     f"{ret['mean']:.3f}; {ret['min']:.3f}–{ret['max']:.3f}" if ret else "—",
                     fmt(s["ood_chrf++"].get("xx-en")), fmt(s["ood_chrf++"].get("en-xx"))])
    notes = ["Params: the model's parameters including the LoRA adapter. Storage: the 4-bit NF4 base as saved plus "
             "the adapter's safetensors (the teacher: its bf16 safetensors), decimal GB. Retention: the student's "
             "chrF++ over the teacher's, per direction on WMT22, averaged over the directions (range: lowest and "
             "highest direction). Tatoeba: held-out pairs of the out-of-domain pool, never trained on; the teacher "
             "was not scored on them."]
    if data.get("kd"):
        k = data["kd"]
        notes.append(f"KD data ({k['record']}): {fmt_sig(k.get('pairs'))} teacher translations of ALMA training "
                     "sources, greedy, all directions.")
    return md_table(header, rows, "llrrrrrrrr") + "\n" + " ".join(notes) + "\n"


def load_benchmark(tables_dir) -> dict | None:
    """``<tables>/benchmark.json`` as :func:`write` left it, or None."""
    path = Path(tables_dir) / "benchmark.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _kernel_label(kernel) -> str:
    text = str(kernel or "—").split(": ")[0]
    return text if len(text) <= 72 else text[:71] + "…"


def _x(v) -> str:
    return "—" if missing(v) else f"{fmt_sig(v)}×"


def _graph_ms(row: dict, key: str) -> str:
    """A graph decode time, or why there is none ("failed", "not measured"); never a number that was not measured."""
    if not missing(row.get(key)):
        return fmt_sig(row[key])
    mode = str(row.get("graph_mode") or "")
    return "failed" if mode.startswith("failed") or row.get("graph_error") else "not measured"


def _graph_x(row: dict, key: str, ms_key: str) -> str:
    return _x(row.get(key)) if not missing(row.get(ms_key)) else "—"


def _load_range(rows: list[dict]) -> tuple | None:
    """The lowest and highest 1-minute load average taken around the rows' timings, and the CPU count."""
    loads, cpus = [], set()
    for r in rows:
        host = r.get("host_load") or {}
        cpus.add(host.get("cpus"))
        for section in ("eager", "graph"):
            for when in ("before", "after"):
                value = (host.get(section) or {}).get(when)
                if value:
                    loads.append(value[0])
    cpus.discard(None)
    return (min(loads), max(loads), sorted(cpus)) if loads else None


def _graph_text(rows: list[dict], ref: str) -> list[str]:
    """What the graph columns are, per mode found, and which formats' capture failed (and why)."""
    from studylib.bench.benchmark import graph_not_attempted

    ok = [r for r in rows if r["status"] == "ok"]
    modes = {str(r.get("graph_mode") or "") for r in ok}
    how = []
    if "cuda-graph" in modes:
        how.append("each decoding step (forward, argmax, next input written in place) captured once as a CUDA graph "
                   "and replayed")
    if any(m.startswith("static-cache eager") for m in modes):
        how.append("the same steps run uncaptured (no CUDA graph on this device)")
    text = []
    if how:
        text.append("Graph columns: decode through a static KV cache, " + "; ".join(how) + f"; × {ref}: relative "
                    f"to {ref}'s graph figure; × floor: the graph batch-1 time over the floor. The eager columns are "
                    "`model.generate`'s.")
    failed = [f"{r['label']} ({md_escape(' '.join(str(r['graph_error']).split())[:120])})" for r in ok
              if r.get("graph_error")]
    if failed:
        text.append("Graph decode failed (the eager figures stand): " + "; ".join(failed) + ".")
    skipped = [f"{r['label']} ({md_escape(short_reason(r['graph_mode']))})" for r in ok if graph_not_attempted(r)]
    if skipped:
        text.append("Graph decode not attempted: " + "; ".join(skipped) + ".")
    off = [r["label"] for r in ok if not r.get("graph_mode") or str(r["graph_mode"]).startswith("off")]
    if off:
        text.append("Graph decode not measured: " + ", ".join(off) + ".")
    load = _load_range(ok)
    if load:
        low, high, cpus = load
        text.append(f"Host: {'/'.join(str(c) for c in cpus)} CPUs, 1-minute load average {fmt_sig(low)}–"
                    f"{fmt_sig(high)} around the timings.")
    return text


def benchmark_table(data: dict) -> str:
    """Markdown: per format, batch-1 and batch-N time per token, floor, prefill, peak memory, storage; ratios to
    the reference; the compression times below. Formats that did not run say why. A record with graph decode
    figures (static KV cache + CUDA graph) gets them beside the eager ones; an older record reads as before."""
    from studylib.bench.benchmark import describe_architecture, has_graph, runs_text

    runs = (data or {}).get("runs") or []
    if not runs:
        return ("*Not measured yet: no record of notebook `40_efficiency_7b` in this profile "
                "(`params/40_efficiency_7b_llama2-7b.yaml`).*\n")
    parts = []
    for run in runs:
        t = run["timing"]
        ref = run.get("reference") or "fp16"
        head = "" if len(runs) == 1 else f"**{run['record']}** ({run['device']}, {run['date']})\n\n"
        graph = has_graph(run["rows"])
        large = t.get('large_batch', '—')
        header = ["Format", "Kernel", "Layers", "Batch 1 ms/token", f"× {ref}", "× floor",
                  f"Batch {large} ms/token", f"× {ref}",
                  f"Prefill {t.get('prefill_tokens', '—')} ms",
                  "Speed-up", "Peak mem. (GB)", "Storage (GB)"]
        if graph:  # beside each eager decode figure, the graph one
            header[3:8] = ["Batch 1 ms/token (eager)", f"× {ref}", "× floor", "Batch 1 ms/token (graph)", f"× {ref}",
                           "× floor", f"Batch {large} ms/token (eager)", f"× {ref}",
                           f"Batch {large} ms/token (graph)", f"× {ref}"]
        body, notes, withdrawn = [], [], {}
        for r in run["rows"]:
            if r["status"] != "ok":
                why = str(r.get("error") or "")[:90]  # md_table escapes the cells
                body.append([r["label"], f"{'unavailable' if r['status'] == 'failed' else 'not run'}: {why}"]
                            + ["—"] * (len(header) - 2))
                continue
            cells = [r["label"], _kernel_label(r["kernel"]), str(r["layers"]), fmt_sig(r["decode_b1_ms"]),
                     _x(r["decode_b1_ratio"]), _x(r["floor_ratio"]), fmt_sig(r["decode_large_ms"]),
                     _x(r["decode_large_ratio"]), fmt_sig(r["prefill_ms"]), _x(r["prefill_speedup"]),
                     "‡" if "peak_memory" in r.get("withdrawn", []) else fmt_sig(_gb(r["peak_memory_bytes"])),
                     fmt_sig(_gb(r["storage_bytes"]))]
            if graph:
                cells[6:6] = [_graph_ms(r, "graph_b1_ms"), _graph_x(r, "graph_b1_ratio", "graph_b1_ms"),
                              _graph_x(r, "graph_floor_ratio", "graph_b1_ms")]
                cells[11:11] = [_graph_ms(r, "graph_large_ms"), _graph_x(r, "graph_large_ratio", "graph_large_ms")]
            body.append(cells)
            note = r.get("storage_note") or ""
            if note and not note.startswith("the model saved as it runs"):
                notes.append(f"{r['label']}: {note}")
            if r.get("withdrawn"):
                what = ", ".join(f.replace("_", " ") for f in r["withdrawn"])
                withdrawn.setdefault(str(r.get("errata")), []).append(f"{r['label']} ({what})")
        arch = describe_architecture(run["architecture"])
        text = [f"{arch[0].upper()}{arch[1:]}, built from its config, with "
                f"{run['weights']}.",
                f"Device: {run['device']}; copy bandwidth {fmt_sig(run['bandwidth_gb_s'])} GB/s, measured in the same "
                f"run. Times: median of {runs_text(t.get('repeats'))} timed after {runs_text(t.get('warmup'))} of "
                "warm-up; decode: "
                f"{t.get('new_tokens')} new tokens after a {t.get('prompt_tokens')}-token prompt, per token. "
                f"× {ref}: time relative to {ref} (below 1 is faster); speed-up: {ref}'s prefill time over the "
                "format's. × floor: batch-1 time per token over the floor (the bytes a decoding step must read, "
                "over the copy bandwidth)."]
        if graph:
            text += _graph_text(run["rows"], ref)
        if notes:
            text.append("Storage: " + "; ".join(notes) + ".")
        if withdrawn:
            text.append("‡ Withdrawn (results/errata.yaml): "
                        + "; ".join(f"{', '.join(which)}: {why}" for why, which in withdrawn.items()) + ".")
        comp = []
        for key, name in (("gptq-w4", "GPTQ 4-bit"), ("wanda", "Wanda")):
            entry = run["compression"].get(key)
            if not entry:
                continue
            if entry.get("status") != "ok":
                comp.append(f"{name}: {entry.get('status')} ({md_escape(str(entry.get('error'))[:90])})")
                continue
            cal = entry.get("calibration") or {}
            extra = f", of which GPTQModel load + quantize {fmt_sig(entry['quantize_seconds'])} s" \
                if entry.get("quantize_seconds") else ""
            what = f" at sparsity {entry['sparsity']:g}" if entry.get("sparsity") else ""
            comp.append(f"{name}{what}: {fmt_sig(entry['seconds'])} s{extra} "
                        f"({cal.get('samples')} × {cal.get('tokens_per_sample')} random calibration tokens)")
        if comp:
            text.append("Compression wall time at this scale: " + "; ".join(comp) + ".")
        parts.append(head + md_table(header, body, "lllr" + "r" * (len(header) - 4)) + "\n" + " ".join(text) + "\n")
    goals = targets_table(data.get("combined"))
    if goals:
        parts.append(goals)
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------- setup facts


def _sorted_set(values) -> list:
    return sorted({v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))},
                  key=lambda v: (str(type(v)), v))


def setup_facts(recs: list[dict], reference: str = DEFAULT_REFERENCE, profile: str | None = None) -> dict:
    """The facts of the setup section, all read from the records."""
    scored = [r for r in recs if r.get("metrics")]
    ref = "/".join(parse_reference(reference))
    fam = defaultdict(list)
    for r in scored:
        fam[catalog.family(r["notebook"])].append(f"{r['notebook']}/{r['run']}")
    sigs = defaultdict(set)
    n_test = set()
    directions = set()
    comet = False
    for r in scored:
        for d, s in r["metrics"].items():
            directions.add(d)
            if isinstance(s.get("n"), int):
                n_test.add(s["n"])
            comet = comet or isinstance(s.get("comet"), (int, float))
            tgt = d.split("-")[1]
            for m, sig in (s.get("signatures") or {}).items():
                sigs[(m, "zh" if tgt == "zh" and m == "bleu" else "other")].add(sig)
    envs = [r.get("environment") or {} for r in recs]
    devices = _sorted_set(f"{(e.get('device') or {}).get('name')}" for e in envs)
    packages = defaultdict(set)
    for e in envs:
        for name, version in (e.get("packages") or {}).items():
            packages[name].add(version)
    params = [r.get("params") or {} for r in scored]
    teachers = {}
    for r in scored:
        if catalog.family(r["notebook"]) == "teacher":
            t = r.get("training") or {}
            p = r.get("params") or {}
            teachers[r["run"]] = {"method": p.get("method"), "examples": t.get("examples"), "steps": t.get("steps"),
                                  "epochs": p.get("epochs"), "learning_rate": p.get("learning_rate"),
                                  "seconds": t.get("seconds"), "trainable_share": t.get("trainable_share"),
                                  "lora_r": p.get("lora_r") if p.get("method") == "lora" else None,
                                  "dropped_test_overlap": r.get("train_dropped_test_overlap")}
    base_models = _sorted_set(p.get("model_id") for r, p in zip(scored, params)
                              if catalog.family(r["notebook"]) in ("base", "teacher"))
    return {
        "profile": profile or _sorted_set(r.get("profile") for r in recs),
        "reference": ref,
        "reference_present": any(f"{r['notebook']}/{r['run']}" == ref for r in scored),
        "n_records": len(recs),
        "n_scored_runs": len(scored),
        "runs_by_family": {k: v for k, v in sorted(fam.items())},
        "base_models": base_models,
        "test_sets": _sorted_set(catalog.testset(r) for r in scored),
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
        "devices": devices,
        "device_kinds": _sorted_set((e.get("device") or {}).get("kind") for e in envs),
        "packages": {k: sorted(v) for k, v in sorted(packages.items())},
        "python": _sorted_set(e.get("python") for e in envs),
        "dates": [min(d), max(d)] if (d := [str(e.get("date"))[:10] for e in envs if e.get("date")]) else [],
        "git_shas": _sorted_set(str(e.get("git_sha"))[:7] for e in envs if e.get("git_sha")),
        "teachers": teachers,
    }


# ----------------------------------------------------------------------------------------------- files


def write(results: str | Path | None = None, profile: str | None = "full", reference: str = DEFAULT_REFERENCE,
          out: str | Path | None = None, params_dir: str | Path = "params") -> list[Path]:
    """Write every table of ``profile`` under ``results`` into ``out`` (default ``<results>/tables``)."""
    from studylib.report.significance import _write_text_atomic

    out = Path(out or records.results_dir(results) / "tables")
    summary = load_summary(summary_path(results, profile))
    sig = read_table(table_path(results, profile))
    recs = records.load_records(results, profile)
    frame, main_md = main_table(summary, sig, reference)
    written = [_write_text_atomic(main_md, out / "main.md"),
               _write_text_atomic(frame.to_csv(index=False) if len(frame) else "", out / "main.csv")]
    from studylib.report.significance import markdown as significance_markdown

    written.append(_write_text_atomic(significance_markdown(sig), out / "significance.md"))
    for metric in ("chrf++", "bleu"):
        written.append(_write_text_atomic(directions_table(summary, sig, metric, reference),
                                          out / f"directions-{metric}.md"))
    written.append(_write_text_atomic(environment_table(recs), out / "environment.md"))
    written.append(_write_text_atomic(commands_table(recs, params_dir, profile or "full"), out / "commands.md"))
    bench = benchmark_data(recs)
    written.append(_write_text_atomic(benchmark_table(bench), out / "benchmark.md"))
    written.append(_write_text_atomic(json.dumps(bench, indent=1, ensure_ascii=False, default=str) + "\n",
                                      out / "benchmark.json"))
    students = students_data(recs, reference)
    written.append(_write_text_atomic(students_table(students), out / "students.md"))
    written.append(_write_text_atomic(json.dumps(students, indent=1, ensure_ascii=False, default=str) + "\n",
                                      out / "students.json"))
    facts = setup_facts(recs, reference, profile)
    written.append(_write_text_atomic(json.dumps(facts, indent=1, ensure_ascii=False, default=str) + "\n",
                                      out / "setup.json"))
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.report.tables", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--profile", choices=records.PROFILES, default="full")
    ap.add_argument("--reference", default=DEFAULT_REFERENCE)
    ap.add_argument("--out", type=Path, default=None, help="default: <results>/tables")
    ap.add_argument("--params-dir", type=Path, default=Path("params"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("studylib").setLevel(logging.INFO)
    for path in write(args.results, args.profile, args.reference, args.out, args.params_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
