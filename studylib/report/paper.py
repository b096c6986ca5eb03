"""Build the paper: ``paper/paper.md`` with its placeholders filled from the generated files, rendered to HTML.

    python -m studylib.report.paper [--results results] [--profile full] [--figures figures] [--out paper/build]

The template's prose holds no result numbers. Every number enters through a placeholder:

``{{ table:NAME | caption }}``  the Markdown table ``<tables>/NAME.md`` (written by :mod:`studylib.report.tables` or
                                :mod:`studylib.report.significance`), numbered, with the caption.
``{{ figure:NAME }}``           the figure ``<figures>/NAME.png`` with its caption from ``<figures>/figures.json``;
                                a figure not drawn yet becomes a note saying why.
``{{ value:PATH }}``            a value from ``<tables>/setup.json`` (dotted path; lists are joined), or one of
                                the values computed here (``n_samples``, ``alpha``, ``reference``, ...).
``{{ text:NAME }}``             a sentence generated from the summary and significance tables (:data:`TEXTS`).

An unknown placeholder, a missing table or an unknown value fails the build. The HTML links the figures by
relative path (``paper/build/paper.html`` -> ``figures/``); ``--embed`` inlines them instead.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from studylib.report import catalog
from studylib.core import records
from studylib.report.significance import ALPHA, DEFAULT_REFERENCE, N_SAMPLES, parse_reference, read_table, table_path
from studylib.report.tables import load_summary, main_rows, summary_path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "paper" / "paper.md"
STYLE = REPO / "paper" / "style.css"
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*:\s*([^}|]+?)\s*(?:\|\s*([^}]*?)\s*)?\}\}")
GROUP_LABEL = {"xx-en": "xx→en", "en-xx": "en→xx"}
FAMILY_NOUN = {"quantization": "quantized", "pruning": "pruned", "distillation": "distilled (student)"}


class PaperError(ValueError):
    """The paper cannot be built from the generated files (a missing table, an unknown placeholder)."""


@dataclass
class Context:
    tables: Path
    figures: Path
    out: Path
    summary: object
    sig: object
    setup: dict
    manifest: dict
    reference: str
    embed: bool = False
    counters: dict = field(default_factory=lambda: {"table": 0, "figure": 0})


# ----------------------------------------------------------------------------------------------- helpers


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def signed(v: float, digits: int = 1) -> str:
    return f"{v:+.{digits}f}".replace("-", "−")


def code(name: str) -> str:
    return f"`{name}`"


def join(items: list[str], conj: str = "and") -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def _sig_row(ctx: Context, notebook: str, run: str, direction: str, metric: str = "chrf++"):
    sig = ctx.sig
    if sig is None or not len(sig):
        return None
    rows = sig[(sig["notebook"] == notebook) & (sig["run"] == run) & (sig["direction"] == direction)
               & (sig["metric"] == metric)]
    return rows.iloc[0] if len(rows) else None


def _score(ctx: Context, notebook: str, run: str, direction: str, metric: str = "chrf++"):
    s = main_rows(ctx.summary)
    if s is None or not len(s):
        return None
    rows = s[(s["notebook"] == notebook) & (s["run"] == run) & (s["direction"] == direction)]
    return None if not len(rows) or _missing(rows[metric].iloc[0]) else float(rows[metric].iloc[0])


def _runs(ctx: Context, family: str | None = None) -> list[tuple[str, str]]:
    from studylib.report.tables import runs

    keys = runs(main_rows(ctx.summary))
    return [k for k in keys if family is None or catalog.family(k[0]) == family]


def _verdict(row) -> str:
    if row is None:
        return "untested"
    if not row["comparable"]:
        return "not comparable"
    p, n = row["p_value"], row.get("n_samples")
    shown = f"p < {1 / n:g}" if p == 0 and not _missing(n) and n else f"p = {p:.3f}"
    return shown if row["significant"] else f"not significant, p = {p:.2f}"


def _difference(ctx: Context, a: tuple[str, str], b: tuple[str, str], group: str, metric: str = "chrf++") -> str | None:
    """'+x.x chrF++ on xx→en (p = ...)' for run a minus run b, from the significance table where one is the
    reference, else from the summary (then untested)."""
    ref = parse_reference(ctx.reference)
    label = {"chrf++": "chrF++", "bleu": "BLEU"}[metric]
    if b == ref:
        row = _sig_row(ctx, *a, group, metric)
        if row is not None and row["comparable"]:
            return f"{signed(row['delta'])} {label} on {GROUP_LABEL[group]} ({_verdict(row)})"
    if a == ref:
        row = _sig_row(ctx, *b, group, metric)
        if row is not None and row["comparable"]:
            return f"{signed(-row['delta'])} {label} on {GROUP_LABEL[group]} ({_verdict(row)})"
    sa, sb = _score(ctx, *a, group, metric), _score(ctx, *b, group, metric)
    if sa is None or sb is None:
        return None
    return f"{signed(sa - sb)} {label} on {GROUP_LABEL[group]} (untested)"


# ----------------------------------------------------------------------------------------------- generated text


def text_runs_overview(ctx: Context) -> str:
    fams = ctx.setup.get("runs_by_family") or {}
    n = sum(len(v) for v in fams.values())
    if not n:
        return "No run has been recorded yet."
    parts = [f"{fam} {len(v)}" for fam, v in sorted(fams.items(), key=lambda kv: catalog.FAMILY_ORDER.index(kv[0])
                                                    if kv[0] in catalog.FAMILY_ORDER else 99)]
    compressed = sum(len(fams.get(f, [])) for f in ("quantization", "pruning", "distillation"))
    text = f"The records hold {n} scored runs (by family: {', '.join(parts)})."
    if not compressed:
        text += (" No compressed or distilled run has been recorded yet: the quantization, pruning and distillation "
                 "results below fill in as their records land.")
    return text


def text_teacher_vs_base(ctx: Context) -> str:
    bases, teachers = _runs(ctx, "base"), _runs(ctx, "teacher")
    if not bases or not teachers:
        return "The base and teacher records are not both present yet."
    ref = parse_reference(ctx.reference)
    teacher = ref if ref in teachers else teachers[0]
    sentences = []
    for base in bases:
        diffs = [d for g in ("xx-en", "en-xx") if (d := _difference(ctx, teacher, base, g))]
        if diffs:
            sentences.append(f"Against the base prompted as in {code(base[1])}, the teacher {code(teacher[1])} "
                             f"scores {join(diffs)}.")
    return " ".join(sentences)


def text_teachers(ctx: Context) -> str:
    teachers = _runs(ctx, "teacher")
    if len(teachers) < 2:
        return "Only one teacher has been recorded."
    ref = parse_reference(ctx.reference)
    first = ref if ref in teachers else teachers[0]
    out = []
    for other in teachers:
        if other == first:
            continue
        diffs = [d for g in ("xx-en", "en-xx") if (d := _difference(ctx, other, first, g))]
        if diffs:
            out.append(f"The teacher {code(other[1])} differs from {code(first[1])} by {join(diffs)}.")
    return " ".join(out)


def text_compressed(ctx: Context) -> str:
    ref = parse_reference(ctx.reference)
    out = []
    for fam in ("quantization", "pruning", "distillation"):
        keys = _runs(ctx, fam)
        if not keys:
            continue
        best, same, tested_n = [], [], set()
        for group in ("xx-en", "en-xx"):
            tested = [(k, r) for k in keys if (r := _sig_row(ctx, *k, group)) is not None and r["comparable"]]
            if not tested:
                continue
            tested_n.add(len(tested))
            k, r = max(tested, key=lambda kr: kr[1]["delta"])
            best.append(f"{code(k[1])} on {GROUP_LABEL[group]} ({signed(r['delta'])}, {_verdict(r)})")
            same.append(f"{sum(not r['significant'] for _, r in tested)} of {len(tested)} on {GROUP_LABEL[group]}")
        noun = FAMILY_NOUN[fam]
        if not best:
            out.append(f"None of the {len(keys)} {noun} runs can be compared with the reference on the same segments.")
            continue
        out.append(f"Of the {len(keys)} {noun} runs, the closest to the reference in chrF++ are {join(best)}; "
                   f"not significantly different from it: {join(same)}.")
    if not out:
        return (f"No compressed or distilled run has been recorded yet, so the comparison with the reference "
                f"({code(ref[1])}) is still empty.")
    return " ".join(out)


def _run_value(ctx: Context, key: tuple[str, str], column: str):
    s = main_rows(ctx.summary)
    rows = s[(s["notebook"] == key[0]) & (s["run"] == key[1])] if s is not None and len(s) else []
    if not len(rows) or column not in rows or _missing(rows[column].iloc[0]):
        return None
    return rows[column].iloc[0]


def text_speed(ctx: Context) -> str:
    """Batch-one time per token of every compressed run as a ratio to the reference's (the question the quantization
    study asked: is 4-bit decoding slower than 16-bit?)."""
    ref = parse_reference(ctx.reference)
    ref_ms = _run_value(ctx, ref, "time_per_token_ms")
    keys = [k for fam in ("quantization", "pruning", "distillation") for k in _runs(ctx, fam)]
    timed = [(k, ms) for k in keys if (ms := _run_value(ctx, k, "time_per_token_ms")) is not None]
    if ref_ms is None or not timed:
        return "No compressed run has a time per token next to the reference's yet."
    ratios = sorted(((k, ms / ref_ms) for k, ms in timed), key=lambda kr: kr[1])
    slower = [f"{code(k[1])} {r:.2f}×" for k, r in ratios if r > 1]
    faster = [f"{code(k[1])} {r:.2f}×" for k, r in ratios if r <= 1]
    out = [f"At batch size one, relative to the reference's {ref_ms:.1f} ms per token (lower is faster): "]
    parts = []
    if faster:
        parts.append(f"as fast or faster: {join(faster)}")
    if slower:
        parts.append(f"slower: {join(slower)}")
    out.append("; ".join(parts) + ".")
    sessions = {str(_run_value(ctx, k, "device") or "") for k, _ in timed} | {str(_run_value(ctx, ref, "device") or "")}
    out.append(f" Every time was measured with the GPU to itself ({join(sorted(s for s in sessions if s))}; runs "
               "made side by side wait for one another's timed sections), but not all in one session, nor always with "
               "the host's CPUs to itself (runs on the machine's other GPUs), which matters for launch-bound batch-one "
               "decoding: pruned runs that keep dense bf16 weights decode with the reference's own kernels, so their "
               "ratio shows how far such conditions move a time. The 7B-scale benchmark below compares each format "
               "with fp16 measured in the same process.")
    return "".join(out)


def text_pareto(ctx: Context) -> str:
    fig = _figure(ctx, "pareto")
    if fig is None or fig.get("status") != "drawn":
        return f"The Pareto plot is not drawn yet ({fig.get('reason') if fig else 'no figure manifest'})."
    frontier = (fig.get("data") or {}).get("frontier") or {}
    cost_names = {"peak_memory_gb": "peak memory", "time_per_token_ms": "time per token"}
    out = []
    for key, members in frontier.items():
        group, _, cost = key.partition(" vs ")
        names = [code(m.split("/", 1)[1]) for m in members]
        out.append(f"{GROUP_LABEL.get(group, group)} against {cost_names.get(cost, cost)}: {join(names)}")
    return "The frontier runs are, for " + "; for ".join(out) + "."


def text_students(ctx: Context) -> str:
    """The distillation study from ``<tables>/students.json``: the KD data, what Model A and Model B keep of the
    teacher and what they save, and what out-of-domain pairs do in and out of domain. Says so when nothing is there."""
    from studylib.report.tables import fmt_sig

    path = Path(ctx.tables) / "students.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    students = data.get("students") or []
    if not students:
        return ("The distillation study has no records yet (notebooks `30_kd_data` to `33_ood_size`); its table fills "
                "in when they land.")
    out = []
    kd = data.get("kd")
    if kd and kd.get("pairs"):
        out.append(f"The teacher's greedy translations of {kd['pairs']:,} ALMA training sources "
                   f"(`{kd['record']}`) are the distilled data.")
    teacher = data.get("teacher") or {}
    settings = {json.dumps([s.get("qlora"), s.get("epochs"), s.get("learning_rate")], sort_keys=True)
                for s in students}
    q = students[0].get("qlora") or {}
    if len(settings) == 1 and q.get("r"):
        out.append(f"Every student is trained the same way: LoRA rank {q['r']}, α {q['alpha']}, dropout "
                   f"{fmt_sig(q['dropout']) if q.get('dropout') else 0}"
                   + (", rank-stabilized scaling" if q.get("rslora") else "")
                   + (", double quantization" if q.get("double_quant") else "")
                   + f", {q.get('compute_dtype')} compute, {students[0].get('epochs'):g} epoch(s) at learning "
                   f"rate {students[0].get('learning_rate'):g}.")

    def share(num, den):
        return f"{fmt_sig(100 * num / den)} %" if num and den else None

    named = {"31_model_a": "Model A (the teacher in NF4, recovered with QLoRA)",
             "32_model_b": "Model B (the layer-pruned teacher in NF4, recovered with QLoRA)"}
    for s in students:
        if s["notebook"] not in named or not s.get("retention"):
            continue
        r = s["retention"]
        size = share(s.get("storage_bytes"), teacher.get("storage_bytes"))
        params = share(s.get("params"), teacher.get("params"))
        d = s.get("training_data") or {}
        out.append(f"{named[s['notebook']]}, {s['layers']} layers, trained on {d.get('total', 0):,} pairs, "
                   f"keeps {fmt_sig(100 * r['mean'])} % of the teacher's chrF++ on average over the "
                   f"{r['n']} directions ({fmt_sig(100 * r['min'])} to {fmt_sig(100 * r['max'])} %)"
                   + (f", with {params} of its parameters and {size} of its storage" if params and size else "")
                   + ".")
    for s in students:
        path = s.get("loss_path") or {}
        if s["notebook"] in named and path and path["peak_step"] > path["first_step"] \
                and path["peak"] > 1.1 * path["first"]:
            out.append(f"The training loss of {named[s['notebook']].split(' (')[0]} rose from {fmt_sig(path['first'])} "
                       f"(step {path['first_step']}) to {fmt_sig(path['peak'])} (step {path['peak_step']}) before "
                       f"falling to {fmt_sig(path['last'])} (step {path['last_step']}); no other learning rate was "
                       "tried.")
    sweep = sorted((s for s in students if s["notebook"] == "33_ood_size" and s.get("ood_total") is not None),
                   key=lambda s: s["ood_total"])
    if len(sweep) > 1:
        lo, hi = sweep[0], sweep[-1]

        def span(key, group):
            a, b = lo[key].get(group), hi[key].get(group)
            return f"{fmt_sig(a)} to {fmt_sig(b)}" if a is not None and b is not None else "—"

        out.append(f"Adding {lo['ood_total']:,} to {hi['ood_total']:,} out-of-domain Tatoeba pairs to "
                   f"Model B's training data moves its chrF++ on held-out Tatoeba pairs from {span('ood_chrf++', 'xx-en')} "
                   f"(xx→en) and {span('ood_chrf++', 'en-xx')} (en→xx), and on WMT22 from {span('wmt_chrf++', 'xx-en')} "
                   f"and {span('wmt_chrf++', 'en-xx')}.")
        twin = next((s for s in students if s["notebook"] == "32_model_b"), None)
        zero = next((s for s in sweep if s["ood_total"] == 0), None)
        if twin and zero and twin["retention_by_direction"] and \
                twin["retention_by_direction"] == zero["retention_by_direction"]:
            out.append(f"The sweep's run without out-of-domain data (`{zero['record']}`) repeats Model B's setting "
                       "in a separate process and reproduces its scores in every direction.")
    return " ".join(out)


def text_pending_figures(ctx: Context) -> str:
    figs = [f for f in (ctx.manifest.get("figures") or []) if f.get("status") != "drawn"]
    if not figs:
        return "Every figure of the study is drawn."
    return ("Figures that wait for records: " + "; ".join(f"{f['title'].lower()} ({f['reason']})" for f in figs)
            + ".")


def text_teachers_setup(ctx: Context) -> str:
    teachers = ctx.setup.get("teachers") or {}
    if not teachers:
        return "No teacher has been recorded yet."
    parts = []
    for run, t in sorted(teachers.items()):
        how = "full fine-tuning" if t.get("method") == "full" else f"LoRA (rank {t.get('lora_r')})"
        share = t.get("trainable_share")
        extra = f", {share:.1%} of the parameters trainable" if isinstance(share, (int, float)) and share < 1 else ""
        epochs, steps = t.get("epochs"), t.get("steps")
        parts.append(f"{code(run)}: {how}, learning rate {t.get('learning_rate'):g}, "
                     f"{epochs:g} epoch{'' if epochs == 1 else 's'}"
                     + (f" ({steps:,} steps)" if isinstance(steps, int) else "") + extra)
    examples = sorted({t.get("examples") for t in teachers.values() if t.get("examples")})
    dropped = sorted({t.get("dropped_test_overlap") for t in teachers.values() if t.get("dropped_test_overlap")
                      is not None})
    lead = (f"The teachers are trained on {join([f'{e:,}' for e in examples], 'or')} human-written training pairs"
            + (f" (after dropping {join([str(d) for d in dropped], 'or')} pairs that share a sentence with a test set)"
               if dropped else "") + ". ")
    return lead + "; ".join(parts) + "."


def _benchmark_graph_text(run: dict, ok: list[dict], ref_name: str) -> list[str]:
    """The graph decode figures of a benchmark run (static KV cache, each step one CUDA graph replayed) beside the
    eager ones; nothing is said of a format whose graph figure is missing but that it failed."""
    from studylib.report.tables import fmt_sig

    ref = next((r for r in ok if r["variant"] == ref_name), None)
    out = []
    if ref is not None and ref.get("graph_b1_ms"):
        mode = ref.get("graph_mode")
        how = ("with each decoding step captured once as a CUDA graph and replayed" if mode == "cuda-graph"
               else f"with the same steps run uncaptured ({mode})")
        floor = (f", {fmt_sig(ref['graph_floor_ratio'])}× its floor" if ref.get("graph_floor_ratio") else "")
        out.append(f"Through a static KV cache {how}, {ref_name} decodes at {fmt_sig(ref['graph_b1_ms'])} ms per "
                   f"token at batch size one{floor} ({fmt_sig(ref['decode_b1_ms'] / ref['graph_b1_ms'])}× the speed "
                   "of `generate`).")
        others = sorted((r for r in ok if r["variant"] != ref_name and r.get("graph_b1_ratio")),
                        key=lambda r: r["graph_b1_ratio"])
        if others:
            out.append(f"Decoded the same way, relative to {ref_name}: "
                       + join([f"{r['label']} {fmt_sig(r['graph_b1_ratio'])}×" for r in others]) + ".")
    elif ref is not None and ref.get("graph_error"):
        out.append(f"The static-cache graph decode of {ref_name} failed, so no format is compared with it that way.")
    failed = [r["label"] for r in ok if r["variant"] != ref_name and r.get("graph_error") and not r.get("graph_b1_ms")]
    if failed:
        out.append(f"The graph decode at batch size one failed for {join(failed)} (the eager figures stand; the table "
                   "gives the error).")
    return out


RNG_AFTER_CAPTURE = "Offset increment outside graph capture"  # torch's error once a capture failed mid-way


def _benchmark_sources_text(run: dict, ref_name: str) -> list[str]:
    """Which formats come from a record other than the main one, and why (the ratios never mix processes; how far
    the reference itself moved between the processes is said by :func:`_benchmark_repeats_text`)."""
    elsewhere = [r for r in run["rows"] if r.get("from_record")]
    if not elsewhere:
        return []
    why = sorted({" ".join(str(r.get("failed_in_main") or "").split())[:120] for r in elsewhere} - {""})
    out = [f"{join([r['label'] for r in elsewhere])} did not run in `{run['record']}`"
           + (f" ({'; '.join(why)})" if why else "") + "; "
           + join([f"{r['label']} was measured in `{r['from_record']}`" for r in elsewhere])
           + f", each in a process of its own beside its own {ref_name}, and its ratios are to that {ref_name}."]
    culprit = None  # the last failed capture before the first format that met the generator's error
    for r in run["rows"]:
        if RNG_AFTER_CAPTURE in str(r.get("failed_in_main") or ""):
            break
        if r.get("graph_error") and not r.get("from_record"):
            culprit = r["label"]
    else:
        culprit = None
    if culprit:
        out.append(f"That error is what a failed CUDA-graph capture leaves behind: after the capture of {culprit} "
                   "failed, the process's CUDA random-number generator (which builds each format's random weights) "
                   "no longer worked.")
    return out


def _benchmark_repeats_text(run: dict, ref_name: str) -> list[str]:
    """Formats of the main record measured again in other records (each in a process of its own, beside its own
    reference, whether or not the main record lacked them): each one's batch-1 ratio there beside the one here, and
    how far the reference's own time moved across the processes that measured it. Ratios are said through the
    static-cache graph where both have it, else through `generate`."""
    from studylib.report.tables import fmt_sig

    reps = run.get("repeats") or {}
    said = []
    for variant, rep in reps.items():
        if variant == ref_name:
            continue
        main = rep["main"]
        for other in rep["others"]:
            key, how = (("graph_b1_ratio", "through the static-cache graph") if main.get("graph_b1_ratio")
                        and other.get("graph_b1_ratio") else ("decode_b1_ratio", "through `generate`"))
            if main.get(key) and other.get(key):
                said.append(f"{rep['label']} in `{other['record']}` ({fmt_sig(other[key])}× its {ref_name} {how}; "
                            f"{fmt_sig(main[key])}× here)")
    out = []
    if said:
        out.append(f"Measured again, each in a process of its own beside its own {ref_name}: {join(said)}.")
    ref = reps.get(ref_name)
    every = [ref["main"], *ref["others"]] if ref else []
    spans = []
    for key, what in (("decode_b1_ms", "through `generate`"), ("graph_b1_ms", "through the static-cache graph")):
        values = [v[key] for v in every if v.get(key)]
        if len(values) > 1:
            spans.append(f"{fmt_sig(min(values))} to {fmt_sig(max(values))} ms {what}")
    if spans:
        out.append(f"Across these {len(every)} processes, {ref_name}'s own batch-one time per token ranged from "
                   f"{join(spans)}.")
    return out


def text_benchmark(ctx: Context) -> str:
    """What the 7B-architecture benchmark found, from ``<tables>/benchmark.json``; says so when it is not measured.
    A record with graph decode figures (static KV cache + CUDA graph) is described with them too."""
    from studylib.bench.benchmark import describe_architecture, has_graph
    from studylib.report.tables import _kernel_label, fmt_sig, load_benchmark

    runs = (load_benchmark(ctx.tables) or {}).get("runs") or []
    if not runs:
        return ("The benchmark has not been measured yet (no record of notebook `40_efficiency_7b` in these records); "
                "its table and figure fill in when the record lands.")
    bench = load_benchmark(ctx.tables) or {}
    run = bench.get("combined") or runs[0]  # formats that failed in one record taken from another (each own fp16)
    ref_name = run.get("reference") or "fp16"
    ok = [r for r in run["rows"] if r["status"] == "ok"]
    ref = next((r for r in ok if r["variant"] == ref_name), None)
    graph = has_graph(run["rows"])
    gen = " through `generate`" if graph else ""  # said only where the graph figures stand beside these
    out = []
    if ref is not None and ref.get("floor_ms"):
        out.append(f"On {run['device']}, {describe_architecture(run['architecture'])} in {ref_name} decodes at "
                   f"{fmt_sig(ref['decode_b1_ms'])} ms per token at batch size one{gen}, "
                   f"{fmt_sig(ref['floor_ratio'])}× its "
                   f"floor of {fmt_sig(ref['floor_ms'])} ms (its weights over the measured copy bandwidth of "
                   f"{fmt_sig(run['bandwidth_gb_s'])} GB/s).")
    others = sorted((r for r in ok if r["variant"] != ref_name and r.get("decode_b1_ratio")),
                    key=lambda r: r["decode_b1_ratio"])
    faster = [r for r in others if r["decode_b1_ratio"] < 1]
    if faster:
        best = faster[0]
        out.append(f"The fastest format at batch size one{gen} is {best['label']} "
                   f"({fmt_sig(best['decode_b1_ratio'])}× "
                   f"the time of {ref_name}, {_kernel_label(best['kernel'])}).")
        also = [f"{r['label']} ({fmt_sig(r['decode_b1_ratio'])}×)" for r in faster[1:]]
        if also:
            out.append(f"Also faster than {ref_name}: {join(also)}.")
    elif others:
        out.append(f"No format decodes faster than {ref_name} at batch size one{gen}.")
    slower = [f"{r['label']} ({fmt_sig(r['decode_b1_ratio'])}×)" for r in others if r["decode_b1_ratio"] > 1]
    if slower:
        out.append(f"Slower than {ref_name} at batch size one{gen}: {join(slower)}.")
    if graph:
        out += _benchmark_graph_text(run, ok, ref_name)
    sparse = next((r for r in ok if r["variant"] == "sparse-2of4"), None)
    if sparse is not None and sparse.get("prefill_speedup"):
        out.append(f"The `2:4` sparse model prefills at {fmt_sig(sparse['prefill_speedup'])}× the speed of {ref_name} "
                   f"({_kernel_label(sparse['kernel'])}).")
    failed = [f"{r['label']} ({r['status']})" for r in run["rows"] if r["status"] != "ok"]
    if failed:
        out.append(f"Did not run: {join(failed)}; the table says why.")
    out += _benchmark_sources_text(run, ref_name)
    out += _benchmark_repeats_text(run, ref_name)
    comp = run.get("compression") or {}
    names = (("gptq-w4", "GPTQ 4-bit"), ("wanda", "Wanda"))
    done = [f"{name} {fmt_sig(comp[key]['seconds'])} s"
            + (f" (in `{comp[key]['from_record']}`)" if comp[key].get("from_record") else "")
            for key, name in names if (comp.get(key) or {}).get("status") == "ok"]
    if done:
        out.append(f"Compressing the model at this scale took: {join(done)} (wall time on the same device).")
    not_timed = [name for key, name in names if key in comp and comp[key].get("status") != "ok"]
    if not_timed:
        out.append(f"Not timed in these records: {join(not_timed)} (the table gives the error).")
    goals = run.get("targets") or []
    if goals:
        def said(g):
            name, _, unit = g["target"].partition(", ")
            value = fmt_sig(g["measured"])
            value = f"{value} s" if unit == "seconds" else f"{value}× {unit[2:]}" if unit.startswith("x ") \
                else f"{value}×"
            return f"{name} {value} (goal {g['goal'].replace('<=', '≤').replace('>=', '≥')})"
        met = [said(g) for g in goals if g.get("met")]
        missed = [said(g) for g in goals if g.get("met") is False]
        unmeasured = [g["target"].partition(", ")[0] for g in goals if g.get("met") is None]
        parts = ([f"met: {join(met)}"] if met else []) + ([f"not met: {join(missed)}"] if missed else []) \
            + ([f"not measured: {join(unmeasured)}"] if unmeasured else [])
        out.append("Against the targets set for the study (reported, never asserted; the table lists them): "
                   + "; ".join(parts) + ".")
    return " ".join(out)


TEXTS = {
    "runs_overview": text_runs_overview,
    "teacher_vs_base": text_teacher_vs_base,
    "teachers": text_teachers,
    "compressed": text_compressed,
    "pareto": text_pareto,
    "speed": text_speed,
    "pending_figures": text_pending_figures,
    "teachers_setup": text_teachers_setup,
    "benchmark": text_benchmark,
    "students": text_students,
}


# ----------------------------------------------------------------------------------------------- values


def values(ctx: Context) -> dict:
    """setup.json plus values computed from the significance table and the reference."""
    sig = ctx.sig
    vals = dict(ctx.setup)
    n_samples = sig["n_samples"].dropna() if sig is not None and len(sig) else []
    alpha = sig["alpha"].dropna() if sig is not None and len(sig) else []
    vals["n_samples"] = int(n_samples.iloc[0]) if len(n_samples) else N_SAMPLES
    vals["alpha"] = float(alpha.iloc[0]) if len(alpha) else ALPHA
    vals["reference"] = ctx.reference
    vals["reference_run"] = parse_reference(ctx.reference)[1]
    vals["n_directions"] = len(ctx.setup.get("directions") or [])
    vals["n_languages"] = len(ctx.setup.get("languages") or [])
    dates = sorted(set(ctx.setup.get("dates") or []))
    vals["date_range"] = (f"between {dates[0]} and {dates[-1]}" if len(dates) > 1 else f"on {dates[0]}" if dates
                          else "at dates not recorded")
    devices = ctx.setup.get("devices") or []
    vals["device"] = join(devices) if devices else "no device recorded"
    return vals


def lookup(vals: dict, path: str):
    node = vals
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise PaperError(f"unknown value {path!r}")
    return node


def render_value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return join([render_value(x) for x in v]) if v else "none"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {render_value(x)}" for k, x in v.items())
    return str(v)


# ----------------------------------------------------------------------------------------------- placeholders


def _figure(ctx: Context, name: str) -> dict | None:
    for f in ctx.manifest.get("figures") or []:
        if f.get("name") == name:
            return f
    return None


def _src(ctx: Context, path: Path) -> str:
    if ctx.embed:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    return Path(os.path.relpath(path, ctx.out)).as_posix()


def fill(kind: str, arg: str, caption: str | None, ctx: Context, vals: dict) -> str:
    if kind == "table":
        path = ctx.tables / f"{arg}.md"
        if not path.is_file():
            raise PaperError(f"table {arg!r} not found: {path} (run `make tables`)")
        ctx.counters["table"] += 1
        head = f"**Table {ctx.counters['table']}.** {caption}" if caption else f"**Table {ctx.counters['table']}.**"
        return f'\n<div class="table" id="table-{arg}">\n\n{head}\n\n{path.read_text(encoding="utf-8")}\n</div>\n'
    if kind == "figure":
        fig = _figure(ctx, arg)
        if fig is None:
            raise PaperError(f"figure {arg!r} is not in {ctx.figures / 'figures.json'} (run `make figures`)")
        if fig.get("status") != "drawn":
            return f'\n<p class="pending"><em>{html.escape(fig["title"])}: not drawn yet — {html.escape(fig["reason"])}.</em></p>\n'
        png = ctx.figures / f"{arg}.png"
        if not png.is_file():
            raise PaperError(f"figure {arg!r} is listed as drawn but {png} is missing")
        ctx.counters["figure"] += 1
        pdf = Path(os.path.relpath(ctx.figures / f"{arg}.pdf", ctx.out)).as_posix()
        return (f'\n<figure id="figure-{arg}"><img src="{_src(ctx, png)}" alt="{html.escape(fig["title"])}">'
                f'<figcaption><strong>Figure {ctx.counters["figure"]}.</strong> {html.escape(fig["caption"])} '
                f'<a href="{pdf}">PDF</a></figcaption></figure>\n')
    if kind == "value":
        return render_value(lookup(vals, arg))
    if kind == "text":
        if arg not in TEXTS:
            raise PaperError(f"unknown generated text {arg!r}; known: {', '.join(TEXTS)}")
        return TEXTS[arg](ctx)
    raise PaperError(f"unknown placeholder kind {kind!r} in {{{{ {kind}:{arg} }}}}")


def expand(template: str, ctx: Context) -> str:
    vals = values(ctx)
    return PLACEHOLDER.sub(lambda m: fill(m.group(1), m.group(2), m.group(3), ctx, vals), template)


def to_html(markdown_text: str, title: str, css: str) -> str:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "typographer": False}).enable("table")
    body = md.render(markdown_text)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{css}</style>\n</head>\n<body>\n<main>\n{body}</main>\n"
            "</body>\n</html>\n")


def load_context(results=None, profile: str | None = "full", tables=None, figures="figures", out="paper/build",
                 reference: str = DEFAULT_REFERENCE, embed: bool = False) -> Context:
    tables = Path(tables or records.results_dir(results) / "tables")
    figures = Path(figures)
    setup_file = tables / "setup.json"
    if not setup_file.is_file():
        raise PaperError(f"{setup_file} not found (run `make tables`)")
    manifest_file = figures / "figures.json"
    if not manifest_file.is_file():
        raise PaperError(f"{manifest_file} not found (run `make figures`)")
    return Context(tables=tables, figures=figures, out=Path(out),
                   summary=load_summary(summary_path(results, profile)), sig=read_table(table_path(results, profile)),
                   setup=json.loads(setup_file.read_text(encoding="utf-8")),
                   manifest=json.loads(manifest_file.read_text(encoding="utf-8")), reference=reference, embed=embed)


def build(results=None, profile: str | None = "full", tables=None, figures="figures", out="paper/build",
          reference: str = DEFAULT_REFERENCE, template: str | Path = TEMPLATE, embed: bool = False) -> Path:
    """Fill the template and write ``<out>/paper.html`` (and the filled ``<out>/paper.md``)."""
    from studylib.report.significance import _write_text_atomic

    ctx = load_context(results, profile, tables, figures, out, reference, embed)
    text = expand(Path(template).read_text(encoding="utf-8"), ctx)
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "Paper")
    css = STYLE.read_text(encoding="utf-8") if STYLE.is_file() else ""
    _write_text_atomic(text, ctx.out / "paper.md")
    return _write_text_atomic(to_html(text, title, css), ctx.out / "paper.html")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.report.paper", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--profile", choices=records.PROFILES, default="full")
    ap.add_argument("--tables", type=Path, default=None, help="default: <results>/tables")
    ap.add_argument("--figures", type=Path, default=Path("figures"))
    ap.add_argument("--out", type=Path, default=Path("paper/build"))
    ap.add_argument("--reference", default=DEFAULT_REFERENCE)
    ap.add_argument("--template", type=Path, default=TEMPLATE)
    ap.add_argument("--embed", action="store_true", help="inline the figures (a self-contained HTML file)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(build(args.results, args.profile, args.tables, args.figures, args.out, args.reference, args.template,
                    args.embed))
    except PaperError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
