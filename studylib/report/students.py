"""The distillation study: the students table and its sentences, from the records of the KD data, the reference
teacher and every student (a record with a ``student`` section). Nothing is filled in that a record does not hold."""

from __future__ import annotations

import json
import math

from studylib.core import records
from studylib.report.markdown import (GROUPS, TESTSET, code, fmt, fmt_sig, md_table, missing, natural, read_json,
                                      stale_mark, stale_note)
from studylib.report.significance import DEFAULT_REFERENCE, parse_reference

# the students the paper names, by the notebook that trains them
NAMED = {"31_model_a": "Model A (the teacher in NF4, recovered with QLoRA)",
         "32_model_b": "Model B (the layer-pruned teacher in NF4, recovered with QLoRA)"}


def _mean_range(values: dict) -> dict | None:
    vals = [v for v in (values or {}).values() if not missing(v)]
    if not vals:
        return None
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _loss_path(log: list) -> dict | None:
    """The first logged training loss, the highest (and its step) and the last, from ``[[step, loss], ...]``."""
    if not log:
        return None
    peak_step, peak = max(log, key=lambda e: e[1])
    return {"first_step": log[0][0], "first": log[0][1], "peak_step": peak_step, "peak": peak,
            "last_step": log[-1][0], "last": log[-1][1]}


def _chrf(averages: dict | None) -> dict:
    return {g: (averages or {}).get(g, {}).get("chrf++") for g in GROUPS}


def students_data(recs: list[dict], reference: str = DEFAULT_REFERENCE) -> dict:
    """The distillation study as the students table and the paper read it: the KD data, the reference teacher, and
    one entry per student record: layers, params, storage (4-bit base + adapter, as saved, decimal GB), training
    data, trainable share, WMT22 chrF++ per direction group, retention (student / teacher chrF++ per direction: mean,
    lowest, highest), the held-out Tatoeba chrF++, its sweep setting and whether its record is stale."""
    ref_nb, ref_run = parse_reference(reference)
    teacher = next((r for r in recs if r.get("notebook") == ref_nb and r.get("run") == ref_run), None)
    kd = next((r for r in recs if r.get("kd")), None)
    out = {"reference": reference, "teacher": None, "kd": None, "students": []}
    if teacher is not None:
        eff = teacher.get("efficiency") or {}
        out["teacher"] = {"record": reference, "stale": records.is_stale(teacher),
                          "layers": (teacher.get("params") or {}).get("num_layers"), "params": eff.get("params"),
                          "storage_bytes": eff.get("storage_bytes"), "wmt_chrf++": _chrf(teacher.get("averages"))}
    if kd is not None:
        k = kd["kd"]
        out["kd"] = {"record": f"{kd['notebook']}/{kd['run']}", "stale": records.is_stale(kd), "pairs": k.get("pairs"),
                     "sources": k.get("sources"), "per_direction": k.get("per_direction"),
                     "dropped_test_overlap": k.get("dropped_test_overlap"),
                     "model": (kd.get("params") or {}).get("model_id")}
    for rec in sorted((r for r in recs if r.get("student")), key=lambda r: (r["notebook"], natural(r["run"]))):
        student, train, params = rec["student"], rec.get("training") or {}, rec.get("params") or {}
        storage = student.get("storage_bytes") or {}
        qlora = train.get("qlora") or {}
        out["students"].append({
            "record": f"{rec['notebook']}/{rec['run']}", "notebook": rec["notebook"], "run": rec["run"],
            "stale": records.is_stale(rec), "sweep": (rec.get("what") or {}).get("sweep"),
            "layers": student.get("layers"), "prune_recipe": student.get("prune_recipe"),
            "params": (rec.get("efficiency") or {}).get("params"),
            "storage_bytes": sum(storage.values()) if storage else None, "storage_parts": storage,
            "training_data": rec.get("training_data") or {}, "ood_total": params.get("ood_total"),
            "trainable_share": qlora.get("trainable_share"), "steps": train.get("steps"),
            "final_loss": train.get("final_loss"), "loss_path": _loss_path(train.get("loss_log") or []),
            "qlora": {k: qlora.get(k) for k in ("r", "alpha", "dropout", "rslora", "double_quant", "compute_dtype")},
            "epochs": params.get("epochs"), "learning_rate": params.get("learning_rate"),
            "wmt_chrf++": _chrf(rec.get("averages")), "ood_chrf++": _chrf(rec.get("ood_averages")),
            "retention": _mean_range(rec.get("retention_chrf++")),
            "retention_by_direction": rec.get("retention_chrf++") or {}, "teacher_record": rec.get("teacher_record")})
    return out


def students_table(data: dict) -> str:
    """Markdown: the teacher and each student -- layers, params (B), storage (GB), training pairs, WMT22 and
    held-out Tatoeba chrF++ by direction group, chrF++ retention against the teacher."""
    students = (data or {}).get("students") or []
    if not students:
        return "*Not measured yet: no student record (notebooks `31_model_a`, `32_model_b`, `33_ood_size`).*\n"
    header = ["Model", "Layers", "Params (B)", "Storage (GB)", "Training pairs (human + KD + OOD)",
              "WMT chrF++ xx→en", "en→xx", "Retention (mean; range)", "Tatoeba chrF++ xx→en", "en→xx"]
    rows = []
    t = data.get("teacher")
    if t:
        rows.append([f"{t['record']} (teacher){stale_mark(t['stale'])}",
                     fmt_sig(t.get("layers")) if t.get("layers") else "—",
                     fmt_sig((t.get("params") or math.nan) / 1e9), fmt_sig((t.get("storage_bytes") or math.nan) / 1e9),
                     "—", fmt(t["wmt_chrf++"].get("xx-en")), fmt(t["wmt_chrf++"].get("en-xx")), "1 (reference)",
                     "not measured", "not measured"])
    for s in students:
        d = s["training_data"]
        pairs = (f"{d.get('total', 0):,} ({d.get('human', 0):,} + {d.get('kd', 0):,} + {d.get('ood', 0):,})"
                 if d else "—")
        ret = s["retention"]
        rows.append([s["record"] + stale_mark(s["stale"]), str(s["layers"] or "—"),
                     fmt_sig((s["params"] or math.nan) / 1e9), fmt_sig((s["storage_bytes"] or math.nan) / 1e9), pairs,
                     fmt(s["wmt_chrf++"].get("xx-en")), fmt(s["wmt_chrf++"].get("en-xx")),
                     f"{ret['mean']:.3f}; {ret['min']:.3f}–{ret['max']:.3f}" if ret else "—",
                     fmt(s["ood_chrf++"].get("xx-en")), fmt(s["ood_chrf++"].get("en-xx"))])
    notes = ["Params: the model's parameters including the LoRA adapter. Storage: the 4-bit NF4 base as saved plus "
             "the adapter's safetensors (the teacher: its bf16 safetensors), decimal GB. Retention: the student's "
             f"chrF++ over the teacher's, per direction on {TESTSET}, averaged over the directions (range: lowest and "
             "highest direction). Tatoeba: held-out pairs of the out-of-domain pool, never trained on; the teacher "
             "was not scored on them."]
    if data.get("kd"):
        k = data["kd"]
        notes.append(f"KD data ({k['record']}{stale_mark(k['stale'])}): {fmt_sig(k.get('pairs'))} teacher "
                     "translations of ALMA training sources, greedy, all directions.")
    notes.append(stale_note(any(x.get("stale") for x in [*students, t or {}, data.get("kd") or {}])))
    return md_table(header, rows, "llrrrrrrrr") + "\n" + " ".join(n for n in notes if n) + "\n"


def _trained_alike(students: list[dict]) -> str | None:
    settings = {json.dumps([s.get("qlora"), s.get("epochs"), s.get("learning_rate")], sort_keys=True)
                for s in students}
    q = students[0].get("qlora") or {}
    if len(settings) != 1 or not q.get("r"):
        return None
    return (f"Every student is trained the same way: LoRA rank {q['r']}, α {q['alpha']}, dropout "
            f"{fmt_sig(q['dropout']) if q.get('dropout') else 0}"
            + (", rank-stabilized scaling" if q.get("rslora") else "")
            + (", double quantization" if q.get("double_quant") else "")
            + f", {q.get('compute_dtype')} compute, {students[0].get('epochs'):g} epoch(s) at learning "
            f"rate {students[0].get('learning_rate'):g}.")


def _ood_sweep_text(students: list[dict]) -> list[str]:
    """What the out-of-domain sweep's settings do in and out of domain, and whether its setting without
    out-of-domain data reproduces Model B."""
    sweep = sorted((s for s in students if "ood_total" in ((s.get("sweep") or {}).get("axes") or {})),
                   key=lambda s: s["ood_total"])
    if len(sweep) < 2:
        return []
    lo, hi = sweep[0], sweep[-1]

    def span(key, group):
        a, b = lo[key].get(group), hi[key].get(group)
        return f"{fmt_sig(a)} to {fmt_sig(b)}" if a is not None and b is not None else "—"

    out = [f"Adding {lo['ood_total']:,} to {hi['ood_total']:,} out-of-domain Tatoeba pairs to Model B's training data "
           f"moves its chrF++ on held-out Tatoeba pairs from {span('ood_chrf++', 'xx-en')} (xx→en) and "
           f"{span('ood_chrf++', 'en-xx')} (en→xx), and on {TESTSET} from {span('wmt_chrf++', 'xx-en')} and "
           f"{span('wmt_chrf++', 'en-xx')}."]
    twin = next((s for s in students if s["notebook"] == "32_model_b"), None)
    zero = next((s for s in sweep if s["ood_total"] == 0), None)
    if twin and zero and twin["retention_by_direction"] and \
            twin["retention_by_direction"] == zero["retention_by_direction"]:
        out.append(f"The sweep's run without out-of-domain data ({code(zero['record'])}) "
                   "repeats Model B's setting in a separate process and reproduces its scores in every direction.")
    return out


def text_students(ctx) -> str:
    """The distillation study from ``<tables>/students.json``: the KD data, what Model A and Model B keep of the
    teacher and what they save, and what out-of-domain pairs do in and out of domain. Says so when nothing is there."""
    data = read_json(ctx.tables / "students.json") or {}
    students = data.get("students") or []
    if not students:
        return ("The distillation study has no records yet (notebooks `30_kd_data` to `33_ood_size`); its table fills "
                "in when they land.")
    out = []
    kd = data.get("kd")
    if kd and kd.get("pairs"):
        out.append(f"The teacher's greedy translations of {kd['pairs']:,} ALMA training sources "
                   f"({code(kd['record'])}) are the distilled data.")
    alike = _trained_alike(students)
    if alike:
        out.append(alike)
    teacher = data.get("teacher") or {}

    def share(num, den):
        return f"{fmt_sig(100 * num / den)} %" if num and den else None

    for s in students:
        if s["notebook"] not in NAMED or not s.get("retention"):
            continue
        r, d = s["retention"], s.get("training_data") or {}
        size = share(s.get("storage_bytes"), teacher.get("storage_bytes"))
        params = share(s.get("params"), teacher.get("params"))
        out.append(f"{NAMED[s['notebook']]}, {s['layers']} layers, trained on "
                   f"{d.get('total', 0):,} pairs, keeps {fmt_sig(100 * r['mean'])} % of the teacher's chrF++ on "
                   f"average over the {r['n']} directions ({fmt_sig(100 * r['min'])} to {fmt_sig(100 * r['max'])} %)"
                   + (f", with {params} of its parameters and {size} of its storage" if params and size else "") + ".")
    for s in students:
        path = s.get("loss_path") or {}
        if s["notebook"] in NAMED and path and path["peak_step"] > path["first_step"] \
                and path["peak"] > 1.1 * path["first"]:
            out.append(f"The training loss of {NAMED[s['notebook']].split(' (')[0]} rose from {fmt_sig(path['first'])} "
                       f"(step {path['first_step']}) to {fmt_sig(path['peak'])} (step {path['peak_step']}) before "
                       f"falling to {fmt_sig(path['last'])} (step {path['last_step']}); no other learning rate was "
                       "tried.")
    return " ".join(out + _ood_sweep_text(students))
