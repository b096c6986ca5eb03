"""The evaluation engines compared on one model (notebook 41): ``engines.json``, ``engines.md`` and the paper's text.

Every number is read from the 41_engines records: each pass's decoding time, segments and tokens, its chrF++ per
direction group, the share of hypotheses the repeat (the same pool again) and the rerun (each direction alone)
reproduced and the share two engines share, with the paired bootstrap of their mean chrF++ difference.
"""

from __future__ import annotations

from studylib.core import records
from studylib.report.markdown import code, fmt, fmt_sig, md_table, read_json, signed, stale_mark, stale_note

NOTEBOOK = "41_engines"
ENGINE_NAMES = {"hf": "transformers `generate`", "vllm": "vLLM"}
POOLS = {"first": "all directions", "repeat": "all directions, again", "rerun": "each direction alone"}


def engines_data(recs: list[dict]) -> list[dict]:
    """One entry per 41_engines record: its model, passes, agreement, repeat and rerun, as the table and text read
    them."""
    out = []
    for rec in sorted((r for r in recs if r.get("notebook") == NOTEBOOK and r.get("engines")), key=lambda r: r["run"]):
        block, params = rec["engines"], rec.get("params") or {}
        passes = [{"engine": p["engine"], "version": (p.get("info") or {}).get("version"),
                   "batch_invariant": (p.get("info") or {}).get("batch_invariant"), "pooled": p["pooled"],
                   "chunked_prefill": _kwargs(p).get("enable_chunked_prefill", True),
                   "flash_attn": (_kwargs(p).get("attention_config") or {}).get("flash_attn_version"),
                   "seconds": p["seconds"], "start_seconds": p.get("start_seconds"), "segments": p["segments"],
                   "new_tokens": p["new_tokens"], "segments_per_s": p.get("segments_per_s"),
                   "chrf++": {g: (p.get("averages") or {}).get(g, {}).get("chrf++") for g in ("xx-en", "en-xx")}}
                  for p in block["passes"]]
        seen = set()
        for p in passes:  # the first pooled pass of an engine, its repeat (pooled again), its rerun (not pooled)
            p["kind"] = "rerun" if not p["pooled"] else "repeat" if p["engine"] in seen else "first"
            seen.add(p["engine"])
        out.append({"record": f"{rec['notebook']}/{rec['run']}", "run": rec["run"], "stale": records.is_stale(rec),
                    "model": params.get("model_id"), "device": ((rec.get("environment") or {}).get("device") or {})
                    .get("name"), "date": str((rec.get("environment") or {}).get("date") or "")[:10],
                    "max_new_tokens": params.get("max_new_tokens"), "batch_size": params.get("batch_size"),
                    "reference": block["reference"], "passes": passes, "agreement": block.get("agreement") or {},
                    "repeat": block.get("repeat"), "rerun": block.get("rerun")})
    return out


def _kwargs(entry: dict) -> dict:
    """The vLLM arguments a pass's engine started with (empty for hf)."""
    return (entry.get("info") or {}).get("kwargs") or {}


def engines_table(data: list[dict]) -> str:
    """Each record's passes: engine, pooling, decoding time, segments per second, chrF++ by direction group."""
    if not data:
        return "No engines record yet (notebook 41_engines).\n"
    header = ["Record", "Engine", "Pool", "Decoding (s)", "Start (s)", "Segments", "Segments/s", "chrF++ xx→en",
              "chrF++ en→xx"]
    body = []
    for run in data:
        for p in run["passes"]:
            body.append([f"{run['record']}{stale_mark(run['stale'])}",
                         f"{ENGINE_NAMES.get(p['engine'], p['engine'])} {p['version'] or ''}".strip(),
                         POOLS[p.get("kind", "first" if p["pooled"] else "rerun")], fmt(p["seconds"]),
                         "—" if p["start_seconds"] is None else fmt(p["start_seconds"]), str(p["segments"]),
                         fmt(p["segments_per_s"]), fmt(p["chrf++"]["xx-en"], 2), fmt(p["chrf++"]["en-xx"], 2)])
    note = stale_note(any(run["stale"] for run in data))
    return md_table(header, body, "lllrrrrrr") + (f"\n{note}\n" if note else "")


def record_text(run: dict) -> list[str]:
    by = {}
    for p in run["passes"]:
        by.setdefault((p["engine"], p["pooled"]), p)
    ref = by.get((run["reference"], True))
    out = []
    if ref is None:
        return out
    where = f"In {code(run['record'])} ({ref['segments']:,} segments, {run['device']})"
    out.append(f"{where}, {ENGINE_NAMES.get(ref['engine'], ref['engine'])} decoded the test sets in "
               f"{fmt(ref['seconds'])} s.")
    for name, agree in run["agreement"].items():
        p = by.get((name, True))
        if p is None:
            continue
        c = agree.get("chrf++") or {}
        start = f" after an engine start of {fmt(p['start_seconds'])} s" if p.get("start_seconds") else ""
        out.append(f"{ENGINE_NAMES.get(name, name)} {p['version']} decoded the same prompts in {fmt(p['seconds'])} s"
                   f"{start} ({fmt_sig(ref['seconds'] / p['seconds'])}× faster); {fmt(100 * agree['share'])}% of its "
                   f"hypotheses are the reference engine's, and its mean chrF++ differs by {signed(c['delta'], 2)} "
                   f"(95% paired bootstrap interval {signed(c['ci_low'], 2)} to {signed(c['ci_high'], 2)}, "
                   f"{c['n_samples']} resamples), "
                   + ("an interval that holds 0: within noise." if c["ci_low"] <= 0 <= c["ci_high"]
                      else "an interval that excludes 0."))
    repeat = run.get("repeat")
    if repeat:
        out.append(f"Decoding the same pool again with {ENGINE_NAMES.get(repeat['engine'], repeat['engine'])} "
                   f"repeated {fmt(100 * repeat['share'], 2)}% of the hypotheses.")
    rerun = run.get("rerun")
    if rerun:
        p = by.get((rerun["engine"], False))
        mode = [] if not p else (["batch-invariant mode on"] if p.get("batch_invariant") else []) + (
            [] if p.get("chunked_prefill", True) else ["every prompt prefilled whole"]) + (
            [f"FlashAttention {p['flash_attn']}"] if p.get("flash_attn") else [])
        how = f" ({', '.join(mode)})" if mode else ""
        out.append(f"Decoded again by {ENGINE_NAMES.get(rerun['engine'], rerun['engine'])}"
                   f"{how} with each direction as a pool of its own, "
                   f"{fmt(100 * rerun['share'], 2)}% of the hypotheses came out the same"
                   + (f"; the least in {min(rerun['per_direction'], key=rerun['per_direction'].get)} "
                      f"({fmt(100 * min(rerun['per_direction'].values()), 1)}%)." if rerun["share"] < 1 else "."))
    return out


def text_engines(ctx) -> str:
    """What the engines records found, from ``<tables>/engines.json``; says so when there is none."""
    data = read_json(ctx.tables / "engines.json") or []
    if not data:
        return "The engines have not been compared yet (no 41_engines record)."
    return " ".join(s for run in data for s in record_text(run))
