"""Is a run's score different from the reference's? Paired bootstrap on the outputs stored in the records.

For every run of a profile (the reference excepted) and every direction it was scored on, the run's hypotheses
and its reference's are resampled together (Koehn, 2004; :func:`studylib.core.metrics.paired_bootstrap`) -- but only
where the two records hold the *same* source segments and references, in the same order; anything else is
reported as not comparable, never tested. The direction groups (``xx-en``, ``en-xx``) are tested on the mean of the
per-direction corpus scores (the records' ``averages``): each resample draws every direction's segments anew, the
same draws for both systems. A run's reference is the table's (``--reference``), except for a run made from another
saved teacher: that teacher, decoded as the run was (:func:`reference_for`).

``delta = run - reference`` with its 95 % percentile interval; ``p_value`` is two-sided
(:func:`~studylib.core.metrics.two_sided_p`: the normal approximation from the resampled deltas' standard error) and
``p_holm`` that p adjusted by Holm's step-down method over every comparable test of the table (all runs, directions,
groups and metrics: one family); a difference is significant when ``p_holm < alpha`` (0.05).

    python -m studylib.report.significance [--results results] [--profile full] [--reference 01_teacher/gemma3-270m-lora]

writes ``<results>/significance-<profile>.csv`` and ``<results>/tables/significance.md``. Rows whose inputs (the
outputs of both runs, the metric, the resampling settings) did not change since the last run are reused, so a
re-run after one new record only tests that record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path

import numpy as np

from studylib.core import metrics as M
from studylib.core import records
from studylib.core.languages import DIRECTIONS, EN_XX, XX_EN, parse_direction
from studylib.report import teachers
from studylib.report.markdown import METRIC_LABEL, arrow, md_table, stale_mark, stale_note, truthy, write_text
from studylib.report.summary import load_records

log = logging.getLogger(__name__)

DEFAULT_REFERENCE = "01_teacher/gemma3-270m-lora"
DEFAULT_METRICS = ("bleu", "chrf++")
ALPHA = 0.05
N_SAMPLES = 1000
SEED = 12345
GROUPS = {"xx-en": XX_EN, "en-xx": EN_XX}
COLUMNS = ["notebook", "run", "reference", "direction", "metric", "comparable", "reason", "n", "score", "ref_score",
           "delta", "ci_low", "ci_high", "p_value", "p_holm", "significant", "alpha", "n_samples", "seed", "test",
           "digest"]
# what the p-values are (part of every row's digest: a table made by another test is recomputed, never reused)
TEST = "paired bootstrap; two-sided p from the bootstrap standard error; Holm over the table"
NOT_SIGNIFICANT = "†"
NOT_COMPARABLE = "°"


def parse_reference(reference: str) -> tuple[str, str]:
    """``"01_teacher/gemma3-270m-lora"`` -> ``("01_teacher", "gemma3-270m-lora")`` (``.json`` optional)."""
    ref = str(reference).removesuffix(".json")
    notebook, _, run = ref.partition("/")
    if not notebook or not run or "/" in run:
        raise ValueError(f"reference must look like '<notebook>/<run>', got {reference!r}")
    return notebook, run


def reference_row(table, reference):
    """The reference's row of a runs table (:func:`studylib.report.summary.runs_table`), or None when it is absent."""
    ref = parse_reference(reference)
    hit = table[(table["notebook"] == ref[0]) & (table["run"] == ref[1])]
    return hit.iloc[0] if len(hit) else None


def key(record: dict) -> str:
    return f"{record['notebook']}/{record['run']}"


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:20]


def check_aligned(run: dict, reference: dict, direction: str) -> str | None:
    """None when both records hold outputs of ``direction`` on the same sources and references, decoded with the same
    knobs (a repetition penalty or token cap moves scores by itself); else why not."""
    a = (run.get("outputs") or {}).get(direction)
    b = (reference.get("outputs") or {}).get(direction)
    mine, theirs = teachers.decoding_of(run), teachers.decoding_of(reference)
    if mine != theirs:
        return f"not comparable: decoded with {teachers.knobs(mine)}, the other with {teachers.knobs(theirs)}"
    if not run.get("outputs"):
        return "no stored outputs"
    if not reference.get("outputs"):
        return "the reference stores no outputs"
    if a is None:
        return f"no stored outputs for {direction}"
    if b is None:
        return f"the reference was not evaluated on {direction}"
    for field in ("src", "ref", "hyp"):
        if not isinstance(a.get(field), list) or not isinstance(b.get(field), list):
            return f"outputs lack '{field}'"
    if len(a["src"]) != len(b["src"]) or a["src"] != b["src"]:
        return "not comparable: the source segments differ"
    if a["ref"] != b["ref"]:
        return "not comparable: the references differ"
    if not (len(a["hyp"]) == len(a["src"]) == len(b["hyp"])):
        return "not comparable: hypotheses and sources differ in number"
    return None


def _row(run: dict, ref_key: str, direction: str, metric: str, **values) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(notebook=run["notebook"], run=run["run"], reference=ref_key, direction=direction, metric=metric)
    row.update(values)
    return row


def _result_row(run, ref_key, direction, metric, result, n, alpha, digest):
    """A tested row; ``p_holm`` and ``significant`` are set for the whole table (:func:`adjust`)."""
    return _row(run, ref_key, direction, metric, comparable=True, reason="", n=n, score=result["score_a"],
                ref_score=result["score_b"], delta=result["delta"], ci_low=result["ci_low"],
                ci_high=result["ci_high"], p_value=result["p_value"], alpha=alpha, n_samples=result["n_samples"],
                seed=result["seed"], test=TEST, digest=digest)


def adjust(rows: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Holm's adjustment over every comparable row (one family: the table), and each row's significance from it."""
    tested = [r for r in rows if truthy(r.get("comparable"))]
    for r, p in zip(tested, M.holm([r["p_value"] for r in tested])):
        r["p_holm"], r["significant"] = p, bool(p < alpha)
    return rows


def compare(run: dict, reference: dict, metrics=DEFAULT_METRICS, n_samples: int = N_SAMPLES, seed: int = SEED,
            alpha: float = ALPHA, cache: dict | None = None) -> list[dict]:
    """Rows of the significance table for one run against the reference (every direction, both groups)."""
    cache = cache or {}
    ref_key = key(reference)
    rows = []
    directions = [d for d in DIRECTIONS if d in (run.get("metrics") or {})]
    aligned = {d: check_aligned(run, reference, d) for d in directions}
    digests = {}
    for d in directions:
        if aligned[d] is None:
            a, b = run["outputs"][d], reference["outputs"][d]
            digests[d] = _digest(a["src"], a["ref"], a["hyp"], b["hyp"], n_samples, seed, alpha, TEST)
    for metric in metrics:
        for d in directions:
            if aligned[d] is not None:
                rows.append(_row(run, ref_key, d, metric, comparable=False, reason=aligned[d]))
                continue
            digest = _digest(digests[d], metric)
            if digest in cache:
                rows.append({**cache[digest], "notebook": run["notebook"], "run": run["run"], "reference": ref_key})
                continue
            a, b = run["outputs"][d], reference["outputs"][d]
            result = M.paired_bootstrap(a["hyp"], b["hyp"], a["ref"], metric=metric, tgt_lang=parse_direction(d)[1],
                                        n_samples=n_samples, seed=seed)
            recorded = (run["metrics"][d] or {}).get(metric)
            if isinstance(recorded, (int, float)) and abs(recorded - result["score_a"]) > 1e-6:
                log.warning("%s %s %s: stored outputs score %.4f, the record says %.4f", key(run), d, metric,
                            result["score_a"], recorded)
            rows.append(_result_row(run, ref_key, d, metric, result, len(a["hyp"]), alpha, digest))
        for group, members in GROUPS.items():
            present = [d for d in members if d in directions]
            if not present:
                continue
            bad = [f"{d}: {aligned[d]}" for d in present if aligned[d] is not None]
            if bad:
                rows.append(_row(run, ref_key, group, metric, comparable=False, reason="; ".join(bad)))
                continue
            digest = _digest([digests[d] for d in present], metric, "mean")
            if digest in cache:
                rows.append({**cache[digest], "notebook": run["notebook"], "run": run["run"], "reference": ref_key})
                continue
            items = [(run["outputs"][d]["hyp"], reference["outputs"][d]["hyp"], run["outputs"][d]["ref"],
                      parse_direction(d)[1]) for d in present]
            result = M.paired_bootstrap_mean(items, metric, n_samples=n_samples, seed=seed)
            n = sum(len(run["outputs"][d]["hyp"]) for d in present)
            rows.append(_result_row(run, ref_key, group, metric, result, n, alpha, digest))
    return rows


def significance_table(recs: list[dict], reference: str = DEFAULT_REFERENCE, metrics=DEFAULT_METRICS,
                       n_samples: int = N_SAMPLES, seed: int = SEED, alpha: float = ALPHA, previous=None):
    """The significance table (a DataFrame, :data:`COLUMNS`) of every scored run against ``reference``.

    ``previous``: an earlier table whose rows are reused where their digest matches. Without the reference
    record the table is empty (and a warning says why).
    """
    import pandas as pd

    by_key = {key(r): r for r in recs}
    ref_key = "/".join(parse_reference(reference))
    if ref_key not in by_key:
        log.warning("reference %s has no record: no significance tests", ref_key)
        return pd.DataFrame(columns=COLUMNS)
    cache = {}
    if previous is not None and len(previous):
        for row in previous.to_dict("records"):
            if isinstance(row.get("digest"), str) and row.get("comparable") in (True, "True"):
                cache[row["digest"]] = row
    rows = []
    for rec in recs:
        if key(rec) == ref_key or not rec.get("metrics"):
            continue
        rows.extend(compare(rec, reference_for(rec, by_key, ref_key), metrics, n_samples, seed, alpha, cache))
    return pd.DataFrame(adjust(rows, alpha), columns=COLUMNS)


def reference_for(rec: dict, by_key: dict, default: str) -> dict:
    """The record ``rec`` is tested against: for a run made from a saved teacher, that teacher's evaluation decoded as
    the run was where one exists, else the teacher's own record (:func:`studylib.report.teachers.teacher_of`), so a
    method on the full fine-tuned teacher is set against that teacher; for a teacher's own evaluations and every run
    made from no saved teacher, the table's reference ``default``."""
    if teachers.is_evaluation(rec):
        return by_key[default]
    return teachers.teacher_of(rec, by_key, default) or by_key[default]


def marks(table) -> dict:
    """(notebook, run, direction, metric) -> '' (significant), :data:`NOT_SIGNIFICANT` or :data:`NOT_COMPARABLE`."""
    out = {}
    if table is None or not len(table):
        return out
    for row in table.to_dict("records"):
        k = (row["notebook"], row["run"], row["direction"], row["metric"])
        if not truthy(row["comparable"]):
            out[k] = NOT_COMPARABLE
        else:
            out[k] = "" if truthy(row["significant"]) else NOT_SIGNIFICANT
    return out


def alpha_of(table) -> float:
    """The significance level the table was computed at (:data:`ALPHA` for an empty table)."""
    alphas = table["alpha"].dropna() if table is not None and len(table) else []
    return float(alphas.iloc[0]) if len(alphas) else ALPHA


# ----------------------------------------------------------------------------------------------- Markdown


def _fmt_delta(row) -> str:
    if not truthy(row["comparable"]):
        return "n/c"
    text = f"{row['delta']:+.1f}".replace("-", "−")
    return text if truthy(row["significant"]) else text + NOT_SIGNIFICANT


def markdown(table, metrics=DEFAULT_METRICS, alpha: float = ALPHA, stale=frozenset()) -> str:
    """Per metric: one row per run, one column per direction group and direction; cells are ``run - reference``.
    ``stale``: (notebook, run) of the stale records, marked after their names."""
    if table is None or not len(table):
        return "*No significance tests: the reference run has no record yet, or no other run has scores.*\n"
    refs = list(dict.fromkeys(table["reference"]))
    n_samples = table["n_samples"].dropna()
    parts = []
    for metric in metrics:
        sub = table[table["metric"] == metric]
        if not len(sub):
            continue
        columns = [g for g in GROUPS if g in set(sub["direction"])] + [d for d in DIRECTIONS if d in set(sub["direction"])]
        # several references (runs made from another teacher are set against it): each row names its own
        header = ["Run"] + (["Reference"] if len(refs) > 1 else []) + [arrow(c) for c in columns]
        body = []
        for (nb, run), rows in sub.groupby(["notebook", "run"], sort=False):
            rows = rows.to_dict("records")
            cells = {r["direction"]: _fmt_delta(r) for r in rows}
            own = [rows[0]["reference"]] if len(refs) > 1 else []
            body.append([f"{run}{stale_mark((nb, run) in stale)}"] + own + [cells.get(c, "—") for c in columns])
        label = METRIC_LABEL.get(metric, metric)
        title = f"run − reference ({refs[0]})" if len(refs) == 1 else "run − its reference"
        parts.append(f"**{label}, {title}**\n\n"
                     + md_table(header, body, align="l" * (1 + (len(refs) > 1)) + "r" * len(columns)))
    samples = f"{int(n_samples.iloc[0])} resamples" if len(n_samples) else "resamples"
    tests = int(table["comparable"].map(truthy).sum())
    parts.append(f"{NOT_SIGNIFICANT}: not significantly different from the reference (paired bootstrap, {samples}; "
                 f"two-sided p from the bootstrap standard error, Holm-adjusted over the table's {tests} tests, "
                 f"p ≥ {alpha:g}). n/c: not comparable (the records' source segments or references differ, they "
                 f"were decoded with different knobs, or outputs were not stored). Direction groups: the mean of the "
                 f"per-direction corpus scores, resampled per direction."
                 + (" " + stale_note(True) if stale & set(zip(table["notebook"], table["run"])) else "")
                 + "\n")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------- files


def table_path(results: str | Path | None, profile: str | None) -> Path:
    return records.results_dir(results) / (f"significance-{profile}.csv" if profile else "significance.csv")


def read_table(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    if "significant" in table:
        table["significant"] = table["significant"].map(truthy)
    if "comparable" in table:
        table["comparable"] = table["comparable"].map(truthy)
    return table


def write(results: str | Path | None = None, profile: str | None = "full", reference: str = DEFAULT_REFERENCE,
          tables: str | Path | None = None, metrics=DEFAULT_METRICS, n_samples: int = N_SAMPLES, seed: int = SEED,
          alpha: float = ALPHA) -> tuple[Path, Path]:
    """Test every run of ``profile`` under ``results`` against ``reference``; write the CSV and the Markdown table."""
    csv_path = table_path(results, profile)
    md_path = Path(tables or records.results_dir(results) / "tables") / "significance.md"
    recs = load_records(results, profile)
    table = significance_table(recs, reference, metrics, n_samples, seed, alpha, previous=read_table(csv_path))
    stale = {(r["notebook"], r["run"]) for r in recs if records.is_stale(r)}
    write_text(table.to_csv(index=False), csv_path)
    write_text(markdown(table, metrics, alpha, stale), md_path)
    return csv_path, md_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.report.significance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=None, help="results root (default: $STUDYLIB_RESULTS or results)")
    ap.add_argument("--profile", choices=records.PROFILES, default="full")
    ap.add_argument("--reference", default=DEFAULT_REFERENCE, help="<notebook>/<run> every run is tested against")
    ap.add_argument("--tables", type=Path, default=None, help="where significance.md goes (default: <results>/tables)")
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    ap.add_argument("--n-samples", type=int, default=N_SAMPLES)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--alpha", type=float, default=ALPHA)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("studylib").setLevel(logging.INFO)
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    for path in write(args.results, args.profile, args.reference, args.tables, metrics, args.n_samples, args.seed,
                      args.alpha):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
