"""Quality against cost: the Pareto figure (quality against peak memory and time per token, the frontier computed and
marked) and the sentences on the frontier and on batch-one speed relative to the reference."""

from __future__ import annotations

from studylib.core import what
from studylib.report import significance as S
from studylib.report.markdown import GROUP_LABEL, GROUPS, METRIC_LABEL, code, join, missing, stale_mark, stale_note, truthy
from studylib.report.plot import Skip
from studylib.report.quality import COMPRESSED, family_runs
from studylib.report.summary import main_rows

COSTS = (("peak_memory_gb", "Peak memory (GB)"), ("time_per_token_ms", "Time per token (ms)"))
COST_NAMES = {"peak_memory_gb": "peak memory", "time_per_token_ms": "time per token"}
FAMILY_PALETTE = {"base": "#7f7f7f", "teacher": "#1f77b4", "quantization": "#ff7f0e", "pruning": "#2ca02c",
                  "distillation": "#9467bd", "other": "#8c564b"}
FAMILY_MARKERS = {"base": "s", "teacher": "D", "quantization": "o", "pruning": "^", "distillation": "P", "other": "X"}


def pareto_front(costs, qualities) -> list[int]:
    """Indices of the points no other point dominates (cost no higher and quality no lower, one strictly), sorted
    by cost. Points with a missing value are left out."""
    pts = [(i, float(c), float(q)) for i, (c, q) in enumerate(zip(costs, qualities))
           if not missing(c) and not missing(q)]
    front = []
    for i, c, q in pts:
        dominated = any((c2 <= c and q2 >= q) and (c2 < c or q2 > q) for _, c2, q2 in pts)
        if not dominated:
            front.append((c, -q, i))
    return [i for _, _, i in sorted(front)]


def pareto(table, sig, reference, metric="chrf++"):
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
    ref = S.parse_reference(reference)
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
            is_ref = (r["notebook"], r["run"]) == ref
            if not many or i in on or is_ref:
                ax.annotate(r["label"] + (" (ref.)" if is_ref else "") + stale_mark(r["stale"]), (r[cost], r[q]),
                            textcoords="offset points", xytext=(4, 3), fontsize=6.5, color="#333333")
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
    fams = [f for f in what.FAMILY_ORDER if f in set(table["family"])]
    handles = [Line2D([], [], ls="", marker=FAMILY_MARKERS.get(f, "X"), color=FAMILY_PALETTE.get(f, "#8c564b"),
                      label=f) for f in fams]
    handles.append(Line2D([], [], color="black", alpha=0.6, label="Pareto frontier"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles) if len(costs) > 1 else 3, frameon=False,
               bbox_to_anchor=(0.5, -0.02 if len(groups) > 1 else -0.06))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    caption = (f"Quality ({METRIC_LABEL[metric]}, mean over the directions of each group) against cost. A run is on "
               "the Pareto frontier (black edge, step line) when no other run is at least as cheap and at least as "
               "good, and strictly better in one.")
    not_measured = [label for cost, label in COSTS if cost not in costs]
    if not_measured:
        caption += " Not measured in these records: " + ", ".join(m.lower() for m in not_measured) + "."
    if table["stale"].map(truthy).any():
        caption += " " + stale_note(True)
    return fig, caption, {"frontier": frontier}


def text_pareto(ctx) -> str:
    fig = next((f for f in ctx.manifest.get("figures") or [] if f.get("name") == "pareto"), None)
    if fig is None or fig.get("status") != "drawn":
        return f"The Pareto plot is not drawn yet ({fig.get('reason') if fig else 'no figure manifest'})."
    out = []
    for key, members in ((fig.get("data") or {}).get("frontier") or {}).items():
        group, _, cost = key.partition(" vs ")
        out.append(f"{GROUP_LABEL.get(group, group)} against {COST_NAMES.get(cost, cost)}: "
                   + join([code(m.split("/", 1)[1]) for m in members]))
    return "The frontier runs are, for " + "; for ".join(out) + "."


def _run_value(ctx, key: tuple[str, str], column: str):
    s = main_rows(ctx.summary)
    rows = s[(s["notebook"] == key[0]) & (s["run"] == key[1])] if s is not None and len(s) else []
    return None if not len(rows) or column not in rows or missing(rows[column].iloc[0]) else rows[column].iloc[0]


def text_speed(ctx) -> str:
    """Batch-one time per token of every compressed run as a ratio to the reference's (the question the quantization
    study asked: is 4-bit decoding slower than 16-bit?)."""
    ref = S.parse_reference(ctx.reference)
    ref_ms = _run_value(ctx, ref, "time_per_token_ms")
    keys = [k for fam in COMPRESSED for k in family_runs(ctx, fam)]
    timed = [(k, ms) for k in keys if (ms := _run_value(ctx, k, "time_per_token_ms")) is not None]
    if ref_ms is None or not timed:
        return "No compressed run has a time per token next to the reference's yet."
    ratios = sorted(((k, ms / ref_ms) for k, ms in timed), key=lambda kr: kr[1])
    faster = [f"{code(k[1])} {r:.2f}×" for k, r in ratios if r <= 1]
    slower = [f"{code(k[1])} {r:.2f}×" for k, r in ratios if r > 1]
    parts = ([f"as fast or faster: {join(faster)}"] if faster else []) + ([f"slower: {join(slower)}"] if slower else [])
    devices = {str(_run_value(ctx, k, "device") or "") for k, _ in timed} | {str(_run_value(ctx, ref, "device") or "")}
    return (f"At batch size one, relative to the reference's {ref_ms:.1f} ms per token (lower is faster): "
            + "; ".join(parts) + "."
            f" Every time was measured with the GPU to itself ({join(sorted(d for d in devices if d))}; runs made side "
            "by side wait for one another's timed sections), but not all in one session, nor always with the host's "
            "CPUs to itself (runs on the machine's other GPUs), which matters for launch-bound batch-one decoding: "
            "pruned runs that keep dense bf16 weights decode with the reference's own kernels, so their ratio shows "
            "how far such conditions move a time. The 7B-scale benchmark below compares each format with an fp16 "
            "model measured in the same process.")
