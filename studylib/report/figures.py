"""The study's figures, drawn from the summary table (and the significance table) only -- never from model outputs.

    python -m studylib.report.figures [--results results] [--profile full] [--out figures] [--reference 01_teacher/...]

Each figure is saved as ``<out>/<name>.pdf`` and ``.png``; ``<out>/figures.json`` lists every figure with its
caption, status and, for a figure that could not be drawn yet, the reason (e.g. no GPTQ sweep recorded yet). A
figure is never drawn from fewer points than it needs, and a stale file of a skipped figure is removed.

Which runs feed which figure (the columns come from :mod:`studylib.report.catalog` via the summary):

``quality_by_direction``  every scored run: chrF++ per direction, coloured by the difference to the reference.
``pareto``                every scored run: quality against peak memory and against time per token; the Pareto
                          frontier (no other run is both cheaper and better) is computed and marked.
``gptq_bits``             runs whose only step is ``gptq``, grouped by variant: bits against quality and memory.
``calibration``           calibrated runs (``calib_per_direction``), grouped by variant and the other axes.
``prune_depth``           layer-pruned runs (``depth``), before (``recovery`` none) and after recovery.
``ood_size``              students (``ood_total``): out-of-domain training pairs against in-domain and OOD quality.
``efficiency_7b``         the 7B-architecture benchmark (notebook 40), from ``<tables>/benchmark.json`` (written by
                          :mod:`studylib.report.tables` from its record): each format's times and memory relative to fp16,
                          batch-1 floor marked.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studylib.report import catalog
from studylib.core import records
from studylib.core.languages import DIRECTIONS
from studylib.report.significance import DEFAULT_REFERENCE, NOT_SIGNIFICANT, parse_reference, read_table, table_path
from studylib.report.tables import (labels, load_benchmark, load_summary, main_rows, reference_row, runs, significance_marks,
                     summary_path)

log = logging.getLogger(__name__)

QUALITY = "chrf++"
GROUPS = ("xx-en", "en-xx")
GROUP_LABEL = {"xx-en": "xx→en", "en-xx": "en→xx"}
METRIC_LABEL = {"chrf++": "chrF++", "bleu": "BLEU", "chrf": "chrF", "comet": "COMET"}
COSTS = (("peak_memory_gb", "Peak memory (GB)"), ("time_per_token_ms", "Time per token (ms)"))
FAMILY_PALETTE = {"base": "#7f7f7f", "teacher": "#1f77b4", "quantization": "#ff7f0e", "pruning": "#2ca02c",
                  "distillation": "#9467bd", "other": "#8c564b"}
FAMILY_MARKERS = {"base": "s", "teacher": "D", "quantization": "o", "pruning": "^", "distillation": "P", "other": "X"}


class Skip(Exception):
    """A figure that cannot be drawn from the records there are (yet)."""


@dataclass
class FigureResult:
    name: str
    title: str
    caption: str = ""
    status: str = "skipped"  # drawn | skipped
    reason: str = ""
    files: list = field(default_factory=list)
    data: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- data


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def runs_table(summary):
    """One row per scored run: what it is, its efficiency, and ``'<direction>:<metric>'`` scores (``'ood <dir>:..'``
    for a student's out-of-domain test). Order: family, notebook, run; ``label`` is the display name."""
    import pandas as pd

    main = main_rows(summary)
    keys = runs(main)
    if not keys:
        return pd.DataFrame()
    names = labels(keys)
    score_cols = {"testset", "direction", "bleu", "chrf", "chrf++", "comet", "n"}
    meta_cols = [c for c in summary.columns if c not in score_cols]
    meta = main.drop_duplicates(["notebook", "run"]).set_index(["notebook", "run"])[
        [c for c in meta_cols if c not in ("notebook", "run")]]
    out = meta.loc[keys].copy()
    ood = summary[summary["testset"] == "ood"] if "testset" in summary else summary.iloc[0:0]
    for prefix, part in (("", main), ("ood ", ood)):
        for metric in ("bleu", "chrf++", "comet"):
            if metric not in part or not len(part):
                continue
            wide = part.pivot_table(index=["notebook", "run"], columns="direction", values=metric, aggfunc="first")
            for direction in wide.columns:
                out[f"{prefix}{direction}:{metric}"] = wide[direction].reindex(out.index)
    out["label"] = [names[k] for k in out.index]
    for col in catalog.AXES:
        if col not in out:
            out[col] = None
    return out.reset_index()


def pareto_front(costs, qualities) -> list[int]:
    """Indices of the points no other point dominates (cost no higher and quality no lower, one strictly), sorted
    by cost. Points with a missing value are left out."""
    pts = [(i, float(c), float(q)) for i, (c, q) in enumerate(zip(costs, qualities))
           if not _missing(c) and not _missing(q)]
    front = []
    for i, c, q in pts:
        dominated = any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for _, c2, q2 in pts)
        if not dominated:
            front.append((c, -q, i))
    return [i for _, _, i in sorted(front)]


def _sweep_groups(table, x: str, exclude=()):
    """Groups of runs that differ only in ``x`` (and the axes in ``exclude``): same notebook, same variant, same other
    axes; only groups with at least two distinct ``x``. Returns ``[(label, rows sorted by x)]``."""
    sub = table[table[x].notna()].copy()
    if not len(sub):
        return []
    others = [a for a in catalog.AXES if a != x and a not in exclude]
    for c in others:
        sub[c] = sub[c].map(lambda v: "" if _missing(v) else v)
    items = []
    for key, g in sub.groupby(["notebook", "variant", *others], sort=True, dropna=False):
        if g[x].nunique() >= 2:
            axes = [f"{_AXIS_LABEL.get(a, a)} {_short(v)}" for a, v in zip(others, key[2:]) if v != ""]
            items.append((key[0], ", ".join([str(key[1])] + axes), ", ".join([str(g["method"].iloc[0])] + axes),
                          g.sort_values(x)))
    return _unique_labels(items)


def _unique_labels(items) -> list:
    """``items``: (notebook, full label, short label, rows). The short labels where they tell the groups apart,
    else the full ones, else the full ones prefixed with the notebook."""
    for pick in (lambda nb, full, short: short, lambda nb, full, short: full,
                 lambda nb, full, short: f"{nb}: {full}"):
        labels = [pick(nb, full, short) for nb, full, short, _ in items]
        if len(set(labels)) == len(labels):
            return [(label, g) for label, (*_, g) in zip(labels, items)]
    return [(f"{nb}: {full}", g) for nb, full, _, g in items]


_AXIS_LABEL = {"calib_per_direction": "calib", "ood_total": "OOD", "bits": "bits", "depth": "depth",
               "sparsity": "sparsity", "recovery": "recovery"}


def _short(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and v >= 1000 and v % 1000 == 0:
        return f"{v // 1000}k"
    return str(v)


def _reference_row(table, reference):
    ref = parse_reference(reference)
    hit = table[(table["notebook"] == ref[0]) & (table["run"] == ref[1])]
    return hit.iloc[0] if len(hit) else None


# ----------------------------------------------------------------------------------------------- style


def _setup():
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.05)
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight",
                                "pdf.fonttype": 42, "axes.titleweight": "bold"})


def _ref_line(ax, value, label, orientation="h"):
    if _missing(value):
        return
    line = ax.axhline if orientation == "h" else ax.axvline
    line(value, color="#555555", ls="-.", lw=1, zorder=0, label=label)


# ----------------------------------------------------------------------------------------------- figures


def quality_by_direction(table, sig, reference, metric=QUALITY):
    """Heatmap: runs x directions; colour = score - reference, text = score (+ '†' if not significant)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    cols = [c for c in [*GROUPS, *DIRECTIONS] if f"{c}:{metric}" in table]
    if not len(table) or not cols:
        raise Skip(f"no run has {METRIC_LABEL[metric]} scores yet")
    scores = table[[f"{c}:{metric}" for c in cols]].astype(float).to_numpy()
    ref = _reference_row(table, reference)
    marks = significance_marks(sig)
    text = np.empty(scores.shape, dtype=object)
    for i, row in enumerate(table.itertuples()):
        for j, c in enumerate(cols):
            v = scores[i, j]
            is_ref = ref is not None and (row.notebook, row.run) == (ref["notebook"], ref["run"])
            mark = "" if is_ref else marks.get((row.notebook, row.run, c, metric), "")
            text[i, j] = "" if _missing(v) else f"{v:.1f}{mark}"
    if ref is not None:
        base = np.array([ref[f"{c}:{metric}"] for c in cols], dtype=float)
        colour, cbar, cmap, center = scores - base, f"{METRIC_LABEL[metric]} − reference", "vlag_r", 0.0
    else:
        colour, cbar, cmap, center = scores, METRIC_LABEL[metric], "viridis", None
    names = [f"{r.label} (ref.)" if ref is not None and (r.notebook, r.run) == (ref["notebook"], ref["run"])
             else r.label for r in table.itertuples()]
    fig, ax = plt.subplots(figsize=(1.0 + 0.72 * len(cols) + 0.06 * max(map(len, names)), 0.9 + 0.42 * len(names)))
    span = float(np.nanmax(np.abs(colour))) if center is not None and np.isfinite(colour).any() else None
    limits = {"vmin": -span, "vmax": span} if span else {}  # symmetric: equal gains and losses, equal colours
    sns.heatmap(colour, annot=text, fmt="", cmap=cmap, center=center, ax=ax, **limits, linewidths=0.5, linecolor="white",
                cbar_kws={"label": cbar, "shrink": 0.8}, annot_kws={"fontsize": 7.5},
                xticklabels=[GROUP_LABEL.get(c, c.replace("-", "→")) for c in cols], yticklabels=names)
    ax.axvline(len([c for c in cols if c in GROUPS]), color="black", lw=1.2)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=0)
    ax.set_title(f"{METRIC_LABEL[metric]} on WMT22 by direction")
    caption = (f"{METRIC_LABEL[metric]} of every run by direction (the first two columns: the means over xx→en and "
               f"en→xx). ")
    caption += ("Colour: the difference to the reference (" + (ref["label"]) + "), text: the score; "
                f"{NOT_SIGNIFICANT} marks a difference that is not significant (paired bootstrap, p ≥ 0.05), "
                "° a run not comparable with the reference (other test segments, or no stored outputs)."
                if ref is not None else "No reference record: colour is the score itself.")
    return fig, caption, {}


def pareto(table, sig, reference, metric=QUALITY):
    """Quality against peak memory and against time per token, per direction group; the frontier marked."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels = []
    for cost, cost_label in COSTS:
        if cost not in table or table[cost].notna().sum() < 2:
            continue
        for group in GROUPS:
            q = f"{group}:{metric}"
            if q in table and (table[cost].notna() & table[q].notna()).sum() >= 2:
                panels.append((cost, cost_label, group, q))
    if not panels:
        raise Skip("fewer than two runs with both a quality score and a measured cost (peak memory or time per token)")
    costs = list(dict.fromkeys(p[0] for p in panels))
    groups = list(dict.fromkeys(p[2] for p in panels))
    fig, axes = plt.subplots(len(groups), len(costs), figsize=(4.3 * len(costs), 3.3 * len(groups)), squeeze=False)
    frontier = {}
    ref = _reference_row(table, reference)
    many = len(table) > 14
    for cost, cost_label, group, q in panels:
        ax = axes[groups.index(group)][costs.index(cost)]
        sub = table[table[cost].notna() & table[q].notna()].reset_index(drop=True)
        idx = pareto_front(sub[cost].tolist(), sub[q].tolist())
        on = set(idx)
        frontier[f"{group} vs {cost}"] = [f"{sub.loc[i, 'notebook']}/{sub.loc[i, 'run']}" for i in idx]
        for i, r in sub.iterrows():
            fam = r["family"] if r["family"] in FAMILY_PALETTE else "other"
            ax.scatter(r[cost], r[q], s=46 if i in on else 30, color=FAMILY_PALETTE[fam], marker=FAMILY_MARKERS[fam],
                       edgecolor="black" if i in on else "white", linewidth=1.1 if i in on else 0.5, zorder=3)
            is_ref = ref is not None and (r["notebook"], r["run"]) == (ref["notebook"], ref["run"])
            if not many or i in on or is_ref:
                ax.annotate(r["label"] + (" (ref.)" if is_ref else ""), (r[cost], r[q]), textcoords="offset points",
                            xytext=(4, 3), fontsize=6.5, color="#333333")
        fx = [sub.loc[i, cost] for i in idx]
        fy = [sub.loc[i, q] for i in idx]
        positive = sub[cost][sub[cost] > 0]
        log_x = len(positive) == len(sub) and positive.max() / positive.min() > 8  # spread a cheap cluster
        if log_x:
            ax.set_xscale("log")
        right = max(sub[cost]) * 1.15 if log_x else max(sub[cost]) + 0.04 * (max(sub[cost]) - min(sub[cost]) or 1)
        ax.step(fx + [right], fy + [fy[-1]], where="post", color="black", lw=1, ls="-", alpha=0.6, zorder=2)
        ax.set_xlabel(cost_label + (" (log scale)" if log_x else ""))
        ax.set_ylabel(f"{GROUP_LABEL[group]} {METRIC_LABEL[metric]}")
        ax.margins(x=0.12, y=0.12)
    for row in axes:
        for ax in row:
            if not ax.has_data():
                ax.set_visible(False)
    fams = [f for f in catalog.FAMILY_ORDER if f in set(table["family"])]
    handles = [Line2D([], [], ls="", marker=FAMILY_MARKERS.get(f, "X"), color=FAMILY_PALETTE.get(f, "#8c564b"),
                      label=f) for f in fams]
    handles.append(Line2D([], [], color="black", alpha=0.6, label="Pareto frontier"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles) if len(costs) > 1 else 3, frameon=False,
               bbox_to_anchor=(0.5, -0.02 if len(groups) > 1 else -0.06))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    missing = [label for cost, label in COSTS if cost not in costs]
    caption = (f"Quality ({METRIC_LABEL[metric]}, mean over the directions of each group) against cost. A run is on "
               "the Pareto frontier (black edge, step line) when no other run is at least as cheap and at least as "
               "good, and strictly better in one.")
    if missing:
        caption += " Not measured in these records: " + ", ".join(m.lower() for m in missing) + "."
    return fig, caption, {"frontier": frontier}


def _x_ticks(ax, values, log_x=False):
    values = sorted({float(v) for v in values if not _missing(v)})
    if log_x:
        positive = [v for v in values if v > 0]
        if any(v == 0 for v in values):  # linear from 0 to the smallest positive value, logarithmic above it
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1)
        else:
            ax.set_xscale("log", base=2)
    if values and len(values) <= 12 and all(v.is_integer() for v in values):
        ax.set_xticks(values)
        ax.set_xticklabels([_short(v) for v in values])
        ax.minorticks_off()
    ax.margins(x=0.08)
    ax.autoscale_view()


def _legend_below(fig, axes, ncol=2):
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False, fontsize=7.5)


def gptq_bits(table, sig, reference, metric=QUALITY):
    """GPTQ: bit width against quality and memory, one line per variant (group size, calibration, ...)."""
    import matplotlib.pyplot as plt

    gptq = table[table["method"] == "gptq"] if "method" in table else table.iloc[0:0]
    if not len(gptq):
        raise Skip("no GPTQ run recorded yet (notebook 1x with recipe [{method: gptq, bits: ...}])")
    groups = _sweep_groups(gptq, "bits")
    if not groups:
        raise Skip("the GPTQ runs recorded do not form a bit-width sweep (two or more bit widths of one variant)")
    ref = _reference_row(table, reference)
    colours = _colours(len(groups))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for (label, g), colour in zip(groups, colours):
        for group, ls, m in zip(GROUPS, ("-", "--"), ("o", "s")):
            col = f"{group}:{metric}"
            if col in g:
                axes[0].plot(g["bits"], g[col], marker=m, ls=ls, color=colour, label=f"{label}: {GROUP_LABEL[group]}")
        for cost, ls, m, name in (("peak_memory_gb", "-", "o", "peak memory"), ("storage_gb", ":", "^", "storage")):
            if cost in g and g[cost].notna().any():
                axes[1].plot(g["bits"], g[cost], marker=m, ls=ls, color=colour, label=f"{label}: {name}")
    if ref is not None:
        for group, ls in zip(GROUPS, ("-", "--")):
            col = f"{group}:{metric}"
            if col in ref and not _missing(ref[col]):
                axes[0].axhline(ref[col], color="grey", ls=ls, lw=0.8, label=f"reference: {GROUP_LABEL[group]}")
        for cost, ls, name in (("peak_memory_gb", "-", "peak memory"), ("storage_gb", ":", "storage")):
            if cost in ref and not _missing(ref[cost]):
                axes[1].axhline(ref[cost], color="grey", ls=ls, lw=0.8, label=f"reference: {name}")
    for ax in axes:
        _x_ticks(ax, gptq["bits"])
        ax.set_xlabel("GPTQ weight bits")
    axes[0].set_ylabel(METRIC_LABEL[metric])
    axes[1].set_ylabel("GB")
    axes[0].set_title("Quality")
    axes[1].set_title("Memory and storage")
    fig.tight_layout()
    _legend_below(fig, axes)
    caption = (f"GPTQ bit width against {METRIC_LABEL[metric]} (left; solid xx→en, dashed en→xx) and peak memory "
               "and storage (right); one colour per variant (group size, calibration); grey: the reference.")
    return fig, caption, {"groups": [label for label, _ in groups]}


def _colours(n):
    import seaborn as sns

    return sns.color_palette("tab10" if n <= 10 else "husl", max(n, 1))


def _sweep_plot(table, x, xlabel, groups, reference, metric, title, log_x=False, extra_series=None):
    """Two panels (xx->en, en->xx): one line per group, the reference as a dashed line, one legend below."""
    import matplotlib.pyplot as plt

    ref = _reference_row(table, reference)
    colours = _colours(len(groups))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for ax, group in zip(axes, GROUPS):
        col = f"{group}:{metric}"
        for (label, g), colour in zip(groups, colours):
            series = [(col, "", "-")] + (extra_series(group) if extra_series else [])
            for column, suffix, ls in series:
                if column in g and g[column].notna().any():
                    ax.plot(g[x], g[column], marker="o", ls=ls, color=colour, label=label + suffix)
        if ref is not None and col in ref and not _missing(ref[col]):
            _ref_line(ax, ref[col], f"reference ({ref['label']})")
        ax.set_title(GROUP_LABEL[group])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(METRIC_LABEL[metric])
        _x_ticks(ax, [v for _, g in groups for v in g[x]], log_x)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    _legend_below(fig, axes, ncol=1 if max(len(label) for label, _ in groups) > 45 else 2)
    return fig


def calibration(table, sig, reference, metric=QUALITY):
    """Calibration pairs per direction against quality, one line per method variant."""
    if table["calib_per_direction"].notna().sum() == 0:
        raise Skip("no calibrated run recorded yet (compression notebooks with calib_per_direction)")
    groups = _sweep_groups(table, "calib_per_direction")
    if not groups:
        raise Skip("no method was run with two or more calibration sizes yet")
    fig = _sweep_plot(table, "calib_per_direction", "calibration pairs per direction", groups, reference, metric,
                      "Calibration size", log_x=True)
    caption = (f"Calibration pairs per direction (ALMA train, balanced over directions) against "
               f"{METRIC_LABEL[metric]}, one line per method variant; dash-dotted: the reference.")
    return fig, caption, {"groups": [label for label, _ in groups]}


def prune_depth(table, sig, reference, metric=QUALITY):
    """Decoder layers removed against quality, before and after recovery."""
    pruned = table[table["depth"].notna()].copy()
    if not len(pruned):
        raise Skip("no layer-pruned run recorded yet (recipe steps layer-prune-* with depth)")
    pruned["recovery"] = pruned["recovery"].map(lambda v: "none" if _missing(v) else v)
    items = []
    for (nb, variant, recovery), g in pruned.groupby(["notebook", "variant", "recovery"], sort=True):
        if g["depth"].nunique() < 2:
            continue
        stage = "before recovery" if recovery == "none" else f"recovered ({recovery})"
        items.append((nb, f"{variant}, {stage}", f"{g['method'].iloc[0]}, {stage}", g.sort_values("depth")))
    groups = _unique_labels(items)
    if not groups:
        raise Skip("no pruning variant was run at two or more depths yet")
    fig = _sweep_plot(table, "depth", "decoder layers removed", groups, reference, metric,
                      "Layer pruning depth")
    caption = (f"Decoder layers removed against {METRIC_LABEL[metric]}, before recovery and after recovery "
               "fine-tuning (one line per pruning variant and recovery); dash-dotted: the reference.")
    return fig, caption, {"groups": [label for label, _ in groups]}


def ood_size(table, sig, reference, metric=QUALITY):
    """Out-of-domain training pairs against in-domain (WMT22) and out-of-domain test quality."""
    if table["ood_total"].notna().sum() == 0:
        raise Skip("no student with out-of-domain data recorded yet (notebooks 3x with ood_total)")
    groups = _sweep_groups(table, "ood_total")
    if not groups:
        raise Skip("no student variant was trained with two or more out-of-domain data sizes yet")

    def ood_series(group):
        return [(f"ood {group}:{metric}", " (out-of-domain test)", "--")]

    fig = _sweep_plot(table, "ood_total", "out-of-domain training pairs", groups, reference, metric,
                      "Out-of-domain data size", log_x=True, extra_series=ood_series)
    caption = (f"Out-of-domain training pairs added to the students' data against {METRIC_LABEL[metric]} on WMT22 "
               "(solid) and on the held-out out-of-domain test (dashed); dash-dotted: the reference's WMT22 score.")
    return fig, caption, {"groups": [label for label, _ in groups]}


# a decode panel's graph figure, over the eager time of the reference of the row's own record
# (tables.benchmark_data adds these fields, so rows of several records share one scale)
GRAPH_PANELS = {"decode_b1_ratio": "graph_b1_vs_ref", "decode_large_ratio": "graph_large_vs_ref"}


def _value(row: dict, field: str) -> float:
    import numpy as np

    return np.nan if _missing(row.get(field)) else row[field]


def efficiency_7b(bench):
    """Each format's time per token (batch 1, batch N), prefill time and peak memory relative to fp16, on the 7B
    architecture with random weights; the batch-1 panel marks each format's floor. A record with graph decode figures
    (static KV cache + CUDA graph) gets them as hatched bars beside the eager ones, on the same scale (relative to
    the reference's eager time); a missing graph figure is labelled, never drawn."""
    import matplotlib.pyplot as plt
    import numpy as np

    from studylib.bench.benchmark import describe_architecture, graph_not_attempted, has_graph, runs_text

    runs = (bench or {}).get("runs") or []
    if not runs:
        raise Skip("the 7B-architecture benchmark is not measured yet (no record of notebook 40_efficiency_7b)")
    run = bench.get("combined") or runs[0]  # formats that failed in one record taken from another (each own fp16)
    rows = run["rows"]
    ref_name = run.get("reference") or "fp16"
    if reference_row(run) is None:
        raise Skip(f"the benchmark record {run['record']} has no measured {ref_name} reference")
    t = run["timing"]
    panels = (("decode_b1_ratio", "Decode, batch 1"), ("decode_large_ratio", f"Decode, batch {t.get('large_batch')}"),
              ("prefill_ratio", f"Prefill, {t.get('prefill_tokens')} tokens"), ("memory_ratio", "Peak memory"))
    names = [r["label"] for r in rows]
    y = np.arange(len(rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 0.9 + 0.36 * len(rows)), sharey=True)
    colours = ["#1f77b4" if r["variant"] in (ref_name, "bf16")  # dense, quantized, pruned
               else "#ff7f0e" if r["variant"].startswith(("bnb", "gptq")) else "#2ca02c" for r in rows]
    graph = has_graph(rows)
    for ax, (key, title) in zip(axes, panels):
        values = [r[key] if r["status"] == "ok" and not _missing(r.get(key)) else np.nan for r in rows]
        if graph and key in GRAPH_PANELS:  # eager bar above, graph bar (hatched) below, both / the eager reference
            graph_values = [_value(r, GRAPH_PANELS[key]) for r in rows]
            series = [(values, -0.19, 0.36, None), (graph_values, 0.19, 0.36, "////")]
        else:
            series = [(values, 0.0, 0.62, None)]
        top = np.nanmax([v for vals, *_ in series for v in vals] + [1.0])
        for vals, offset, height, hatch in series:
            ax.barh(y + offset, vals, color=colours, height=height, zorder=2,
                    **(dict(hatch=hatch, edgecolor="white", linewidth=0) if hatch else {}))
        if all(_missing(v) or np.isnan(v) for v in values):
            ax.text(0.5, 0.5, "not measured here", transform=ax.transAxes, ha="center", fontsize=8, color="#555555")
        for i, r in enumerate(rows):
            if r["status"] != "ok":
                ax.text(0.03 * top, i, "unavailable" if r["status"] == "failed" else "not run", va="center",
                        fontsize=7, color="#b22222", style="italic")
                continue
            if key == "memory_ratio" and "peak_memory" in r.get("withdrawn", []):
                ax.text(0.03 * top, i, "withdrawn ‡", va="center", fontsize=7, color="#b22222", style="italic")
                continue
            for n, (vals, offset, _, hatch) in enumerate(series):
                v = vals[i]
                if not _missing(v) and not np.isnan(v):
                    ax.text(v + 0.02 * top, i + offset, f"{v:.2f}", va="center", fontsize=6 if graph else 7)
                elif n:  # a graph figure that is missing: say why, never a bar
                    why = "graph failed" if r.get("graph_error") or str(r.get("graph_mode")).startswith("failed") \
                        else "graph not attempted" if graph_not_attempted(r) else "graph not measured"
                    ax.text(0.03 * top, i + offset, why, va="center", fontsize=6, color="#b22222", style="italic")
        if key == "decode_b1_ratio":
            floors = [_value(r, "floor_vs_ref") for r in rows]
            ax.scatter(floors, y, marker="|", s=160, color="black", linewidths=2, zorder=3)
            title += " (black ticks: floor)"
        if graph and key in GRAPH_PANELS:
            title += "\nplain: generate; hatched: static cache"
        ax.axvline(1.0, color="#555555", ls="--", lw=0.9, zorder=1)
        ax.set_xlim(0, top * 1.22)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"× {ref_name}")
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names)
    axes[0].invert_yaxis()
    fig.suptitle(f"{run['architecture']} architecture, random weights, {run['device']}", fontweight="bold",
                 fontsize=10)
    fig.tight_layout()
    failed = [r["label"] for r in rows if r["status"] != "ok"]

    caption = (f"Every format on {describe_architecture(run['architecture'])}, built from its config with "
               "random weights: speed, memory and storage depend on the shapes and the kernels, not on the weights' "
               f"values, so no trained checkpoint was needed. {run['device']}, one process; each bar is the format's "
               f"time (or peak memory) relative to {ref_name} (below 1: faster or smaller), the median of "
               f"{runs_text(t.get('repeats'))} timed after {runs_text(t.get('warmup'))} of warm-up. "
               "Black ticks (batch 1): the floor, "
               "the bytes a decoding step must read over the copy bandwidth measured in the same run "
               f"({run['bandwidth_gb_s']:.0f} GB/s), relative to {ref_name}'s time.")
    graph_failed = [r["label"] for r in rows if r["status"] == "ok" and r.get("graph_error")]
    if graph:
        modes = sorted({str(r.get("graph_mode")) for r in rows if r["status"] == "ok" and r.get("graph_mode")
                        and not str(r.get("graph_mode")).startswith(("failed", "off"))
                        and not graph_not_attempted(r)})
        how = ("with each step captured once as a CUDA graph and replayed (no per-kernel launch cost)"
               if modes in ([], ["cuda-graph"]) else
               f"each step run as {', '.join(modes)} (a CUDA graph replayed only where that says cuda-graph)")
        caption += (f" Hatched bars (decode panels): the same decoding through a static KV cache, {how}, also "
                    f"relative to {ref_name}'s eager time, so the floor ticks and both bars share one scale; the "
                    f"table gives the graph times relative to {ref_name}'s graph time.")
        if graph_failed:
            caption += (" Graph decode failed at one batch size or both (the eager bars stand; the table says why): "
                        + ", ".join(graph_failed) + ".")
        skipped = [r["label"] for r in rows if r["status"] == "ok" and graph_not_attempted(r)]
        if skipped:
            caption += (" Graph decode not attempted (a kernel that cannot be captured; the table says why): "
                        + ", ".join(skipped) + ".")
    if failed:
        caption += " Formats that did not run (their reason is in the table): " + ", ".join(failed) + "."
    pulled = [r["label"] for r in rows if "peak_memory" in r.get("withdrawn", [])]
    if pulled:
        caption += (" Peak memory withdrawn (‡, results/errata.yaml; the table says why): " + ", ".join(pulled)
                    + ".")
    elsewhere = [r for r in rows if r.get("from_record")]
    if elsewhere:
        caption += (" Measured in a process of their own, each beside its own " + ref_name + " (their bars are relative "
                    "to that " + ref_name + "), because they did not run in " + run["record"] + ": "
                    + ", ".join(f"{r['label']} ({r['from_record']})" for r in elsewhere) + ".")
        caption += f" Every other bar: record {run['record']}."
    elif len(runs) > 1:
        caption += f" Record {run['record']} (of {len(runs)} benchmark records)."
    data = {"record": run["record"], "records": run.get("sources") or [run["record"]], "formats": names,
            "not_run": failed}
    if graph:
        data["graph_failed"] = graph_failed
    return fig, caption, data


FIGURES = (
    ("quality_by_direction", "Quality by direction", quality_by_direction),
    ("pareto", "Quality against memory and time", pareto),
    ("gptq_bits", "GPTQ bit width", gptq_bits),
    ("calibration", "Calibration size", calibration),
    ("prune_depth", "Layer pruning depth", prune_depth),
    ("ood_size", "Out-of-domain data size", ood_size),
    ("efficiency_7b", "Efficiency at the 7B scale", efficiency_7b),
)
FROM_BENCHMARK = {"efficiency_7b"}  # drawn from the benchmark table (benchmark.json), not from the summary


# ----------------------------------------------------------------------------------------------- driver


def draw_all(summary, sig=None, out: str | Path = "figures", reference: str = DEFAULT_REFERENCE,
             metric: str = QUALITY, only=None, benchmark: dict | None = None) -> list[FigureResult]:
    """Draw every figure into ``out`` (PDF + PNG) and write ``out/figures.json``; skipped figures say why.
    ``benchmark``: the benchmark table (:func:`studylib.report.tables.load_benchmark`) for the 7B efficiency figure."""
    import matplotlib.pyplot as plt

    _setup()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = runs_table(summary) if summary is not None and len(summary) else None
    results = []
    for name, title, fn in FIGURES:
        if only and name not in only:
            continue
        result = FigureResult(name=name, title=title)
        try:
            if name in FROM_BENCHMARK:
                fig, caption, data = fn(benchmark)
            elif table is None or not len(table):
                raise Skip("no scored run in the summary yet")
            else:
                fig, caption, data = fn(table, sig, reference, metric)
            files = []
            for ext in ("pdf", "png"):
                path = out / f"{name}.{ext}"
                fig.savefig(path, metadata={"CreationDate": None} if ext == "pdf" else {"Software": None})
                files.append(path.name)
            plt.close(fig)
            result.status, result.caption, result.files, result.data = "drawn", caption, files, data
            log.info("figure %s: drawn", name)
        except Skip as why:
            result.reason = str(why)
            for ext in ("pdf", "png"):
                (out / f"{name}.{ext}").unlink(missing_ok=True)  # never leave a stale figure behind
            log.info("figure %s: skipped (%s)", name, why)
        results.append(result)
    manifest = {"reference": "/".join(parse_reference(reference)), "metric": metric,
                "figures": [asdict(r) for r in results]}
    (out / "figures.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.report.figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=None, help="results root (default: $STUDYLIB_RESULTS or results)")
    ap.add_argument("--profile", choices=records.PROFILES, default="full")
    ap.add_argument("--out", type=Path, default=Path("figures"))
    ap.add_argument("--reference", default=DEFAULT_REFERENCE)
    ap.add_argument("--metric", default=QUALITY, choices=sorted(METRIC_LABEL))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("studylib").setLevel(logging.INFO)
    summary = load_summary(summary_path(args.results, args.profile))
    sig = read_table(table_path(args.results, args.profile))
    tables_dir = records.results_dir(args.results) / "tables"
    for r in draw_all(summary, sig, args.out, args.reference, args.metric, benchmark=load_benchmark(tables_dir)):
        print(f"{r.status:8s} {r.name}" + (f"  ({r.reason})" if r.reason else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
