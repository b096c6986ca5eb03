"""One sweep at a glance, for the ablation notebooks: its settings' scores and costs, and chrF++ against its axis.

:func:`view` reads the records of one sweep (``what.sweep.parent``) under ``<results>/runs/<notebook>/``, as the
notebook writes them, setting by setting, so a notebook can show what its sweep has given so far.
"""

from __future__ import annotations

import numbers
from pathlib import Path

from studylib.core import records
from studylib.report.markdown import GROUP_LABEL, GROUPS, METRIC_LABEL, STALE, STALE_MEANING, natural
from studylib.report.plot import colours, short, x_ticks

SCORE_OF = {f"{GROUP_LABEL[group]} {METRIC_LABEL[metric]}": (group, metric) for metric in ("chrf++", "bleu")
            for group in GROUPS}
SCORES = tuple(SCORE_OF)
COSTS = ("storage_gb", "peak_memory_gb", "time_per_token_ms")


def sweep_records(notebook: str, parent: str, results=None, profile: str | None = None) -> list[dict]:
    """The records of the sweep ``parent`` under ``<results>/runs/<notebook>/`` (of one profile, if given)."""
    out = []
    for path in sorted((records.results_dir(results) / "runs" / notebook).glob("*.json")):
        rec = records.read_record(path)
        sweep = (rec.get("what") or {}).get("sweep") or {}
        if sweep.get("parent") == parent and (profile is None or rec.get("profile") == profile):
            out.append(rec)
    return out


def _is_number(v) -> bool:
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


def numeric_axis(table, axes: list[str]) -> str | None:
    """The axis every setting gives a number, the one with the most distinct values (None when no axis is numeric)."""
    numeric = [a for a in axes if table[a].map(_is_number).all()]
    return max(numeric, key=lambda a: table[a].nunique(), default=None)


def sweep_table(recs: list[dict]):
    """One row per setting: its axes' values, chrF++ and BLEU per direction group, the costs the records hold, the
    run and whether its record is stale; in the order of the axes' values."""
    import pandas as pd

    axes = list(dict.fromkeys(a for r in recs for a in r["what"]["sweep"]["axes"]))
    rows = []
    for rec in recs:
        row = {a: rec["what"]["sweep"]["axes"].get(a) for a in axes}
        for column, (group, metric) in SCORE_OF.items():
            row[column] = (rec.get("averages") or {}).get(group, {}).get(metric)
        eff = rec.get("efficiency") or {}
        row.update({c: eff.get(c) for c in COSTS})
        row.update(run=rec["run"], stale=records.is_stale(rec))
        rows.append(row)
    rows.sort(key=lambda row: tuple(natural(str(row[a])) for a in axes))
    table = pd.DataFrame(rows, columns=[*axes, *SCORES, *COSTS, "run", "stale"])
    return table.drop(columns=[c for c in COSTS if table[c].isna().all()])


def sweep_figure(table, axes: list[str], x: str, title: str):
    """chrF++ against ``x`` for xx->en and en->xx, one line per combination of the other axes (drawn in the
    reports' style without changing the caller's matplotlib settings or backend)."""
    import matplotlib.pyplot as plt

    others = [a for a in axes if a != x]
    lines = list(table.groupby(others, sort=False)) if others else [((), table)]
    palette = colours(len(lines))
    with plt.style.context("seaborn-v0_8-whitegrid"):
        fig, panels = plt.subplots(1, 2, figsize=(8, 3), sharex=True)
    for ax, group in zip(panels, GROUPS):
        for (key, g), colour in zip(lines, palette):
            key = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{short(v)}" for v in key) or "chrF++"
            if g["stale"].any():
                label += f" {STALE}"
            g = g.sort_values(x)
            ax.plot(g[x], g[f"{GROUP_LABEL[group]} {METRIC_LABEL['chrf++']}"], marker="o", color=colour, label=label)
        ax.set_title(GROUP_LABEL[group])
        ax.set_xlabel(x)
        ax.set_ylabel(METRIC_LABEL["chrf++"])
        x_ticks(ax, table[x])
    fig.suptitle(title, fontweight="bold")
    panels[1].legend(fontsize=7, title=" × ".join(others) or None, title_fontsize=7, loc="upper left",
                     bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def view(notebook: str, parent: str, results=None, profile: str | None = None):
    """``(table, figure or None, message)`` of the sweep ``parent`` of ``notebook``: :func:`sweep_table`, chrF++
    against the sweep's numeric axis (:func:`sweep_figure`; None without records or without a numeric axis), and a
    line saying what there is (how many settings, how many stale)."""
    import pandas as pd

    recs = sweep_records(notebook, parent, results, profile)
    where = Path(records.results_dir(results)) / "runs" / notebook
    if not recs:
        return (pd.DataFrame(columns=[*SCORES, "run", "stale"]), None,
                f"No record of the sweep {parent!r} under {where} yet.")
    table = sweep_table(recs)
    axes = [c for c in table.columns if c not in (*SCORES, *COSTS, "run", "stale")]
    x = numeric_axis(table, axes)
    stale = int(table["stale"].sum())
    message = (f"{len(table)} setting{'s' if len(table) != 1 else ''} of {notebook}/{parent}"
               + (f"; {stale} stale ({STALE}: {STALE_MEANING})" if stale else "") + ".")
    if x is None:
        return table, None, message + " No numeric axis to draw against."
    return table, sweep_figure(table, axes, x, f"{notebook}: {parent}"), message
