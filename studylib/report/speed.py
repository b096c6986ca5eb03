"""The speed of every 270M format measured in a job of its own (notebook ``42_speed``): a table and a sentence.

Each ``42_speed`` record holds one format and the model it was built from, timed in the same process; the ratios
are the format's time per token, peak memory and storage over that reference's (its time per token: the mean of its
readings before and after the format where a record has both, their gap the drift shown beside it). Only ratios of
one record are set side by side: records made on different GPUs or in different sessions are compared through their
ratios alone. A timing taken while another process computed on the GPU (``gpu_processes`` > 1) is marked as shared.
"""

from __future__ import annotations

from studylib.core import records
from studylib.report.markdown import code, fmt, join, md_table, natural, read_json

NOTEBOOK = "42_speed"


def _shared(eff: dict) -> bool:
    return any((t.get("gpu_processes") or 0) > 1 for t in (eff.get("decode") or {}).values())


def speed_data(recs: list[dict]) -> list[dict]:
    """One row per ``42_speed`` record: the format, its device and date, each batch size's time per token beside the
    reference's and their ratio, peak memory and storage ratios, and whether the GPU was shared while timing."""
    rows = []
    for rec in sorted((r for r in recs if r.get("notebook") == NOTEBOOK and r.get("speed")),
                      key=lambda r: natural(r["run"])):
        s, eff = rec["speed"], rec.get("efficiency") or {}
        env = rec.get("environment") or {}
        batches = {}
        for key, got in (eff.get("decode") or {}).items():
            batches[key] = {"ms": got.get("time_per_token_ms"),
                            "reference_ms": (s.get("reference_ms") or {}).get(key)
                            or ((s["reference"].get("decode") or {}).get(key) or {}).get("time_per_token_ms"),
                            "ratio": s["ratios"].get(f"time_per_token_{key}"),
                            "drift": (s.get("drift") or {}).get(f"time_per_token_{key}")}
        rows.append({"record": f"{rec['notebook']}/{rec['run']}", "variant": s["variant"],
                     "device": ((env.get("device") or {}).get("name")), "date": str(env.get("date") or "")[:10],
                     "batches": batches, "peak_memory_ratio": s["ratios"].get("peak_memory_bytes"),
                     "storage_ratio": s["ratios"].get("storage_bytes"),
                     "shared": _shared(eff) or _shared(s["reference"]) or _shared(s.get("reference_after") or {}),
                     "stale": records.is_stale(rec)})
    return rows


def speed_table(rows: list[dict]) -> str:
    """Markdown: a row per format, ratios to the reference of its own process."""
    if not rows:
        return ""
    sizes = sorted({k for r in rows for k in r["batches"]}, key=natural)
    header = ["Format", *(f"{k.replace('batch', 'batch ')} ms: format / ref (×)" for k in sizes),
              f"Ref drift ({sizes[0].replace('batch', 'batch ')})", "Peak memory × ref", "Storage × ref", "GPU", "Date"]
    body = []
    for r in rows:
        cells = []
        for k in sizes:
            b = r["batches"].get(k) or {}
            cells.append(f"{fmt(b.get('ms'), 2)} / {fmt(b.get('reference_ms'), 2)} ({fmt(b.get('ratio'), 2)}×)"
                         if b.get("ms") is not None else "—")
        drift = (r["batches"].get(sizes[0]) or {}).get("drift")
        body.append([code(r["variant"]) + (" (GPU shared)" if r["shared"] else "") + (" §" if r["stale"] else ""),
                     *cells, f"{drift:.3f}×" if drift else "— (timed once)", fmt(r["peak_memory_ratio"], 2),
                     fmt(r["storage_ratio"], 2), r["device"] or "—", r["date"]])
    return md_table(header, body, "l" + "r" * (len(sizes) + 3) + "ll")


def text_speed_formats(ctx) -> str:
    """A sentence from ``<tables>/speed.json``: which formats decode faster than the model they were built from."""
    rows = read_json(ctx.tables / "speed.json") or []
    if not rows:
        return ("No format has been timed in a job of its own yet (notebook `42_speed`); the evaluation runs' times "
                "above are all there is.")
    first = next(iter(sorted({k for r in rows for k in r["batches"]}, key=natural)), None)
    timed = [(r["variant"], r["batches"][first]["ratio"]) for r in rows
             if first in r["batches"] and r["batches"][first].get("ratio") is not None and r["variant"] != "bf16"]
    faster = [f"{code(v)} {x:.2f}×" for v, x in sorted(timed, key=lambda t: t[1]) if x < 1]
    slower = [f"{code(v)} {x:.2f}×" for v, x in sorted(timed, key=lambda t: t[1]) if x >= 1]
    shared = [r["variant"] for r in rows if r["shared"]]
    refs = [r["batches"][first]["reference_ms"] for r in rows if (r["batches"].get(first) or {}).get("reference_ms")]
    drifts = [r["batches"][first]["drift"] for r in rows if (r["batches"].get(first) or {}).get("drift")]
    parts = ([f"faster: {join(faster)}"] if faster else []) + ([f"not faster: {join(slower)}"] if slower else [])
    return (f"Timed each in a job of its own beside the model it was built from "
            f"({first.replace('batch', 'batch size ')}, time per token over the reference's): " + "; ".join(parts) + "."
            + (f" The GPU was shared while timing {join(map(code, shared))}." if shared else "")
            + (f" The reference itself read {min(refs):.2f} to {max(refs):.2f} ms a token in these {len(refs)} jobs: "
               "times are compared only within a job, as ratios." if len(refs) > 1 else "")
            + (f" Timed again after the format, the reference moved by a factor of {min(drifts):.3f} to "
               f"{max(drifts):.3f} within its job ({len(drifts)} of {len(rows)} jobs timed it twice)." if drifts else ""))
