"""The summary: one row per run, test set and direction, from the records alone (every table and figure reads it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from studylib.core import records, what

EFFICIENCY_FIELDS = ("params", "nonzero_params", "storage_gb", "peak_memory_gb", "time_per_token_ms", "tokens_per_s")


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
                             **{m: scores.get(m) for m in records.METRICS}, "n": scores.get("n")})
    return pd.DataFrame(rows)


def write_summary(results: str | Path | None = None, profile: str | None = None) -> Path:
    """``<results>/summary.csv`` from all records (of one profile, if given)."""
    table = summary_table(load_records(results, profile))
    path = records.results_dir(results) / ("summary.csv" if profile is None else f"summary-{profile}.csv")
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.fchmod(fd, records.FILE_MODE)
    os.close(fd)
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
