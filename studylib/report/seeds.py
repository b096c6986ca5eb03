"""How much does a run move with its seed? Records identical but for ``params.seed``, grouped.

Per group and direction group: the mean ± sample standard deviation of chrF++ over the seeds, beside the half-width
of one seed's 95 % test-sampling interval (the paired bootstrap of its difference to the reference, from the
significance table), so the seed-to-seed spread can be read against what the test sample alone resolves. Only groups
of two or more seeds are listed.
"""

from __future__ import annotations

import json
import statistics

from studylib.report import significance as S
from studylib.report.markdown import arrow, md_table, read_json

IGNORED = ("seed", "run_name")  # what may differ between the records of one group
METRIC = "chrf++"


def identity(record: dict) -> str:
    """What a record is apart from its seed: notebook and params without :data:`IGNORED`."""
    params = {k: v for k, v in (record.get("params") or {}).items() if k not in IGNORED}
    return json.dumps([record.get("notebook"), params], sort_keys=True, default=str)


def seed_groups(recs: list[dict]) -> list[list[dict]]:
    """Records grouped by :func:`identity`, in the order first seen (every group, one seed or more)."""
    groups: dict[str, list[dict]] = {}
    for rec in recs:
        groups.setdefault(identity(rec), []).append(rec)
    return list(groups.values())


def n_seeds(group: list[dict]) -> int:
    return len({(r.get("params") or {}).get("seed") for r in group})


def _half_width(sig, record: dict, group: str):
    """Half the 95 % interval of ``record``'s difference to the reference in ``group`` (None when not tested)."""
    if sig is None or not len(sig):
        return None
    hit = sig[(sig["notebook"] == record["notebook"]) & (sig["run"] == record["run"]) & (sig["direction"] == group)
              & (sig["metric"] == METRIC) & sig["comparable"].map(bool)]
    return None if not len(hit) else float(hit.iloc[0]["ci_high"] - hit.iloc[0]["ci_low"]) / 2


def seeds_data(recs: list[dict], sig=None) -> list[dict]:
    """One entry per group of two or more seeds: runs, seeds, and per direction group mean, sd and half-width."""
    out = []
    for group in seed_groups([r for r in recs if r.get("averages")]):
        if n_seeds(group) < 2:
            continue
        entry = {"notebook": group[0]["notebook"], "runs": [r["run"] for r in group],
                 "seeds": sorted((r.get("params") or {}).get("seed") for r in group), "groups": {}}
        for g in S.GROUPS:
            scores = [(r["averages"].get(g) or {}).get(METRIC) for r in group]
            scores = [s for s in scores if isinstance(s, (int, float))]
            if len(scores) < 2:
                continue
            entry["groups"][g] = {"mean": statistics.fmean(scores), "sd": statistics.stdev(scores), "n": len(scores),
                                  "half_width": _half_width(sig, group[0], g)}
        out.append(entry)
    return out


NONE = "No run has several seeds yet: every difference is tested on the test sample of one seed."


def seeds_table(data: list[dict]) -> str:
    """Markdown: per group and direction group, chrF++ mean ± sd over seeds and one seed's interval half-width."""
    if not data:
        return NONE + "\n"
    header = ["Notebook", "Runs", "Seeds", "Group", "chrF++ mean ± sd", "one seed's ±95 % (test sampling)"]
    body = []
    for e in data:
        for g, v in e["groups"].items():
            hw = "—" if v["half_width"] is None else f"±{v['half_width']:.2f}"
            body.append([e["notebook"], ", ".join(e["runs"]), ", ".join(map(str, e["seeds"])), arrow(g),
                         f"{v['mean']:.2f} ± {v['sd']:.2f}", hw])
    return md_table(header, body, "llllrr")


def text_seeds(ctx) -> str:
    """The seed spread in a sentence, from ``<tables>/seeds.json``."""
    data = read_json(ctx.tables / "seeds.json") or []
    if not data:
        return NONE
    parts = []
    for e in data:
        for g, v in e["groups"].items():
            hw = "" if v["half_width"] is None else f" (one seed's test-sampling interval ±{v['half_width']:.2f})"
            parts.append(f"{e['notebook']} {arrow(g)}: {v['mean']:.2f} ± {v['sd']:.2f} over {v['n']} seeds{hw}")
    return "Over seeds, chrF++ moves as follows: " + "; ".join(parts) + "."
