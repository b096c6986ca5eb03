"""The 7B-architecture efficiency benchmark: a table section, a block of the figure's bars and a few sentences per
benchmark record (a record with a ``benchmark`` section).

A benchmark record is one process: the formats it lists, each measured beside the reference format (fp16) of the same
process. Every ratio is to that record's own reference, and nothing is combined across records, so any number of
records reads with the same code: the one with every format, or one record per format.
"""

from __future__ import annotations

from studylib.bench.schema import LABELS, describe_architecture, graph_not_attempted, has_graph, runs_text
from studylib.core import records
from studylib.report.markdown import (clip, code, fmt_sig, join, md_escape, md_table, missing, natural, read_json,
                                      stale_mark, stale_note)
from studylib.report.plot import Skip

REFERENCE = "fp16"
ROW_KEYS = ("decode_b1_ms", "decode_b1_ratio", "floor_ms", "floor_ratio", "decode_large_ms", "decode_large_ratio",
            "large_batch", "prefill_ms", "prefill_ratio", "prefill_speedup", "prefill_tokens", "peak_memory_bytes",
            "memory_ratio", "storage_bytes", "storage_ratio", "storage_note", "weight_bytes", "floor_bytes", "params",
            "layers")
GRAPH_KEYS = ("graph_b1_ms", "graph_b1_ratio", "graph_floor_ratio", "graph_large_ms", "graph_large_ratio",
              "graph_mode", "graph_error", "host_load")
# a graph decode time and the floor over the eager batch-1 time of the record's own reference: the figure's one scale
VS_REFERENCE = (("graph_b1_vs_ref", "graph_b1_ms", "decode_b1_ms"),
                ("graph_large_vs_ref", "graph_large_ms", "decode_large_ms"),
                ("floor_vs_ref", "floor_ms", "decode_b1_ms"))
COMPRESSION = (("gptq-w4", "GPTQ 4-bit"), ("wanda", "Wanda"))


def graph_failed(row: dict) -> bool:
    """A format whose graph decode was attempted and failed at one batch size or both (its eager figures stand)."""
    return bool(row.get("graph_error")) or str(row.get("graph_mode") or "").startswith("failed")


def reference_row(run: dict) -> dict | None:
    """The measured row of a benchmark run's reference format, or None."""
    return next((r for r in run["rows"] if r["variant"] == run["reference"] and r["status"] == "ok"), None)


def record_rows(record: dict) -> list[dict]:
    """A benchmark record's rows as the reports use them (the record's order), each with its label and with its graph
    times and floor over the eager time of the record's own reference (:data:`VS_REFERENCE`)."""
    bench = record["benchmark"]
    engine = bench.get("engine") or "hf"
    graph = has_graph(bench.get("variants")) and engine == "hf"  # vLLM captures its own graphs: no static-cache figures
    rows = []
    for r in bench.get("variants", []):
        row = {"variant": r["variant"], "label": LABELS.get(r["variant"], r["variant"]), "status": r["status"],
               "kernel": r.get("kernel"), "error": r.get("error"), "engine": engine, **{k: r.get(k) for k in ROW_KEYS}}
        if graph:
            row.update({k: r.get(k) for k in GRAPH_KEYS})
        rows.append(row)
    ref_name = bench.get("reference") or REFERENCE
    ref = next((r for r in rows if r["variant"] == ref_name and r["status"] == "ok"), None)
    for row in rows:
        for key, ms_key, base_key in VS_REFERENCE:
            base = None if ref is None else ref.get(base_key)
            ok = row["status"] == "ok" and not missing(row.get(ms_key)) and not missing(base) and base
            row[key] = row[ms_key] / base if ok else None
    return rows


def benchmark_data(recs: list[dict]) -> dict:
    """Every benchmark record of ``recs`` (by run name) as the table, the figure and the paper read it: its setting,
    rows (:func:`record_rows`), compression times, the study's targets it measured, and whether it is stale."""
    runs = []
    for rec in sorted((r for r in recs if r.get("benchmark")), key=lambda r: natural(r["run"])):
        b = rec["benchmark"]
        compression = {key: {k: entry.get(k) for k in ("status", "seconds", "quantize_seconds", "error",
                                                         "calibration", "sparsity") if entry.get(k) is not None}
                       for key, entry in (b.get("compression") or {}).items()}
        runs.append({"record": f"{rec['notebook']}/{rec['run']}", "run": rec["run"], "stale": records.is_stale(rec),
                     "architecture": b.get("architecture"), "device": b.get("device"),
                     "date": str((rec.get("environment") or {}).get("date") or "")[:10],
                     "weights": b.get("weights"), "bandwidth_gb_s": (b.get("bandwidth") or {}).get("gb_per_s"),
                     "timing": b.get("timing") or {}, "reference": b.get("reference") or REFERENCE,
                     "rows": record_rows(rec), "compression": compression,
                     "targets": [t for t in b.get("targets") or [] if t.get("met") is not None]})
    return {"status": "measured" if runs else "not measured", "runs": runs}


# ----------------------------------------------------------------------------------------------- table


def _x(v) -> str:
    return "—" if missing(v) else f"{fmt_sig(v)}×"


def _gb(n_bytes):
    return None if missing(n_bytes) else n_bytes / 1e9


def _graph_ms(row: dict, key: str) -> str:
    """A graph decode time, or why there is none ("failed", "not measured"); never a number that was not measured."""
    if not missing(row.get(key)):
        return fmt_sig(row[key])
    return "failed" if graph_failed(row) else "not measured"


def _graph_x(row: dict, key: str, ms_key: str) -> str:
    return _x(row.get(key)) if not missing(row.get(ms_key)) else "—"


def _kernel(kernel) -> str:
    """The kernel's name, short: the part before ': ' (what follows lists the layers), or vLLM's linear methods."""
    text = str(kernel or "—")
    head, _, rest = text.partition(": ")
    return clip(text if head.startswith("vllm ") else head, 72)


def _graph_notes(rows: list[dict], ref: str) -> list[str]:
    """What the graph columns are, and which formats' graph decode failed, was not attempted or not measured."""
    ok = [r for r in rows if r["status"] == "ok"]
    modes = {str(r.get("graph_mode") or "") for r in ok}
    how = (["each decoding step (forward, argmax, next input written in place) captured once as a CUDA graph and "
            "replayed"] if "cuda-graph" in modes else []) \
        + (["the same steps run uncaptured (no CUDA graph on this device)"]
           if any(m.startswith("static-cache eager") for m in modes) else [])
    text = [f"Graph columns: decode through a static KV cache, {'; '.join(how)}; × {ref}: relative to {ref}'s graph "
            f"figure; × floor: the graph batch-1 time over the floor. The eager columns are `model.generate`'s."] \
        if how else []
    for label, which in (("Graph decode failed (the eager figures stand)",
                          [(r, r.get("graph_error")) for r in ok if r.get("graph_error")]),
                         ("Graph decode not attempted",
                          [(r, r["graph_mode"].removeprefix("not attempted: ")) for r in ok if graph_not_attempted(r)])):
        if which:
            text.append(f"{label}: " + "; ".join(f"{r['label']} ({md_escape(clip(why))})" for r, why in which) + ".")
    off = [r["label"] for r in ok if str(r.get("graph_mode") or "off").startswith("off")]
    if off:
        text.append("Graph decode not measured: " + ", ".join(off) + ".")
    loads = [v[0] for r in ok for section in ("eager", "graph") for v in ((r.get("host_load") or {}).get(section)
                                                                          or {}).values() if v]
    cpus = sorted({(r.get("host_load") or {}).get("cpus") for r in ok} - {None})
    if loads:
        text.append(f"Host: {'/'.join(str(c) for c in cpus)} CPUs, 1-minute load average {fmt_sig(min(loads))}–"
                    f"{fmt_sig(max(loads))} around the timings.")
    return text


def _compression_text(run: dict) -> str:
    comp = []
    for key, name in COMPRESSION:
        entry = run["compression"].get(key)
        if not entry:
            continue
        if entry.get("status") != "ok":
            comp.append(f"{name}: {entry.get('status')} ({md_escape(clip(entry.get('error'), 90))})")
            continue
        cal = entry.get("calibration") or {}
        extra = (f", of which GPTQModel load + quantize {fmt_sig(entry['quantize_seconds'])} s"
                 if entry.get("quantize_seconds") else "")
        at = f" at sparsity {entry['sparsity']:g}" if entry.get("sparsity") else ""
        comp.append(f"{name}{at}: {fmt_sig(entry['seconds'])} s{extra} "
                    f"({cal.get('samples')} × {cal.get('tokens_per_sample')} random calibration tokens)")
    return "Compression wall time at this scale: " + "; ".join(comp) + "." if comp else ""


def targets_table(run: dict) -> str:
    """Markdown: the study's targets this record measured (reported, never asserted)."""
    body = []
    for g in run["targets"]:
        figure = g.get("figure", "") + (f" (eager: {fmt_sig(g['eager'])})" if not missing(g.get("eager")) else "")
        body.append([g["target"], g["goal"], fmt_sig(g["measured"]), "met" if g["met"] else "not met", figure])
    if not body:
        return ""
    return ("**Targets** measured here (set for the study, reported and never asserted; batch-1 decode targets use "
            "the static-cache graph figure where a format has one)\n\n"
            + md_table(["Target", "Goal", "Measured", "Met", "Figure"], body, "llrll"))


def _section(run: dict) -> str:
    t, ref, rows = run["timing"], run["reference"], run["rows"]
    graph = has_graph(rows)
    large = t.get("large_batch", "—")
    header = ["Format", "Kernel", "Layers", "Batch 1 ms/token", f"× {ref}", "× floor", f"Batch {large} ms/token",
              f"× {ref}", f"Prefill {t.get('prefill_tokens', '—')} ms", "Speed-up", "Peak mem. (GB)", "Storage (GB)"]
    if graph:  # beside each eager decode figure, the graph one
        header[3:8] = ["Batch 1 ms/token (eager)", f"× {ref}", "× floor", "Batch 1 ms/token (graph)", f"× {ref}",
                       "× floor", f"Batch {large} ms/token (eager)", f"× {ref}", f"Batch {large} ms/token (graph)",
                       f"× {ref}"]
    body, notes = [], []
    for r in rows:
        if r["status"] != "ok":
            body.append([r["label"], f"{'unavailable' if r['status'] == 'failed' else 'not run'}: "
                                     f"{clip(r.get('error') or '', 90)}"] + ["—"] * (len(header) - 2))
            continue
        cells = [r["label"], _kernel(r["kernel"]), str(r["layers"]), fmt_sig(r["decode_b1_ms"]),
                 _x(r["decode_b1_ratio"]), _x(r["floor_ratio"]), fmt_sig(r["decode_large_ms"]),
                 _x(r["decode_large_ratio"]), fmt_sig(r["prefill_ms"]), _x(r["prefill_speedup"]),
                 fmt_sig(_gb(r["peak_memory_bytes"])), fmt_sig(_gb(r["storage_bytes"]))]
        if graph:
            cells[6:6] = [_graph_ms(r, "graph_b1_ms"), _graph_x(r, "graph_b1_ratio", "graph_b1_ms"),
                          _graph_x(r, "graph_floor_ratio", "graph_b1_ms")]
            cells[11:11] = [_graph_ms(r, "graph_large_ms"), _graph_x(r, "graph_large_ratio", "graph_large_ms")]
        body.append(cells)
        note = r.get("storage_note") or ""
        if note and not note.startswith("the model saved as it runs"):
            notes.append(f"{r['label']}: {note}")
    arch = describe_architecture(run["architecture"])
    text = [f"{arch[0].upper()}{arch[1:]}, built from its config, with {run['weights']}.",
            f"Device: {run['device']}; copy bandwidth {fmt_sig(run['bandwidth_gb_s'])} GB/s, measured in the same "
            f"process. Times: median of {runs_text(t.get('repeats'))} timed after {runs_text(t.get('warmup'))} of "
            f"warm-up; decode: {t.get('new_tokens')} new tokens after a {t.get('prompt_tokens')}-token prompt, per "
            f"token. × {ref}: time relative to this record's {ref} (below 1 is faster); speed-up: {ref}'s prefill "
            "time over the format's. × floor: batch-1 time per token over the floor (the bytes a decoding step must "
            "read, over the copy bandwidth)."]
    if graph:
        text += _graph_notes(rows, ref)
    if notes:
        text.append("Storage: " + "; ".join(notes) + ".")
    text.append(_compression_text(run))
    head = f"**{run['record']}**{stale_mark(run['stale'])} ({run['device']}, {run['date']}; one process)\n\n"
    goals = targets_table(run)
    return (head + md_table(header, body, "lllr" + "r" * (len(header) - 4)) + "\n" + " ".join(t for t in text if t)
            + "\n" + (f"\n{goals}" if goals else ""))


def benchmark_table(data: dict) -> str:
    """Markdown: one section per benchmark record (its formats' times, floor, prefill, memory and storage as ratios to
    its own reference; formats that did not run say why; its compression times and targets)."""
    runs = (data or {}).get("runs") or []
    if not runs:
        return "*Not measured yet: no benchmark record (notebook `40_efficiency_7b`) in this profile.*\n"
    note = stale_note(any(run["stale"] for run in runs))
    return "\n".join(_section(run) for run in runs) + (f"\n{note}\n" if note else "")


# ----------------------------------------------------------------------------------------------- sentences


def _target_said(g: dict) -> str:
    name, _, unit = g["target"].partition(", ")
    v = fmt_sig(g["measured"])
    v = f"{v} s" if unit == "seconds" else f"{v}× {unit[2:]}" if unit.startswith("x ") else f"{v}×"
    return f"{name} {v} (goal {g['goal'].replace('<=', '≤').replace('>=', '≥')})"


def record_text(run: dict) -> list[str]:
    """What one benchmark record found, every ratio to its own reference."""
    ref_name, rows = run["reference"], run["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    ref = reference_row(run)
    where = f"In {code(run['record'])}, on {run['device']}"
    if ref is None:
        return [f"{where}, {ref_name} was not measured, so no format is compared with it."]
    graph = has_graph(rows)
    gen = (" through `generate`" if graph else
           " through vLLM (its own CUDA graphs)" if any(r.get("engine") == "vllm" for r in rows) else "")
    out = [f"{where}, {describe_architecture(run['architecture'])} in {ref_name} decodes at "
           f"{fmt_sig(ref['decode_b1_ms'])} ms per token at batch size one{gen}, {fmt_sig(ref['floor_ratio'])}× its "
           f"floor of {fmt_sig(ref['floor_ms'])} ms (its weights over the measured copy bandwidth of "
           f"{fmt_sig(run['bandwidth_gb_s'])} GB/s)."]
    others = sorted((r for r in ok if r["variant"] != ref_name and r.get("decode_b1_ratio")),
                    key=lambda r: r["decode_b1_ratio"])
    faster = [r for r in others if r["decode_b1_ratio"] < 1]
    if faster:
        out.append(f"The fastest format at batch size one{gen} is {faster[0]['label']} "
                   f"({fmt_sig(faster[0]['decode_b1_ratio'])}× the time of {ref_name}, "
                   f"{_kernel(faster[0]['kernel'])}).")
        if faster[1:]:
            out.append(f"Also faster than {ref_name}: "
                       + join([f"{r['label']} ({fmt_sig(r['decode_b1_ratio'])}×)" for r in faster[1:]]) + ".")
    elif others:
        out.append(f"No format decodes faster than {ref_name} at batch size one{gen}.")
    slower = [f"{r['label']} ({fmt_sig(r['decode_b1_ratio'])}×)" for r in others if r["decode_b1_ratio"] > 1]
    if slower:
        out.append(f"Slower than {ref_name} at batch size one{gen}: {join(slower)}.")
    if graph and ref.get("graph_b1_ms"):
        how = ("with each decoding step captured once as a CUDA graph and replayed" if ref.get("graph_mode") ==
               "cuda-graph" else f"with the same steps run uncaptured ({ref.get('graph_mode')})")
        floor = f", {fmt_sig(ref['graph_floor_ratio'])}× its floor" if ref.get("graph_floor_ratio") else ""
        out.append(f"Through a static KV cache {how}, {ref_name} decodes at {fmt_sig(ref['graph_b1_ms'])} ms per "
                   f"token at batch size one{floor} ({fmt_sig(ref['decode_b1_ms'] / ref['graph_b1_ms'])}× the speed "
                   "of `generate`).")
        same_way = sorted((r for r in ok if r["variant"] != ref_name and r.get("graph_b1_ratio")),
                          key=lambda r: r["graph_b1_ratio"])
        if same_way:
            out.append(f"Decoded the same way, relative to {ref_name}: "
                       + join([f"{r['label']} {fmt_sig(r['graph_b1_ratio'])}×" for r in same_way]) + ".")
    elif graph and ref.get("graph_error"):
        out.append(f"The static-cache graph decode of {ref_name} failed, so no format is compared with it that way.")
    failed = [r["label"] for r in ok if r["variant"] != ref_name and r.get("graph_error") and not r.get("graph_b1_ms")]
    if failed:
        out.append(f"The graph decode at batch size one failed for {join(failed)} (the eager figures stand; the table "
                   "gives the error).")
    sparse = next((r for r in ok if r["variant"] == "sparse-2of4" and r.get("prefill_speedup")), None)
    if sparse is not None:
        out.append(f"The `2:4` sparse model prefills at {fmt_sig(sparse['prefill_speedup'])}× the speed of {ref_name} "
                   f"({_kernel(sparse['kernel'])}).")
    did_not = [f"{r['label']} ({r['status']})" for r in rows if r["status"] != "ok"]
    if did_not:
        out.append(f"Did not run: {join(did_not)}; the table says why.")
    comp = run["compression"]
    done = [f"{name} {fmt_sig(comp[key]['seconds'])} s" for key, name in COMPRESSION
            if (comp.get(key) or {}).get("status") == "ok"]
    if done:
        out.append(f"Compressing the model at this scale took: {join(done)} (wall time on the same device).")
    not_timed = [name for key, name in COMPRESSION if key in comp and comp[key].get("status") != "ok"]
    if not_timed:
        out.append(f"Not timed here: {join(not_timed)} (the table gives the error).")
    met = [_target_said(g) for g in run["targets"] if g["met"]]
    missed = [_target_said(g) for g in run["targets"] if not g["met"]]
    if met or missed:
        out.append("Against the targets set for the study (reported, never asserted; the table lists them): "
                   + "; ".join(([f"met: {join(met)}"] if met else []) + ([f"not met: {join(missed)}"] if missed
                                                                         else [])) + ".")
    return out


def text_benchmark(ctx) -> str:
    """What each benchmark record found, from ``<tables>/benchmark.json``; says so when none is measured."""
    runs = (read_json(ctx.tables / "benchmark.json") or {}).get("runs") or []
    if not runs:
        return ("The benchmark has not been measured yet (no benchmark record in these records); its table and figure "
                "fill in when the record lands.")
    return " ".join(s for run in runs for s in record_text(run))


# ----------------------------------------------------------------------------------------------- figure

# a decode panel's graph figure, over the eager time of the reference of the row's own record
GRAPH_PANELS = {"decode_b1_ratio": "graph_b1_vs_ref", "decode_large_ratio": "graph_large_vs_ref"}


def _said_once(runs: list[dict], fn) -> str:
    """``fn(run)`` said once where every record gives the same, else per record."""
    said = [fn(run) for run in runs]
    return said[0] if len(set(said)) == 1 else join([f"{s} in {run['run']}" for s, run in zip(said, runs)])


def efficiency_7b(bench):
    """Each format's time per token (batch 1, batch N), prefill time and peak memory relative to the reference of its
    own record, every record's rows one block of bars; the batch-1 panel marks each format's floor. Graph decode
    figures (static KV cache + CUDA graph) are hatched bars beside the eager ones, on the same scale; a missing graph
    figure is labelled, never drawn."""
    import matplotlib.pyplot as plt
    import numpy as np

    runs = [run for run in (bench or {}).get("runs") or [] if reference_row(run) is not None]
    if not runs:
        raise Skip("the 7B-architecture benchmark is not measured yet (no benchmark record with a measured fp16)")
    bars = [(run, r) for run in runs for r in run["rows"]]
    names = [r["label"] + (f" · {run['run']}" if len(runs) > 1 else "") + stale_mark(run["stale"]) for run, r in bars]
    rows = [r for _, r in bars]
    panels = (("decode_b1_ratio", "Decode, batch 1"),
              ("decode_large_ratio", f"Decode, batch {_said_once(runs, lambda run: run['timing'].get('large_batch'))}"),
              ("prefill_ratio", f"Prefill, {_said_once(runs, lambda run: run['timing'].get('prefill_tokens'))} tokens"),
              ("memory_ratio", "Peak memory"))
    y = np.arange(len(rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 0.9 + 0.36 * len(rows)), sharey=True)
    colours = ["#1f77b4" if r["variant"] in (run["reference"], "bf16")  # dense, quantized, pruned
               else "#ff7f0e" if r["variant"].removeprefix("vllm-").startswith(("bnb", "gptq", "awq", "fp8", "int8", "nf4"))
               else "#2ca02c" for run, r in bars]
    graph = has_graph(rows)
    breaks = np.cumsum([len(run["rows"]) for run in runs])[:-1] - 0.5
    for ax, (key, title) in zip(axes, panels):
        values = [r[key] if r["status"] == "ok" and not missing(r.get(key)) else np.nan for r in rows]
        series = [(values, 0.0, 0.62, None)]
        if graph and key in GRAPH_PANELS:  # eager bar above, graph bar (hatched) below, both / the eager reference
            graph_values = [np.nan if missing(r.get(GRAPH_PANELS[key])) else r[GRAPH_PANELS[key]] for r in rows]
            series = [(values, -0.19, 0.36, None), (graph_values, 0.19, 0.36, "////")]
        top = np.nanmax([v for vals, *_ in series for v in vals] + [1.0])
        for vals, offset, height, hatch in series:
            ax.barh(y + offset, vals, color=colours, height=height, zorder=2,
                    **(dict(hatch=hatch, edgecolor="white", linewidth=0) if hatch else {}))
        for i, r in enumerate(rows):
            if r["status"] != "ok":
                ax.text(0.03 * top, i, "unavailable" if r["status"] == "failed" else "not run", va="center",
                        fontsize=7, color="#b22222", style="italic")
                continue
            for n, (vals, offset, _, _) in enumerate(series):
                if not np.isnan(vals[i]):
                    ax.text(vals[i] + 0.02 * top, i + offset, f"{vals[i]:.2f}", va="center", fontsize=6 if graph else 7)
                elif n:  # a graph figure that is missing: say why, never a bar
                    why = ("graph failed" if graph_failed(r) else "graph not attempted" if graph_not_attempted(r)
                           else "vLLM: its own graphs" if r.get("engine") == "vllm" else "graph not measured")
                    ax.text(0.03 * top, i + offset, why, va="center", fontsize=6, color="#b22222", style="italic")
        if key == "decode_b1_ratio":
            ax.scatter([np.nan if missing(r.get("floor_vs_ref")) else r["floor_vs_ref"] for r in rows], y, marker="|",
                       s=160, color="black", linewidths=2, zorder=3)
            title += " (black ticks: floor)"
        if graph and key in GRAPH_PANELS:
            title += "\nplain: generate or vLLM; hatched: static cache"
        for b in breaks:  # between the records
            ax.axhline(b, color="#333333", lw=0.8)
        ax.axvline(1.0, color="#555555", ls="--", lw=0.9, zorder=1)
        ax.set_xlim(0, top * 1.22)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"× {_said_once(runs, lambda run: run['reference'])} of the same record")
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names)
    axes[0].invert_yaxis()
    archs = join(sorted({str(run["architecture"]) for run in runs}))
    fig.suptitle(f"{archs} architecture, random weights, {join(sorted({str(run['device']) for run in runs}))}",
                 fontweight="bold", fontsize=10)
    fig.tight_layout()
    ref_name = _said_once(runs, lambda run: run["reference"])
    caption = (f"Every format on {join(sorted({describe_architecture(run['architecture']) for run in runs}))}, built "
               "from its config with random weights: speed, memory and storage depend on the shapes and the kernels, "
               "not on the weights' values, so no trained checkpoint was needed. "
               + (f"{len(runs)} benchmark records, one block of bars each; each record is one process, and" if
                  len(runs) > 1 else "One process;")
               + f" each bar is the format's time (or peak memory) relative to the {ref_name} measured in the same "
               f"process (below 1: faster or smaller), the median of "
               f"{_said_once(runs, lambda run: runs_text(run['timing'].get('repeats')))} timed after "
               f"{_said_once(runs, lambda run: runs_text(run['timing'].get('warmup')))} of warm-up. Black ticks "
               "(batch 1): the floor, the bytes a decoding step must read over the copy bandwidth measured in the same "
               f"process ({_said_once(runs, lambda run: fmt_sig(run['bandwidth_gb_s']) + ' GB/s')}), relative to "
               f"that {ref_name}'s time.")
    failed = [name for name, r in zip(names, rows) if r["status"] != "ok"]
    graph_failures = [name for name, r in zip(names, rows) if r["status"] == "ok" and r.get("graph_error")]
    if graph:
        caption += (" Hatched bars (decode panels): the same decoding through a static KV cache, with each step "
                    "captured once as a CUDA graph and replayed where the table's graph mode says cuda-graph, also "
                    f"relative to {ref_name}'s eager time, so the floor ticks and both bars share one scale; the table "
                    f"gives the graph times relative to {ref_name}'s graph time.")
        if graph_failures:
            caption += (" Graph decode failed at one batch size or both (the eager bars stand; the table says why): "
                        + ", ".join(graph_failures) + ".")
        skipped = [name for name, r in zip(names, rows) if r["status"] == "ok" and graph_not_attempted(r)]
        if skipped:
            caption += (" Graph decode not attempted (a kernel that cannot be captured; the table says why): "
                        + ", ".join(skipped) + ".")
    if failed:
        caption += " Formats that did not run (their reason is in the table): " + ", ".join(failed) + "."
    if any(run["stale"] for run in runs):
        caption += " " + stale_note(True)
    data = {"records": [run["record"] for run in runs], "formats": names, "not_run": failed}
    if graph:
        data["graph_failed"] = graph_failures
    return fig, caption, data
