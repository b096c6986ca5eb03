"""The sweep figures of the paper: GPTQ bit width, calibration size, layer-pruning depth and out-of-domain data size.

Each is drawn from the runs table (:func:`studylib.report.summary.runs_table`): runs that differ only in the sweep's
axis form one line (same notebook, variant and other axes); a line needs two or more settings, and a figure with no
line is skipped with its reason. A line holding a stale record carries the stale mark in its legend.
"""

from __future__ import annotations

from studylib.core import what
from studylib.report import significance as S
from studylib.report.markdown import GROUP_LABEL, GROUPS, METRIC_LABEL, TESTSET, missing, stale_mark, stale_note, truthy
from studylib.report.plot import Skip, colours, legend_below, ref_line, short, x_ticks

AXIS_LABEL = {"calib_per_direction": "calib", "ood_total": "OOD", "bits": "bits", "depth": "depth",
              "sparsity": "sparsity", "recovery": "recovery"}


def _unique_labels(items) -> list:
    """``items``: (notebook, full label, short label, rows). The short labels where they tell the groups apart,
    else the full ones, else the full ones prefixed with the notebook; the stale mark after a group with a stale
    record."""
    for pick in (lambda nb, full, brief: brief, lambda nb, full, brief: full,
                 lambda nb, full, brief: f"{nb}: {full}"):
        labels = [pick(nb, full, brief) for nb, full, brief, _ in items]
        if len(set(labels)) == len(labels):
            break
    return [(label + stale_mark(g["stale"].map(truthy).any()), g) for label, (*_, g) in zip(labels, items)]


def sweep_groups(table, x: str, exclude=()):
    """Groups of runs that differ only in ``x`` (and the axes in ``exclude``): same notebook, same variant, same other
    axes; only groups with at least two distinct ``x``. Returns ``[(label, rows sorted by x)]``."""
    sub = table[table[x].notna()].copy()
    if not len(sub):
        return []
    others = [a for a in what.AXES if a != x and a not in exclude]
    for c in others:
        sub[c] = sub[c].map(lambda v: "" if missing(v) else v)
    items = []
    for key, g in sub.groupby(["notebook", "variant", *others], sort=True, dropna=False):
        if g[x].nunique() >= 2:
            axes = [f"{AXIS_LABEL.get(a, a)} {short(v)}" for a, v in zip(others, key[2:]) if v != ""]
            items.append((key[0], ", ".join([str(key[1])] + axes), ", ".join([str(g["method"].iloc[0])] + axes),
                          g.sort_values(x)))
    return _unique_labels(items)


def _caption_end(groups) -> str:
    return (" " + stale_note(True)) if any(g["stale"].map(truthy).any() for _, g in groups) else ""


def _sweep_plot(table, x, xlabel, groups, reference, metric, title, log_x=False, extra_series=None):
    """Two panels (xx->en, en->xx): one line per group, the reference as a dash-dotted line, one legend below."""
    import matplotlib.pyplot as plt

    ref = S.reference_row(table, reference)
    palette = colours(len(groups))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for ax, group in zip(axes, GROUPS):
        col = f"{group}:{metric}"
        for (label, g), colour in zip(groups, palette):
            for column, suffix, ls in [(col, "", "-")] + (extra_series(group) if extra_series else []):
                if column in g and g[column].notna().any():
                    ax.plot(g[x], g[column], marker="o", ls=ls, color=colour, label=label + suffix)
        if ref is not None and col in ref:
            ref_line(ax, ref[col], f"reference ({ref['label']})")
        ax.set_title(GROUP_LABEL[group])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(METRIC_LABEL[metric])
        x_ticks(ax, [v for _, g in groups for v in g[x]], log_x)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    legend_below(fig, axes, ncol=1 if max(len(label) for label, _ in groups) > 45 else 2)
    return fig


def gptq_bits(table, sig, reference, metric="chrf++"):
    """GPTQ: bit width against quality and memory, one line per variant (group size, calibration, ...)."""
    import matplotlib.pyplot as plt

    gptq = table[table["method"] == "gptq"]
    if not len(gptq):
        raise Skip("no GPTQ run recorded yet (a quantization run with recipe [{method: gptq, bits: ...}])")
    groups = sweep_groups(gptq, "bits")
    if not groups:
        raise Skip("the GPTQ runs recorded do not form a bit-width sweep (two or more bit widths of one variant)")
    ref = S.reference_row(table, reference)
    palette = colours(len(groups))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    costs = (("peak_memory_gb", "-", "o", "peak memory"), ("storage_gb", ":", "^", "storage"))
    for (label, g), colour in zip(groups, palette):
        for group, ls, m in zip(GROUPS, ("-", "--"), ("o", "s")):
            axes[0].plot(g["bits"], g[f"{group}:{metric}"], marker=m, ls=ls, color=colour,
                         label=f"{label}: {GROUP_LABEL[group]}")
        for cost, ls, m, name in costs:
            if g[cost].notna().any():
                axes[1].plot(g["bits"], g[cost], marker=m, ls=ls, color=colour, label=f"{label}: {name}")
    if ref is not None:
        for group, ls in zip(GROUPS, ("-", "--")):
            if not missing(ref[f"{group}:{metric}"]):
                axes[0].axhline(ref[f"{group}:{metric}"], color="grey", ls=ls, lw=0.8,
                                label=f"reference: {GROUP_LABEL[group]}")
        for cost, ls, _, name in costs:
            if not missing(ref[cost]):
                axes[1].axhline(ref[cost], color="grey", ls=ls, lw=0.8, label=f"reference: {name}")
    for ax in axes:
        x_ticks(ax, gptq["bits"])
        ax.set_xlabel("GPTQ weight bits")
    axes[0].set_ylabel(METRIC_LABEL[metric])
    axes[1].set_ylabel("GB")
    axes[0].set_title("Quality")
    axes[1].set_title("Memory and storage")
    fig.tight_layout()
    legend_below(fig, axes)
    caption = (f"GPTQ bit width against {METRIC_LABEL[metric]} (left; solid xx→en, dashed en→xx) and peak memory "
               "and storage (right); one colour per variant (group size, calibration); grey: the reference."
               + _caption_end(groups))
    return fig, caption, {"groups": [label for label, _ in groups]}


def _axis_figure(table, reference, metric, x, *, none_recorded, too_few, xlabel, title, caption, **plot):
    """The figure of one sweep axis ``x``: skipped with ``none_recorded`` when no run has it, with ``too_few`` when
    no group has two or more of its values; else :func:`_sweep_plot` and ``caption`` (the stale note added)."""
    if table[x].notna().sum() == 0:
        raise Skip(none_recorded)
    groups = sweep_groups(table, x)
    if not groups:
        raise Skip(too_few)
    fig = _sweep_plot(table, x, xlabel, groups, reference, metric, title, **plot)
    return fig, caption + _caption_end(groups), {"groups": [label for label, _ in groups]}


def calibration(table, sig, reference, metric="chrf++"):
    """Calibration pairs per direction against quality, one line per method variant."""
    return _axis_figure(
        table, reference, metric, "calib_per_direction",
        none_recorded="no calibrated run recorded yet (compression runs with calib_per_direction)",
        too_few="no method was run with two or more calibration sizes yet",
        xlabel="calibration pairs per direction", title="Calibration size", log_x=True,
        caption=(f"Calibration pairs per direction (ALMA train, balanced over directions) against "
                 f"{METRIC_LABEL[metric]}, one line per method variant; dash-dotted: the reference."))


def prune_depth(table, sig, reference, metric="chrf++"):
    """Decoder layers removed against quality, before and after recovery."""
    pruned = table[table["depth"].notna()].copy()
    if not len(pruned):
        raise Skip("no layer-pruned run recorded yet (recipe steps layer-prune-* with depth)")
    pruned["recovery"] = pruned["recovery"].map(lambda v: "none" if missing(v) else v)
    items = []
    for (nb, variant, recovery), g in pruned.groupby(["notebook", "variant", "recovery"], sort=True):
        if g["depth"].nunique() < 2:
            continue
        stage = "before recovery" if recovery == "none" else f"recovered ({recovery})"
        items.append((nb, f"{variant}, {stage}", f"{g['method'].iloc[0]}, {stage}", g.sort_values("depth")))
    groups = _unique_labels(items)
    if not groups:
        raise Skip("no pruning variant was run at two or more depths yet")
    fig = _sweep_plot(table, "depth", "decoder layers removed", groups, reference, metric, "Layer pruning depth")
    caption = (f"Decoder layers removed against {METRIC_LABEL[metric]}, before recovery and after recovery "
               "fine-tuning (one line per pruning variant and recovery); dash-dotted: the reference."
               + _caption_end(groups))
    return fig, caption, {"groups": [label for label, _ in groups]}


def ood_size(table, sig, reference, metric="chrf++"):
    """Out-of-domain training pairs against in-domain (WMT) and out-of-domain test quality."""
    return _axis_figure(
        table, reference, metric, "ood_total",
        none_recorded="no student with out-of-domain data recorded yet (distillation runs with ood_total)",
        too_few="no student variant was trained with two or more out-of-domain data sizes yet",
        xlabel="out-of-domain training pairs", title="Out-of-domain data size", log_x=True,
        extra_series=lambda group: [(f"ood {group}:{metric}", " (out-of-domain test)", "--")],
        caption=(f"Out-of-domain training pairs added to the students' data against {METRIC_LABEL[metric]}: solid on "
                 f"{TESTSET}, dashed on the held-out out-of-domain test; dash-dotted: the reference's score on the "
                 "first."))
