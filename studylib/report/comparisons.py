"""Is one method better than another? Paired bootstrap between the pairs of runs the paper orders.

The pairs are declared as data (:data:`PAIRS`: record keys ``notebook/run`` and a short claim). For each pair, direction
group and metric, ``delta = A - B`` of the mean of the per-direction corpus scores with its 95 % percentile interval
and two-sided p (:func:`studylib.core.metrics.paired_bootstrap_mean`), tested only where both records hold the same
segments and references (:func:`studylib.report.significance.check_aligned`); anything else is "not comparable" with
the reason, and a pair with a missing record is listed as absent. ``p_holm``: Holm over every tested row of this table
(one family, apart from the significance table's).

    python -m studylib.report.comparisons [--results results] [--profile full]

writes ``<results>/comparisons-<profile>.csv``; :mod:`studylib.report.tables` makes ``comparisons.md`` and
``comparisons.json`` from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studylib.core import metrics as M
from studylib.core import records
from studylib.core.languages import parse_direction
from studylib.report import significance as S
from studylib.report.markdown import METRIC_LABEL, arrow, join, md_table, read_json, truthy, write_text
from studylib.report.summary import load_records

TEST = "paired bootstrap of the group mean; two-sided p from the bootstrap standard error; Holm over the table"
COLUMNS = ["claim", "a", "b", "group", "metric", "status", "reason", "n", "score_a", "score_b", "delta", "ci_low",
           "ci_high", "p_value", "p_holm", "significant", "alpha", "n_samples", "seed", "test"]


def _depth_pairs():
    return [(f"iterative vs middle layer pruning, {d} layers, after recovery",
             f"27_prune_depth/teacher-lora-iterative-d{d}-after", f"27_prune_depth/teacher-lora-middle-d{d}-after")
            for d in (2, 4, 6, 8)]


# (claim, A, B): the orderings the paper states or the issues ask about
PAIRS = (
    *_depth_pairs(),
    ("SparseGPT vs Wanda, 50 %", "22_sparsegpt/teacher-lora-sparsegpt50", "20_wanda/teacher-lora-wanda50"),
    ("SparseGPT: own implementation vs llm-compressor's", "22_sparsegpt/teacher-lora-sparsegpt50-own",
     "22_sparsegpt/teacher-lora-sparsegpt50"),
    ("DSnoT vs Wanda, 50 %", "23_dsnot/teacher-lora-dsnot-wanda50", "20_wanda/teacher-lora-wanda50"),
    ("Wanda 50 % + GPTQ W4 vs Wanda 50 %", "24_wanda_gptq/teacher-lora-wanda50-gptq4", "20_wanda/teacher-lora-wanda50"),
    ("GPTQ W4 vs NF4", "12_gptq/teacher-lora-gptq-w4g128", "11_bnb_nf4/teacher-lora-nf4"),
    ("SmoothQuant+NF4 vs NF4", "14_smoothquant_nf4/teacher-lora-smoothquant-nf4-alpha0.5",
     "11_bnb_nf4/teacher-lora-nf4"),
    ("SmoothQuant W8A8 vs LLM.int8()", "13_smoothquant/teacher-lora-smoothquant-alpha0.5",
     "10_bnb_int8/teacher-lora-int8"),
    ("head pruning: per layer vs global, 25 %", "26_head_pruning/teacher-lora-heads25",
     "26_head_pruning/teacher-lora-heads25-global"),
    ("student A (teacher, NF4 + QLoRA) vs student B (middle-8 pruned, NF4 + QLoRA)", "31_model_a/teacher-nf4-qlora",
     "32_model_b/middle8-nf4-qlora"),
)


def _row(claim, a, b, group, metric, **values) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(claim=claim, a=a, b=b, group=group, metric=metric, **values)
    return row


def compare_pair(claim: str, a: dict, b: dict, metrics=S.DEFAULT_METRICS, n_samples: int = S.N_SAMPLES,
                 seed: int = S.SEED, alpha: float = S.ALPHA) -> list[dict]:
    """Rows for one pair of records: per direction group and metric, A - B (or why it is not comparable)."""
    ka, kb = S.key(a), S.key(b)
    rows = []
    for metric in metrics:
        for group, members in S.GROUPS.items():
            present = [d for d in members if d in (a.get("metrics") or {}) or d in (b.get("metrics") or {})]
            if not present:
                rows.append(_row(claim, ka, kb, group, metric, status="not comparable", reason="no scores"))
                continue
            bad = [f"{d}: {why}" for d in present if (why := S.check_aligned(a, b, d))]
            if bad:
                rows.append(_row(claim, ka, kb, group, metric, status="not comparable", reason="; ".join(bad)))
                continue
            items = [(a["outputs"][d]["hyp"], b["outputs"][d]["hyp"], a["outputs"][d]["ref"], parse_direction(d)[1])
                     for d in present]
            r = M.paired_bootstrap_mean(items, metric, n_samples=n_samples, seed=seed)
            rows.append(_row(claim, ka, kb, group, metric, status="tested", reason="",
                             n=sum(len(a["outputs"][d]["hyp"]) for d in present), score_a=r["score_a"],
                             score_b=r["score_b"], delta=r["delta"], ci_low=r["ci_low"], ci_high=r["ci_high"],
                             p_value=r["p_value"], alpha=alpha, n_samples=r["n_samples"], seed=r["seed"], test=TEST))
    return rows


def comparisons_table(recs: list[dict], pairs=PAIRS, metrics=S.DEFAULT_METRICS, n_samples: int = S.N_SAMPLES,
                      seed: int = S.SEED, alpha: float = S.ALPHA):
    """Every pair of :data:`PAIRS` tested (a DataFrame, :data:`COLUMNS`), Holm-adjusted over the tested rows."""
    import pandas as pd

    by_key = {S.key(r): r for r in recs}
    rows = []
    for claim, ka, kb in pairs:
        missing = [k for k in (ka, kb) if k not in by_key]
        if missing:
            rows.append(_row(claim, ka, kb, None, None, status="absent", reason="no record: " + ", ".join(missing)))
            continue
        rows.extend(compare_pair(claim, by_key[ka], by_key[kb], metrics, n_samples, seed, alpha))
    tested = [r for r in rows if r["status"] == "tested"]
    for r, p in zip(tested, M.holm([r["p_value"] for r in tested])):
        r["p_holm"], r["significant"] = p, bool(p < alpha)
    return pd.DataFrame(rows, columns=COLUMNS)


# ----------------------------------------------------------------------------------------------- Markdown


def _run(k: str) -> str:
    return k.partition("/")[2]


def verdict(row: dict) -> str:
    """Which of the pair is higher, or that no difference was found, with Holm's p."""
    if row["status"] == "absent":
        return f"absent ({row['reason']})"
    if row["status"] != "tested":
        return f"not comparable ({row['reason']})"
    p = f"Holm p={row['p_holm']:.2g}"
    if not row["significant"]:
        return f"no difference found ({p})"
    return f"{_run(row['a'] if row['delta'] > 0 else row['b'])} higher ({p})"


def _delta(row: dict) -> str:
    if row["status"] != "tested":
        return "—"
    text = f"{row['delta']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    return text.replace("-", "−")


def markdown(table) -> str:
    """One row per pair, group and metric: A − B with its interval and the verdict."""
    if table is None or not len(table):
        return "*No comparisons between methods computed yet.*\n"
    header = ["Claim", "A", "B", "Group", "Metric", "A − B [95 % CI]", "Verdict"]
    body = []
    for row in table.to_dict("records"):
        group = arrow(row["group"]) if isinstance(row["group"], str) else "—"
        metric = METRIC_LABEL.get(row["metric"], "—") if isinstance(row["metric"], str) else "—"
        body.append([row["claim"], _run(row["a"]), _run(row["b"]), group, metric, _delta(row), verdict(row)])
    n = int((table["status"] == "tested").sum())
    samples = table["n_samples"].dropna()
    note = (f"Paired bootstrap of the mean of the per-direction corpus scores ("
            f"{int(samples.iloc[0]) if len(samples) else S.N_SAMPLES} resamples); two-sided p from the bootstrap "
            f"standard error, Holm-adjusted over this table's {n} tests (one family).")
    return md_table(header, body, align="lllllrl") + "\n" + note + "\n"


def comparisons_data(table) -> list[dict]:
    """The chrF++ rows as JSON for the paper's sentence: claim, group, verdict."""
    if table is None or not len(table):
        return []
    keep = table[(table["metric"] == "chrf++") | (table["status"] == "absent")]
    return [{"claim": r["claim"], "group": r["group"] if isinstance(r["group"], str) else None, "status": r["status"],
             "verdict": verdict(r)}
            for r in keep.to_dict("records")]


def text_comparisons(ctx) -> str:
    """One sentence per pair from ``<tables>/comparisons.json`` (chrF++ per direction group)."""
    rows = read_json(ctx.tables / "comparisons.json") or []
    if not rows:
        return "No comparison between methods is declared."
    claims = {}
    for r in rows:
        claims.setdefault(r["claim"], []).append(r)
    parts = []
    for claim, items in claims.items():
        said = [f"{arrow(r['group'])}: {r['verdict']}" if r["group"] else r["verdict"] for r in items]
        parts.append(f"{claim}: " + join(said) + ".")
    return "In chrF++ (mean over each direction group), " + " ".join(parts)


# ----------------------------------------------------------------------------------------------- files


def table_path(results: str | Path | None, profile: str | None) -> Path:
    return records.results_dir(results) / (f"comparisons-{profile}.csv" if profile else "comparisons.csv")


def read_table(path: str | Path):
    """The comparisons CSV, or None when there is none."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    table["significant"] = table["significant"].map(lambda v: None if pd.isna(v) else truthy(v))
    return table


def write(results: str | Path | None = None, profile: str | None = "full", n_samples: int = S.N_SAMPLES,
          seed: int = S.SEED, alpha: float = S.ALPHA) -> list[Path]:
    """Test every pair of :data:`PAIRS` among the records of ``profile``; write the CSV."""
    table = comparisons_table(load_records(results, profile), PAIRS, S.DEFAULT_METRICS, n_samples, seed, alpha)
    return [write_text(table.to_csv(index=False), table_path(results, profile))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.report.comparisons", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=None, help="results root (default: $STUDYLIB_RESULTS or results)")
    ap.add_argument("--profile", choices=records.PROFILES, default="full")
    args = ap.parse_args(argv)
    for path in write(args.results, args.profile):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
