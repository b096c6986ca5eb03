"""The seed studies' claims, each set against what this study measured: ``claims.md`` and ``claims.json``.

The claims are declared as data (:data:`CLAIMS`: an id, the study that makes it, the claim as stated, what decides it
and the rule that decides it). Each is decided from files the report already generates, never from a typed number:
the significance table (every run minus the reference, per direction group, Holm over that table), the comparisons
table (A minus B per direction group, Holm over that table), the 7B benchmark (:func:`studylib.report.benchmark.
benchmark_data`: batch-1 time per token over the fp16 of the same record), chrF++ retention
(:func:`studylib.report.targets.retention`, the figure of ``targets.json``) and the records' efficiency (peak memory
and storage over the reference teacher's).

Every verdict is one of :data:`VERDICTS`, by the rules written out below (:func:`difference_verdict`,
:func:`absence_verdict`, :func:`share_verdict`) and in :data:`RULES_NOTE`, which the table prints:

* a claimed difference ("lower", "beats") is *confirmed* when every tested row (direction group, and setting where
  there are several) differs in the claimed direction after Holm's correction, *not confirmed* when none does and
  some differ the other way, *no difference found* when none differs, *partly* otherwise;
* a claimed absence ("no gain") is *confirmed* when no row is significantly higher, *not confirmed* when every row
  is, *partly* otherwise;
* a claim made of parts ("about the baseline" in each direction group *and* "about 70 % less memory"; one figure per
  4-bit format and decoding path; one retention per student) is *confirmed* when every part holds, *not confirmed*
  when none does, *partly* otherwise;
* *no record* when an input is missing, naming it.

Records scored on a sample of each test set (``params.n_test`` not null) say so in the evidence: a sample resolves
smaller differences less often, so "no difference found" there is weaker than on every segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studylib.core import records
from studylib.report import benchmark, targets
from studylib.report import significance as S
from studylib.report.markdown import (METRIC_LABEL, arrow, fmt_sig, join, md_table, missing, read_json, signed,
                                      stale_mark, stale_note, truthy)

VERDICTS = ("confirmed", "not confirmed", "no difference found", "partly", "no record")
NEAR = 0.97  # chrF++ retention that counts as "about the baseline" and as "keeps 97-100 %"
MEMORY_AT_MOST = 0.40  # "about 70 % less memory": peak memory at most this share of the reference teacher's
# the 4-bit formats of the benchmark, and the words by which a kernel label names a fused dequantize-GEMM kernel
FOUR_BIT = ("bnb-nf4", "gptq-w4", "awq-w4", "vllm-nf4", "vllm-gptq-w4", "vllm-awq-w4")
FUSED = ("fused", "marlin", "machete", "exllama")

NF4 = "11_bnb_nf4/teacher-lora-nf4"
WANDA = "20_wanda/teacher-lora-wanda50"
SQ_NF4 = "14_smoothquant_nf4/teacher-lora-smoothquant-nf4-alpha0.5"
DEPTHS = tuple((f"iterative vs middle layer pruning, {d} layers, after recovery", f"{d} layers") for d in (2, 4, 6, 8))
STUDENTS = (("31_model_a/teacher-nf4-qlora", "student A (NF4 + QLoRA)"),
            ("32_model_b/middle8-nf4-qlora", "student B (middle-8 pruned, NF4 + QLoRA)"))


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    claim: str
    decided_by: str  # the evidence that decides it, in words
    rule: str  # a key of DECIDE (below)
    args: dict = field(default_factory=dict)


CLAIMS = (
    Claim("quantization-near-baseline", "Vincenti et al. (2024); course brief",
          "4-bit quantization keeps quality about the baseline's at about 70 % less memory",
          "NF4 − reference chrF++ per direction group (significance table); peak memory over the reference's",
          "near_baseline", {"run": NF4}),
    Claim("4bit-slower-unfused", "Vincenti et al. (2024); course brief",
          "4-bit weights decode slower than fp16 unless the kernels are fused",
          "7B benchmark: batch-1 time per token of each 4-bit format over the fp16 of the same record, per path",
          "four_bit_speed"),
    Claim("wanda-lower", "Vincenti et al. (2024); course brief",
          "Wanda pruning (50 %) lowers translation quality",
          "Wanda 50 % − reference chrF++ per direction group (significance table)",
          "vs_reference", {"run": WANDA, "sign": -1, "metric": "chrf++"}),
    Claim("dsnot-no-bleu-gain", "Vincenti et al. (2024); course brief",
          "DSnoT on top of Wanda brings no BLEU gain",
          "DSnoT − Wanda 50 % BLEU per direction group (comparisons table)",
          "no_gain", {"pairs": (("DSnoT vs Wanda, 50 %", "DSnoT − Wanda"),), "metric": "bleu"}),
    Claim("smoothquant-nf4-beats-baseline", "Vincenti et al. (2024); course brief",
          "SmoothQuant + NF4 scores above the baseline",
          "SmoothQuant+NF4 − reference chrF++ per direction group (significance table); against NF4 alone as context",
          "vs_reference", {"run": SQ_NF4, "sign": +1, "metric": "chrf++",
                           "context": ("SmoothQuant+NF4 vs NF4", "against NF4 alone")}),
    Claim("iterative-beats-middle", "Moslem et al. (2025)",
          "Iterative layer pruning beats removing the middle layers",
          "iterative − middle chrF++ after recovery, per depth and direction group (comparisons table)",
          "pairs_differ", {"pairs": DEPTHS, "sign": +1, "metric": "chrf++", "what": "iterative − middle"}),
    Claim("qlora-kd-keeps-quality", "Moslem (2025); course brief",
          "QLoRA + knowledge distillation students keep 97-100 % of the teacher's quality",
          "chrF++ retention of each student: its chrF++ over the reference teacher's per direction, mean",
          "retention", {"students": STUDENTS}),
)

RULES_NOTE = (
    "Verdicts (rules in `studylib/report/claims.py`): a claimed difference is *confirmed* when every tested row "
    "differs in the claimed direction after Holm's correction (p < {alpha:g}), *not confirmed* when none does and some "
    "differ the other way, *no difference found* when none differs, *partly* otherwise; a claimed absence of a gain "
    "is *confirmed* when no row is significantly higher; \"about the baseline\" holds in a direction group that is "
    "not significantly lower or keeps ≥ {near_pct:.0f} % of the reference's chrF++, and \"about 70 % less memory\" "
    "when the peak memory is ≤ {mem:.2f}× the reference's; \"keeps 97-100 %\" needs a retention ≥ {near:.2f}; a "
    "claim made of parts is *confirmed* when every part holds, *not confirmed* when none does, *partly* otherwise. A "
    "4-bit format agrees with the speed claim when it is slower than fp16 without a kernel its label names fused, or "
    "at most as slow with one. Holm: over the whole significance or comparisons table the row comes from.")


# ----------------------------------------------------------------------------------------------- verdict rules


def difference_verdict(n_for: int, n_against: int, n_rows: int) -> str:
    """A claimed difference over ``n_rows`` tests, ``n_for`` significant in the claimed direction, ``n_against`` in
    the other."""
    if n_for == n_rows:
        return "confirmed"
    if n_for == 0:
        return "not confirmed" if n_against else "no difference found"
    return "partly"


def absence_verdict(n_gain: int, n_rows: int) -> str:
    """A claimed absence of a gain over ``n_rows`` tests, ``n_gain`` of them significantly higher."""
    return "confirmed" if n_gain == 0 else "not confirmed" if n_gain == n_rows else "partly"


def share_verdict(holds: list[bool]) -> str:
    """A claim made of parts: every part, none or some of them hold."""
    return "confirmed" if all(holds) else "not confirmed" if not any(holds) else "partly"


# ----------------------------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """What the claims are decided from (any of them may be missing: the claims it decides say "no record")."""

    by_key: dict  # notebook/run -> record
    sig: object  # the significance table (DataFrame) or None
    pairs: object  # the comparisons table (DataFrame) or None
    bench: dict  # benchmark.benchmark_data(recs)
    reference: str = S.DEFAULT_REFERENCE


class Missing(Exception):
    """An input a claim needs is not there; the message names it."""


def _record(inp: Inputs, key: str) -> dict:
    if key not in inp.by_key:
        raise Missing(f"no record of {key}")
    return inp.by_key[key]


def _rows(table, what: str, **match) -> list[dict]:
    """The rows of a generated table matching ``match``; Missing when there is no table or no such row."""
    if table is None or not len(table):
        raise Missing(f"no {what} table")
    sub = table
    for column, value in match.items():
        sub = sub[sub[column].isin(value) if isinstance(value, (list, tuple)) else sub[column] == value]
    if not len(sub):
        raise Missing(f"no {what} rows for {', '.join(str(v) for v in match.values())}")
    return sub.to_dict("records")


def _tested(rows: list[dict], ok) -> list[dict]:
    """``rows`` when ``ok(row)`` for each (it was tested), else Missing with the first one's reason."""
    bad = [r for r in rows if not ok(r)]
    if bad:
        raise Missing(f"not comparable ({bad[0].get('reason') or 'no test'})")
    return rows


def _sample(*recs) -> str:
    """'; n segments per direction (a sample)' for records scored on a sample of each test set, else ''."""
    sizes = sorted({str((r.get("params") or {}).get("n_test")) for r in recs
                    if (r.get("params") or {}).get("n_test") is not None})
    return f"; {'/'.join(sizes)} segments per direction (a sample)" if sizes else ""


def _stale(*recs) -> bool:
    return any(records.is_stale(r) for r in recs)


def _said(row: dict) -> str:
    """``xx→en −4.3 [−5.1, −3.6] (Holm p=1e-26)`` (a significance row names its group ``direction``)."""
    return (f"{arrow(row['group'] if 'group' in row else row['direction'])} {signed(row['delta'])} "
            f"[{signed(row['ci_low'])}, {signed(row['ci_high'])}] (Holm p={row['p_holm']:.2g})")


def _sign(row: dict) -> int:
    """+1 / -1 for a difference significant after Holm, 0 otherwise."""
    return (1 if row["delta"] > 0 else -1) if truthy(row["significant"]) else 0


def _ratio(a, b):
    return a / b if not missing(a) and not missing(b) and b else None


# ----------------------------------------------------------------------------------------------- the rules


def _group_rows(inp: Inputs, run: str, metric: str) -> list[dict]:
    nb, _, name = run.partition("/")
    rows = _rows(inp.sig, "significance", notebook=nb, run=name, metric=metric, direction=list(S.GROUPS))
    return _tested(rows, lambda r: truthy(r["comparable"]))


def near_baseline(inp: Inputs, run: str) -> dict:
    """Each direction group's chrF++ is about the reference's (not significantly lower, or retention ≥ NEAR) and the
    peak memory is at most MEMORY_AT_MOST of the reference's."""
    rec, ref = _record(inp, run), _record(inp, inp.reference)
    rows = _group_rows(inp, run, "chrf++")
    memory = _ratio((rec.get("efficiency") or {}).get("peak_memory_gb"),
                    (ref.get("efficiency") or {}).get("peak_memory_gb"))
    if memory is None:
        raise Missing(f"no peak memory in the records of {run} and {inp.reference}")
    storage = _ratio((rec.get("efficiency") or {}).get("storage_gb"), (ref.get("efficiency") or {}).get("storage_gb"))
    holds, said = [], []
    for r in rows:
        kept = r["score"] / r["ref_score"] if r["ref_score"] else None
        holds.append(_sign(r) >= 0 or (kept is not None and kept >= NEAR))
        said.append(f"{_said(r)}, {fmt_sig(kept, 2)} of the reference's")
    holds.append(memory <= MEMORY_AT_MOST)
    evidence = (f"{run.partition('/')[2]} − reference chrF++ {'; '.join(said)}; peak memory {fmt_sig(memory, 2)}× the "
                f"reference's" + (f" (storage {fmt_sig(storage, 2)}×)" if storage is not None else ""))
    return {"evidence": evidence + _sample(rec, ref), "verdict": share_verdict(holds), "records": [run, inp.reference],
            "stale": _stale(rec, ref), "test": "paired bootstrap, Holm over the significance table"}


def vs_reference(inp: Inputs, run: str, sign: int, metric: str, context: tuple | None = None) -> dict:
    """A run differs from the reference in the direction ``sign`` in every direction group."""
    rec, ref = _record(inp, run), _record(inp, inp.reference)
    rows = _group_rows(inp, run, metric)
    signs = [_sign(r) for r in rows]
    verdict = difference_verdict(signs.count(sign), signs.count(-sign), len(rows))
    evidence = f"{run.partition('/')[2]} − reference {METRIC_LABEL[metric]} " + "; ".join(_said(r) for r in rows)
    if context:
        try:
            pair = _rows(inp.pairs, "comparisons", claim=context[0], metric=metric, status="tested")
            evidence += f"; {context[1]}: " + "; ".join(_said(r) for r in pair)
        except Missing:
            evidence += f"; {context[1]}: not tested"
    return {"evidence": evidence + _sample(rec, ref), "verdict": verdict, "records": [run, inp.reference],
            "stale": _stale(rec, ref), "test": "paired bootstrap, Holm over the significance table"}


def _pair_rows(inp: Inputs, pairs: tuple, metric: str) -> tuple[list[tuple[str, dict]], list[dict]]:
    """(label, row) of every pair's direction groups from the comparisons table, and the records they compare."""
    out, recs = [], []
    for name, label in pairs:
        rows = _rows(inp.pairs, "comparisons", claim=name)
        if rows[0]["status"] == "absent":
            raise Missing("no record of " + str(rows[0]["reason"]).removeprefix("no record: "))
        rows = _tested([r for r in rows if r["metric"] == metric], lambda r: r["status"] == "tested")
        out += [(label, r) for r in rows]
        recs += [inp.by_key[k] for k in (rows[0]["a"], rows[0]["b"]) if k in inp.by_key]
    return out, recs


def _pairs_entry(rows: list[tuple[str, dict]], recs: list[dict], evidence: str, verdict: str) -> dict:
    """A claim decided from the comparisons table: its evidence, verdict, the records compared and the test."""
    return {"evidence": evidence + _sample(*recs), "verdict": verdict,
            "records": sorted({r["a"] for _, r in rows} | {r["b"] for _, r in rows}), "stale": _stale(*recs),
            "test": "paired bootstrap, Holm over the comparisons table"}


def no_gain(inp: Inputs, pairs: tuple, metric: str) -> dict:
    """A is not significantly higher than B in any direction group."""
    rows, recs = _pair_rows(inp, pairs, metric)
    gains = sum(_sign(r) > 0 for _, r in rows)
    labels = list(dict.fromkeys(label for label, _ in rows))
    evidence = "; ".join(f"{label} {METRIC_LABEL[metric]} " + ", ".join(_said(r) for x, r in rows if x == label)
                         for label in labels)
    return _pairs_entry(rows, recs, evidence, absence_verdict(gains, len(rows)))


def pairs_differ(inp: Inputs, pairs: tuple, sign: int, metric: str, what: str) -> dict:
    """A differs from B in the direction ``sign`` in every pair and direction group."""
    rows, recs = _pair_rows(inp, pairs, metric)
    signs = [_sign(r) for _, r in rows]

    def listed(s):
        return join([f"{label} {arrow(r['group'])} {signed(r['delta'])}" for (label, r), x in zip(rows, signs)
                     if x == s]) or "none"
    evidence = (f"{what} {METRIC_LABEL[metric]}, {len(rows)} tests: higher in {signs.count(1)} ({listed(1)}), lower "
                f"in {signs.count(-1)} ({listed(-1)}), no difference in {signs.count(0)}")
    return _pairs_entry(rows, recs, evidence, difference_verdict(signs.count(sign), signs.count(-sign), len(rows)))


def four_bit_speed(inp: Inputs) -> dict:
    """Each 4-bit format, in each decoding path its record measured at batch 1, agrees with the claim when it is
    slower than fp16 without a fused kernel, or at most as slow with one."""
    runs = [(run, r) for run in (inp.bench or {}).get("runs") or [] for r in run["rows"]
            if r["variant"] in FOUR_BIT and r["status"] == "ok" and benchmark.reference_row(run) is not None]
    if not runs:
        raise Missing("no 4-bit format measured beside fp16 in a benchmark record (notebook 40_efficiency_7b)")
    agree, said = [], []
    for run, r in runs:
        fused = any(word in str(r["kernel"] or "").lower() for word in FUSED)
        paths = [("vLLM" if r.get("engine") == "vllm" else "generate", r.get("decode_b1_ratio")),
                 ("CUDA graph", r.get("graph_b1_ratio"))]
        paths = [(name, x) for name, x in paths if not missing(x)]
        agree += [(x <= 1) if fused else (x > 1) for _, x in paths]
        said.append(f"{r['label']}, {'fused kernel' if fused else 'no fused kernel named'}: "
                    + ", ".join(f"{fmt_sig(x)}× via {name}" for name, x in paths))
    ref_names = join(sorted({run["reference"] for run, _ in runs}))
    evidence = (f"batch-1 time per token over the {ref_names} of the same record (Llama-2-7B shapes, random weights): "
                + "; ".join(said))
    stale = any(run["stale"] for run, _ in runs)
    return {"evidence": evidence, "verdict": share_verdict(agree) if agree else "no record",
            "records": sorted({run["record"] for run, _ in runs}), "stale": stale,
            "test": "measured ratios (medians of repeats), no significance test"}


def retention(inp: Inputs, students: tuple) -> dict:
    """Every student keeps at least NEAR of the reference teacher's chrF++ (the retention of ``targets.json``)."""
    teacher = _record(inp, inp.reference)
    holds, said, used, absent = [], [], [], []
    for key, label in students:
        if key not in inp.by_key:
            absent.append(key)
            continue
        value, note = targets.retention(inp.by_key[key], teacher)
        if value is None:
            absent.append(f"{key} ({note})")
            continue
        holds.append(value >= NEAR)
        used.append(inp.by_key[key])
        said.append(f"{label} {fmt_sig(value, 2)}")
    if not holds:
        raise Missing("no student record with scores comparable to the teacher's: " + ", ".join(absent))
    evidence = ("chrF++ retention (per direction over the reference teacher's, mean): " + "; ".join(said)
                + (f"; no record of {join(absent)}" if absent else ""))
    return {"evidence": evidence + _sample(teacher, *used), "verdict": share_verdict(holds),
            "records": [S.key(r) for r in used] + [inp.reference], "stale": _stale(teacher, *used),
            "test": f"retention ≥ {NEAR:.2f}, a ratio of scores (no significance test)"}


DECIDE = {"near_baseline": near_baseline, "vs_reference": vs_reference, "no_gain": no_gain,
          "pairs_differ": pairs_differ, "four_bit_speed": four_bit_speed, "retention": retention}


# ----------------------------------------------------------------------------------------------- the table


def decide(claim: Claim, inp: Inputs) -> dict:
    """One claim's entry: what it is, the evidence with its test, and the verdict (or what is missing)."""
    entry = {"id": claim.id, "source": claim.source, "claim": claim.claim, "decided_by": claim.decided_by}
    try:
        entry.update(DECIDE[claim.rule](inp, **claim.args))
    except Missing as why:
        entry.update(evidence=str(why), verdict="no record", records=[], stale=False, test=None)
    assert entry["verdict"] in VERDICTS, entry["verdict"]
    return entry


def claims_data(recs: list[dict], sig=None, pairs=None, bench: dict | None = None,
                reference: str = S.DEFAULT_REFERENCE) -> list[dict]:
    """Every claim of :data:`CLAIMS` decided from the records, the significance and comparisons tables and the
    benchmark data (computed from ``recs`` when not given)."""
    inp = Inputs({S.key(r): r for r in recs}, sig, pairs,
                 bench if bench is not None else benchmark.benchmark_data(recs), reference)
    return [decide(c, inp) for c in CLAIMS]


def claims_table(rows: list[dict], alpha: float = S.ALPHA) -> str:
    """Markdown: one row per claim (claim, source, evidence and test, verdict), then the rules."""
    if not rows:
        return "*No claims declared.*\n"
    body = [[r["claim"], r["source"],
             r["evidence"] + stale_mark(r["stale"]) + (f" — {r['test']}" if r["test"] else ""), f"**{r['verdict']}**"]
            for r in rows]
    note = RULES_NOTE.format(alpha=alpha, near=NEAR, near_pct=100 * NEAR, mem=MEMORY_AT_MOST)
    stale = stale_note(any(r["stale"] for r in rows))
    return md_table(["Claim", "Source", "Evidence (test)", "Verdict"], body, "llll") + "\n" + note + \
        (f" {stale}" if stale else "") + "\n"


def text_claims(ctx) -> str:
    """How many claims this study confirms, from ``<tables>/claims.json``."""
    rows = read_json(ctx.tables / "claims.json") or []
    if not rows:
        return "No claim of the seed studies is declared."
    parts = []
    for verdict in VERDICTS:
        said = [f"“{r['claim']}”" for r in rows if r["verdict"] == verdict]
        if said:
            parts.append(f"{verdict} ({len(said)}): {join(said)}")
    return f"Of the {len(rows)} claims, " + "; ".join(parts) + "."

