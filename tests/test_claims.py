"""The seed studies' claims decided from small synthetic tables and records: every verdict path, and the absent case
(the rules only: no measured result is asserted)."""

from types import SimpleNamespace

import pandas as pd
import pytest

from studylib.report import claims as K
from studylib.report import comparisons as C
from studylib.report import significance as S
from studylib.report.markdown import write_json
from synthetic import make

REF = S.DEFAULT_REFERENCE


def _rec(key: str, n_test=4, **kw) -> dict:
    notebook, _, run = key.partition("/")
    return make(notebook, run, n=4, params={"n_test": n_test}, **kw)


def _sig(key: str, *groups, metric: str = "chrf++") -> list[dict]:
    """Significance rows of ``key`` - reference: one (delta, significant, retention) per direction group."""
    notebook, _, run = key.partition("/")
    return [{"notebook": notebook, "run": run, "reference": REF, "direction": g, "metric": metric, "comparable": True,
             "reason": "", "score": 40 * kept, "ref_score": 40.0, "delta": delta, "ci_low": delta - 1,
             "ci_high": delta + 1, "p_holm": 0.001 if sig else 1.0, "significant": sig, "alpha": 0.05}
            for g, (delta, sig, kept) in zip(S.GROUPS, groups)]


def _pair(claim: str, a: str, b: str, *groups, metric: str = "chrf++") -> list[dict]:
    """Comparison rows of A - B: one (delta, significant) per direction group."""
    return [{"claim": claim, "a": a, "b": b, "group": g, "metric": metric, "status": "tested", "reason": "",
             "delta": delta, "ci_low": delta - 1, "ci_high": delta + 1, "p_holm": 0.001 if sig else 1.0,
             "significant": sig} for g, (delta, sig) in zip(S.GROUPS, groups)]


def _one(claim_id: str, recs=(), sig=(), pairs=(), bench=None) -> dict:
    inp = K.Inputs({S.key(r): r for r in recs}, pd.DataFrame(list(sig)) if sig else None,
                   pd.DataFrame(list(pairs)) if pairs else None, bench or {"runs": []}, REF)
    claim = next(c for c in K.CLAIMS if c.id == claim_id)
    entry = K.decide(claim, inp)
    assert entry["verdict"] in K.VERDICTS
    return entry


def test_the_claims_are_declared_once_each_with_a_rule_and_existing_comparisons():
    assert len({c.id for c in K.CLAIMS}) == len(K.CLAIMS) == 7
    declared = {name for name, _, _ in C.PAIRS}
    for c in K.CLAIMS:
        assert c.rule in K.DECIDE and c.claim and c.source and c.decided_by
        for name, _ in c.args.get("pairs", ()):
            assert name in declared, name
        if "context" in c.args:
            assert c.args["context"][0] in declared


def test_the_verdict_rules():
    assert K.difference_verdict(2, 0, 2) == "confirmed"
    assert K.difference_verdict(0, 0, 2) == "no difference found"
    assert K.difference_verdict(0, 1, 2) == "not confirmed"
    assert K.difference_verdict(1, 0, 2) == K.difference_verdict(1, 1, 2) == "partly"
    assert K.absence_verdict(0, 2) == "confirmed" and K.absence_verdict(1, 2) == "partly"
    assert K.absence_verdict(2, 2) == "not confirmed"
    assert K.share_verdict([True, True]) == "confirmed" and K.share_verdict([False]) == "not confirmed"
    assert K.share_verdict([True, False]) == "partly"


@pytest.mark.parametrize("groups, memory, verdict", [
    (((-0.2, False, 0.99), (0.1, False, 1.0)), 0.3, "confirmed"),  # no group lower, memory 0.3x
    (((-2.0, True, 0.98), (-1.0, True, 0.975)), 0.3, "confirmed"),  # lower, but keeps >= 97 %
    (((-4.0, True, 0.89), (0.1, False, 1.0)), 0.3, "partly"),
    (((-4.0, True, 0.89), (-3.0, True, 0.87)), 0.8, "not confirmed"),
])
def test_about_the_baseline_at_less_memory(groups, memory, verdict):
    recs = [_rec(REF, efficiency={"peak_memory_gb": 1.0, "storage_gb": 0.5}),
            _rec(K.NF4, efficiency={"peak_memory_gb": memory, "storage_gb": 0.35})]
    entry = _one("quantization-near-baseline", recs, _sig(K.NF4, *groups))
    assert entry["verdict"] == verdict
    assert f"peak memory {memory:.2f}× the reference's (storage 0.70×)" in entry["evidence"]
    assert "Holm p=" in entry["evidence"] and "4 segments per direction (a sample)" in entry["evidence"]


@pytest.mark.parametrize("claim_id, run, groups, verdict", [
    ("wanda-lower", K.WANDA, ((-16.0, True, 0.6), (-13.0, True, 0.5)), "confirmed"),
    ("wanda-lower", K.WANDA, ((-0.3, False, 0.99), (0.2, False, 1.0)), "no difference found"),
    ("wanda-lower", K.WANDA, ((-2.0, True, 0.9), (0.2, False, 1.0)), "partly"),
    ("smoothquant-nf4-beats-baseline", K.SQ_NF4, ((-3.8, True, 0.9), (-3.0, True, 0.9)), "not confirmed"),
    ("smoothquant-nf4-beats-baseline", K.SQ_NF4, ((1.5, True, 1.04), (1.0, True, 1.03)), "confirmed"),
])
def test_a_run_against_the_reference(claim_id, run, groups, verdict):
    entry = _one(claim_id, [_rec(REF), _rec(run)], _sig(run, *groups))
    assert entry["verdict"] == verdict and "xx→en" in entry["evidence"] and "en→xx" in entry["evidence"]
    if claim_id.startswith("smoothquant"):
        assert "against NF4 alone: not tested" in entry["evidence"]


@pytest.mark.parametrize("groups, verdict", [
    (((0.5, False), (0.0, False)), "confirmed"),
    (((1.3, True), (0.0, False)), "partly"),
    (((1.3, True), (0.9, True)), "not confirmed"),
    (((-1.3, True), (0.0, False)), "confirmed"),  # lower is no gain
])
def test_dsnot_no_bleu_gain(groups, verdict):
    (name, _), = next(c for c in K.CLAIMS if c.id == "dsnot-no-bleu-gain").args["pairs"]
    pairs = _pair(name, "23_dsnot/x", "20_wanda/y", *groups, metric="bleu") + \
        _pair(name, "23_dsnot/x", "20_wanda/y", (9.0, True), (9.0, True))  # chrF++ rows: not what decides it
    entry = _one("dsnot-no-bleu-gain", pairs=pairs)
    assert entry["verdict"] == verdict and entry["evidence"].startswith("DSnoT − Wanda BLEU xx→en")


@pytest.mark.parametrize("outcomes, verdict", [
    ([(1.0, True)] * 8, "confirmed"),
    ([(0.1, False)] * 8, "no difference found"),
    ([(-1.0, True)] * 2 + [(0.1, False)] * 6, "not confirmed"),
    ([(1.9, True)] + [(-1.8, True)] * 4 + [(0.1, False)] * 3, "partly"),
])
def test_iterative_against_middle_over_every_depth_and_group(outcomes, verdict):
    pairs = [row for i, (name, _) in enumerate(K.DEPTHS)
             for row in _pair(name, "27_prune_depth/it", "27_prune_depth/mid", *outcomes[2 * i: 2 * i + 2])]
    entry = _one("iterative-beats-middle", pairs=pairs)
    assert entry["verdict"] == verdict and "8 tests" in entry["evidence"]


def _bench(*rows) -> dict:
    fp16 = {"variant": "fp16", "status": "ok", "label": "fp16", "kernel": "cuBLAS", "engine": "hf",
            "decode_b1_ratio": 1.0, "graph_b1_ratio": 1.0}
    return {"runs": [{"record": "40_efficiency_7b/x", "reference": "fp16", "stale": False, "rows": [fp16, *rows]}]}


def _row(variant, kernel, eager, graph=None):
    return {"variant": variant, "status": "ok", "label": variant, "kernel": kernel, "engine": "hf",
            "decode_b1_ratio": eager, "graph_b1_ratio": graph}


@pytest.mark.parametrize("rows, verdict", [
    ([_row("bnb-nf4", "bitsandbytes gemm_4bit (fused NF4 dequantize + GEMM)", 1.38, 0.94),
      _row("gptq-w4", "MarlinLinear x224: Marlin", 1.47, 0.76)], "partly"),  # fused, slower only without graphs
    ([_row("bnb-nf4", "dequantize then matmul", 1.6), _row("gptq-w4", "Marlin", 0.7, 0.5)], "confirmed"),
    ([_row("bnb-nf4", "dequantize then matmul", 0.8)], "not confirmed"),  # unfused, yet faster
])
def test_four_bit_speed_against_fp16_by_kernel(rows, verdict):
    entry = _one("4bit-slower-unfused", bench=_bench(*rows, _row("gptq-w8", "Marlin", 3.0)))  # 8-bit: not counted
    assert entry["verdict"] == verdict and "gptq-w8" not in entry["evidence"]
    assert "via generate" in entry["evidence"] and entry["records"] == ["40_efficiency_7b/x"]


def _as(record: dict, key: str) -> dict:
    """``record`` under another name (the same outputs: retention 1)."""
    notebook, _, run = key.partition("/")
    return {**record, "notebook": notebook, "run": run}


@pytest.mark.parametrize("same, verdict", [((True, True), "confirmed"), ((False, False), "not confirmed"),
                                           ((True, False), "partly")])
def test_students_keep_the_teachers_quality(same, verdict):
    teacher = _rec(REF, noise=0.1)
    recs = [teacher] + [_as(teacher, key) if keep else _rec(key, noise=0.9)
                        for keep, (key, _) in zip(same, K.STUDENTS)]
    entry = _one("qlora-kd-keeps-quality", recs)
    assert entry["verdict"] == verdict and "retention ≥ 0.97" in entry["test"]


def test_a_student_alone_is_decided_and_the_other_named_missing():
    (a, _), (b, _) = K.STUDENTS
    teacher = _rec(REF)
    entry = _one("qlora-kd-keeps-quality", [teacher, _as(teacher, a)])
    assert entry["verdict"] == "confirmed" and f"no record of {b}" in entry["evidence"]


def test_full_size_records_do_not_say_sample():
    recs = [_rec(REF, n_test=None), _rec(K.WANDA, n_test=None)]
    entry = _one("wanda-lower", recs, _sig(K.WANDA, (-16.0, True, 0.6), (-13.0, True, 0.5)))
    assert "sample" not in entry["evidence"]


def test_without_inputs_every_claim_has_no_record_and_the_files_still_render(tmp_path):
    rows = K.claims_data([], None, None)
    assert [r["verdict"] for r in rows] == ["no record"] * len(K.CLAIMS)
    assert all(r["evidence"].startswith("no ") and r["test"] is None for r in rows)
    assert "no record of 11_bnb_nf4/teacher-lora-nf4" in rows[0]["evidence"]
    assert "40_efficiency_7b" in rows[1]["evidence"]
    table = K.claims_table(rows)
    assert table.count("**no record**") == len(K.CLAIMS) and "Verdicts (rules in" in table
    write_json(rows, tmp_path / "claims.json")
    text = K.text_claims(SimpleNamespace(tables=tmp_path))
    assert text.startswith(f"Of the {len(K.CLAIMS)} claims, no record ({len(K.CLAIMS)}): ")
    assert K.text_claims(SimpleNamespace(tables=tmp_path / "none")) == "No claim of the seed studies is declared."


def test_an_absent_pair_names_its_missing_record():
    name, _ = K.DEPTHS[0]
    pairs = [{"claim": name, "a": "27_prune_depth/it", "b": "27_prune_depth/mid", "group": None, "metric": None,
              "status": "absent", "reason": "no record: 27_prune_depth/it"}]
    entry = _one("iterative-beats-middle", pairs=pairs)
    assert entry["verdict"] == "no record" and entry["evidence"] == "no record of 27_prune_depth/it"


def test_a_not_comparable_run_has_no_record_with_the_reason():
    rows = _sig(K.WANDA, (-1.0, True, 0.9), (-1.0, True, 0.9))
    rows[0].update(comparable=False, reason="the source segments differ")
    entry = _one("wanda-lower", [_rec(REF), _rec(K.WANDA)], rows)
    assert entry["verdict"] == "no record" and "the source segments differ" in entry["evidence"]


def test_decided_from_the_pipelines_own_tables():
    """The significance table as the pipeline computes it from synthetic records reads into the claims."""
    recs = [_rec(REF, noise=0.1), _rec(K.WANDA, noise=0.9)]
    sig = S.significance_table(recs, REF, n_samples=200)
    rows = K.claims_data(recs, sig, None, {"runs": []})
    wanda = next(r for r in rows if r["id"] == "wanda-lower")
    assert wanda["verdict"] in ("confirmed", "partly") and wanda["records"] == [K.WANDA, REF]
