"""Choices made on dev: which setting of a sweep the study keeps, read from the dev scores in its records alone.

Two kinds of choice are read. A sweep whose runs trained with early stopping on dev (``training.dev_selection`` in
each record: the curve of dev chrF++, the best score and the step kept, :class:`studylib.core.training.DevSelection`)
is a choice among its settings, e.g. the full fine-tuned teacher's learning rates or Model A's. The study keeps the
setting with the best dev score, averaged over seeds where the sweep has a ``seed`` axis. And a compression run that
chose a parameter of its recipe on dev (``compression.dev_choice``, :func:`studylib.runs.compression.choose_on_dev`:
SmoothQuant's α) made its choice inside the run; its values tried are its rows; so did a decoding run
(``decoding`` in a 02_decoding record: each candidate decoding's dev scores, the one kept), whose rows are its
candidates, labelled by the knobs that differ between them. The test scores are shown beside the
kept setting and play no part in the choice: a setting chosen on test would be tuned on the data that is meant to
judge it.
"""

from __future__ import annotations

import statistics

from studylib.report.markdown import arrow, md_table, read_json

GROUPS = ("xx-en", "en-xx")
METRIC = "chrf++"


def _sweep(record: dict) -> dict:
    """The record's sweep (``what.sweep``: its parent run and the axes of its setting), {} for an unswept run."""
    return ((record.get("what") or {}).get("sweep")) or {}


def _dev(record: dict) -> dict | None:
    return ((record.get("training") or {}).get("dev_selection")) or None


def _setting(record: dict) -> dict:
    """The record's sweep setting without its seed: what the choice is between."""
    axes = _sweep(record).get("axes") or {}
    return {k: v for k, v in axes.items() if k != "seed"}


def _label(setting: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in setting.items()) or "—"


def _test(record: dict) -> dict:
    """The record's test chrF++ per direction group, where it has one."""
    scores = {g: ((record.get("averages") or {}).get(g) or {}).get(METRIC) for g in GROUPS}
    return {g: v for g, v in scores.items() if isinstance(v, (int, float))}


def choices_data(recs: list[dict]) -> list[dict]:
    """One entry per sweep (notebook and parent run) whose records carry a dev score, with two or more settings or
    one: each setting's dev score (mean over its seeds), step kept, and test chrF++ per direction group; ``chosen`` is
    the setting with the best dev score."""
    sweeps: dict[tuple, list[dict]] = {}
    for rec in recs:
        parent = _sweep(rec).get("parent")
        if parent and _dev(rec) and _dev(rec).get("best_score") is not None:
            sweeps.setdefault((rec["notebook"], parent), []).append(rec)
    out = []
    for (notebook, parent), members in sweeps.items():
        settings: dict[str, list[dict]] = {}
        for rec in members:
            settings.setdefault(_label(_setting(rec)), []).append(rec)
        rows = []
        for label, group in settings.items():
            devs = [_dev(r) for r in group]
            row = {"setting": label, "runs": [r["run"] for r in group],
                   "seeds": sorted((r.get("params") or {}).get("seed") for r in group),
                   "dev": statistics.fmean(d["best_score"] for d in devs),
                   "dev_metric": devs[0].get("metric", METRIC),
                   "best_steps": [d.get("best_step") for d in devs],
                   "planned_steps": [d.get("planned_steps") for d in devs],
                   "stopped_early": [bool(d.get("stopped_early")) for d in devs],
                   "dev_n": ((devs[0].get("dev") or {}).get("n")),
                   "test": {}}
            for g in GROUPS:
                scores = [t[g] for t in map(_test, group) if g in t]
                if scores:
                    row["test"][g] = statistics.fmean(scores)
            rows.append(row)
        chosen = max(rows, key=lambda r: r["dev"])
        out.append({"notebook": notebook, "parent": parent, "settings": rows, "chosen": chosen["setting"],
                    "chosen_runs": chosen["runs"]})
    return out




def run_choices(recs: list[dict]) -> list[dict]:
    """One entry per record that chose a recipe parameter on dev inside its run, shaped as :func:`choices_data`'s
    (``within_run`` true): each value tried a row, the test chrF++ on the kept one only (the only one evaluated)."""
    out = []
    for rec in recs:
        choice = (rec.get("compression") or {}).get("dev_choice")
        if not choice or not choice.get("tried"):
            continue
        rows = []
        for t in choice["tried"]:
            kept = t["value"] == choice["chosen"]
            rows.append({"setting": f"{choice['param']} {t['value']}", "runs": [rec["run"]],
                         "seeds": [(rec.get("params") or {}).get("seed")], "dev": t["score"],
                         "dev_metric": choice.get("metric", METRIC), "best_steps": [], "planned_steps": [],
                         "stopped_early": [], "dev_n": (choice.get("dev") or {}).get("n"),
                         "test": _test(rec) if kept else {}})
        out.append({"notebook": rec["notebook"], "parent": rec["run"], "within_run": True, "settings": rows,
                    "chosen": f"{choice['param']} {choice['chosen']}", "chosen_runs": [rec["run"]]})
    return out


def decoding_choices(recs: list[dict]) -> list[dict]:
    """One entry per decoding run (``decoding`` in the record, :func:`studylib.runs.decoding.compare`), shaped as
    :func:`run_choices`'s: each candidate decoding a row, labelled by the knobs that differ between candidates, with
    its dev chrF++ and runaway rate; no test score (a decoding run translates no test segment). ``teacher`` names
    the record of the model it decoded."""
    out = []
    for rec in recs:
        choice = rec.get("decoding") or {}
        candidates = choice.get("candidates") or []
        if not candidates or not choice.get("chosen"):
            continue
        varied = [k for k in candidates[0]["knobs"] if len({repr(c["knobs"].get(k)) for c in candidates}) > 1]

        def label(knobs: dict) -> str:
            return _label({k: knobs.get(k) for k in varied})

        rows = [{"setting": label(c["knobs"]), "runs": [rec["run"]], "seeds": [(rec.get("params") or {}).get("seed")],
                 "dev": c["mean"][METRIC], "dev_metric": choice.get("metric", METRIC),
                 "runaway": c["mean"].get("runaway_rate"), "best_steps": [], "planned_steps": [],
                 "stopped_early": [], "dev_n": (choice.get("dev") or {}).get("n"), "test": {}}
                for c in candidates]
        out.append({"notebook": rec["notebook"], "parent": rec["run"], "within_run": True, "settings": rows,
                    "chosen": label(choice["chosen"]), "chosen_runs": [rec["run"]],
                    "teacher": (rec.get("params") or {}).get("teacher_record")})
    return out


def chosen_record(recs: list[dict], notebook: str, parent: str) -> dict | None:
    """The record the study keeps from the sweep ``parent`` of ``notebook`` (its first seed), or None."""
    for entry in choices_data(recs):
        if entry["notebook"] == notebook and entry["parent"] == parent:
            keep = entry["chosen_runs"][0]
            return next(r for r in recs if r["notebook"] == notebook and r["run"] == keep)
    return None


NONE = "No sweep has been chosen on dev yet: no record of a swept run carries a dev score."


def _steps(row: dict) -> str:
    if not row["best_steps"]:
        return "—"  # chosen inside a run, nothing trained
    return ", ".join(f"{b} of {p}" + (" (stopped)" if s else "")
                     for b, p, s in zip(row["best_steps"], row["planned_steps"], row["stopped_early"]))


def selection_table(data: list[dict]) -> str:
    """Markdown: per sweep and setting, the dev score, the step kept and the test chrF++; the chosen one marked.
    Empty when no sweep has been chosen: the paper then leaves the table out (the text says why)."""
    if not data:
        return ""
    header = ["Notebook", "Sweep", "Setting", "Dev chrF++", "Step kept", *(f"Test chrF++ {arrow(g)}" for g in GROUPS),
              "Kept"]
    body = []
    for e in data:
        for row in e["settings"]:
            body.append([e["notebook"], e["parent"], row["setting"], f"{row['dev']:.2f}", _steps(row),
                         *(f"{row['test'][g]:.2f}" if g in row["test"] else "—" for g in GROUPS),
                         "✓" if row["setting"] == e["chosen"] else ""])
    return md_table(header, body, "lllrlrrc")


def _decoded(entry: dict, data: list[dict]) -> str:
    """For a decoding choice: the teacher it decoded, and whether that teacher is the setting its sweep keeps on dev
    (a decoding chosen for a teacher the study does not keep says nothing yet of the kept one's)."""
    teacher = entry.get("teacher")
    if not teacher:
        return ""
    run = teacher.split("/", 1)[-1].removesuffix(".json")
    sweeps = (e for e in data if not e.get("within_run"))
    sweep = next((e for e in sweeps if any(run in s["runs"] for s in e["settings"])), None)
    if sweep is None:
        return f", decoding {teacher}"
    kept = run in sweep["chosen_runs"]
    return f", decoding {teacher}, " + ("the teacher kept on dev" if kept else
                                         f"a teacher not kept on dev: {sweep['chosen']} was")


def text_selection(ctx) -> str:
    """The choices made on dev in a sentence each, from ``<tables>/selection.json``."""
    data = read_json(ctx.tables / "selection.json") or []
    if not data:
        return NONE
    out = []
    for e in data:
        rows = e["settings"]
        kept = next(r for r in rows if r["setting"] == e["chosen"])
        n = f" on {kept['dev_n']} dev pairs" if kept.get("dev_n") else ""
        if e.get("within_run"):
            others = "; ".join(f"{r['setting']} {r['dev']:.2f}" for r in rows if r is not kept)
            out.append(f"The run `{e['parent']}` ({e['notebook']}{_decoded(e, data)}) chose {kept['setting']} on dev: "
                       f"chrF++ {kept['dev']:.2f}{n}, against {others}; test scores played no part.")
        elif len(rows) == 1:
            out.append(f"Of the sweep `{e['parent']}` ({e['notebook']}), only the setting {kept['setting']} has been "
                       f"run (dev chrF++ {kept['dev']:.2f}{n}); the choice between its settings is still open.")
        else:
            others = "; ".join(f"{r['setting']} {r['dev']:.2f}" for r in rows if r is not kept)
            out.append(f"Of the sweep `{e['parent']}` ({e['notebook']}), the study keeps {kept['setting']}: dev chrF++ "
                       f"{kept['dev']:.2f}{n}, against {others}; test scores played no part.")
    return " ".join(out)
