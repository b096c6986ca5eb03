"""The summary: one row per run, test set and direction, from the records alone (every table and figure reads it).

:func:`write_summary` writes ``<results>/summary-<profile>.csv``. The readers below give the views the tables and
figures share: the main test set's rows, the scored runs in the study's order with their display names (stale records
marked), and one wide row per run.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from studylib.core import records, what
from studylib.report.markdown import natural, stale_mark, truthy, write_text

EFFICIENCY_FIELDS = ("params", "nonzero_params", "storage_gb", "peak_memory_gb", "time_per_token_ms", "tokens_per_s")
SCORE_COLUMNS = ("testset", "direction", *records.METRICS, *records.FAILURES, "n")


def load_records(results: str | Path | None = None, profile: str | None = None) -> list[dict]:
    """The records under ``<results>/runs`` (of one profile, if given)."""
    root = records.results_dir(results) / "runs"
    out = []
    for path in sorted(root.glob("*/*.json")):
        rec = records.read_record(path)
        if profile is None or rec.get("profile") == profile:
            out.append(rec)
    return out


def summary_table(recs: list[dict]):
    """One row per run, test set and direction (plus the two averages): the table every figure is drawn from.

    Besides the scores and efficiency, each row carries what the run is, as its record states it (``what``:
    family, method, variant, bits, sparsity, depth, recovery, calib_per_direction, ood_total, kd), and ``stale``
    for a record of an older layout (:func:`studylib.core.records.is_stale`). ``testset`` is the record's main test
    set (``wmt22`` for ALMA's layout), ``ood`` for a student's out-of-domain test.
    """
    import pandas as pd

    rows = []
    for rec in recs:
        base = {"notebook": rec["notebook"], "run": rec["run"], "profile": rec["profile"],
                "model_id": rec["params"].get("model_id"), "device": rec["environment"]["device"]["name"]}
        eff = rec.get("efficiency") or {}
        for key in EFFICIENCY_FIELDS:
            base[key] = eff.get(key)
        base["stale"] = records.is_stale(rec)
        stated = rec.get("what") or {}
        base.update({key: stated.get(key) for key in what.COLUMNS})
        # the main test set, then (students) the held-out out-of-domain one
        for testset, metrics, averages in ((stated.get("testset", "wmt22"), rec["metrics"], rec.get("averages", {})),
                                           ("ood", rec.get("ood_metrics") or {}, rec.get("ood_averages") or {})):
            for direction, scores in list(metrics.items()) + list(averages.items()):
                rows.append({**base, "testset": testset, "direction": direction,
                             **{m: scores.get(m) for m in (*records.METRICS, *records.FAILURES)},
                             "n": scores.get("n")})
    return pd.DataFrame(rows)


def summary_path(results: str | Path | None = None, profile: str | None = None) -> Path:
    return records.results_dir(results) / (f"summary-{profile}.csv" if profile else "summary.csv")


def write_summary(results: str | Path | None = None, profile: str | None = None) -> Path:
    """``<results>/summary-<profile>.csv`` from all records of ``profile`` (``summary.csv`` from all records)."""
    table = summary_table(load_records(results, profile))
    return write_text(table.to_csv(index=False), summary_path(results, profile))


def load_summary(path: str | Path):
    """The summary CSV, or an empty table when there is none yet."""
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
    if summary is None or not len(summary) or "testset" not in summary:
        return summary
    return summary[summary["testset"].fillna("") != "ood"]


def runs(summary) -> list[tuple[str, str]]:
    """(notebook, run) of every scored run, in the study's order: family, notebook, run."""
    if summary is None or not len(summary):
        return []
    order = {f: i for i, f in enumerate(what.FAMILY_ORDER)}
    family = dict(summary.drop_duplicates(["notebook", "run"]).set_index(["notebook", "run"])["family"].items())
    return sorted(family, key=lambda k: (order.get(family[k], len(order)), k[0], natural(k[1])))


def labels(keys: list[tuple[str, str]]) -> dict:
    """A display label per run: its name, prefixed with the notebook where two notebooks share a run name."""
    count = defaultdict(int)
    for _, run in keys:
        count[run] += 1
    return {(nb, run): (run if count[run] == 1 else f"{nb}/{run}") for nb, run in keys}


def stale_runs(summary) -> set[tuple[str, str]]:
    """(notebook, run) of the summary's stale records."""
    if summary is None or not len(summary) or "stale" not in summary:
        return set()
    flags = summary.drop_duplicates(["notebook", "run"])
    return {(nb, run) for nb, run, s in zip(flags["notebook"], flags["run"], flags["stale"]) if truthy(s)}


def names(summary, reference: tuple[str, str] | None = None) -> dict:
    """The label of every scored run as tables and figures print it: ``(ref.)`` after the reference, the stale mark
    after a stale record."""
    keys = runs(summary)
    stale = stale_runs(summary)
    return {k: label + (" (ref.)" if k == reference else "") + stale_mark(k in stale)
            for k, label in labels(keys).items()}


def value(summary, notebook: str, run: str, direction: str, column: str):
    rows = summary[(summary["notebook"] == notebook) & (summary["run"] == run) & (summary["direction"] == direction)]
    return rows[column].iloc[0] if len(rows) and column in rows else None


def present_metrics(summary) -> list[str]:
    return [m for m in ("bleu", "chrf++", "comet") if m in summary and summary[m].notna().any()]


def runs_table(summary):
    """One row per scored run: what it is, its efficiency, its ``stale`` flag and ``'<direction>:<metric>'`` scores
    (``'ood <direction>:<metric>'`` for a student's out-of-domain test). Order: :func:`runs`; ``label`` is the
    display name (:func:`labels`)."""
    import pandas as pd

    main = main_rows(summary)
    keys = runs(main)
    if not keys:
        return pd.DataFrame()
    meta = main.drop_duplicates(["notebook", "run"]).set_index(["notebook", "run"])[
        [c for c in summary.columns if c not in SCORE_COLUMNS and c not in ("notebook", "run")]]
    out = meta.loc[keys].copy()
    ood = summary[summary["testset"] == "ood"] if "testset" in summary else summary.iloc[0:0]
    for prefix, part in (("", main), ("ood ", ood)):
        for metric in ("bleu", "chrf++", "comet"):
            if metric not in part or not len(part):
                continue
            wide = part.pivot_table(index=["notebook", "run"], columns="direction", values=metric, aggfunc="first")
            for direction in wide.columns:
                out[f"{prefix}{direction}:{metric}"] = wide[direction].reindex(out.index)
    out["label"] = list(labels(keys).values())
    for col in what.AXES:
        if col not in out:
            out[col] = None
    return out.reset_index()

