import pandas as pd
import pytest

from studylib.core import metrics, records
from studylib.report import significance
from synthetic import core, make

REF = "01_teacher/teacher-lora"


def _rows(table, run, direction, metric="chrf++"):
    return table[(table["run"] == run) & (table["direction"] == direction) & (table["metric"] == metric)].iloc[0]


def test_identical_outputs_are_never_significant():
    ref = make("01_teacher", "teacher-lora", noise=0.3)
    twin = make("01_teacher", "teacher-lora", noise=0.3)
    twin["notebook"], twin["run"] = "10_bnb_int8", "twin"
    rows = significance.compare(twin, ref, n_samples=100)
    assert rows and all(r["comparable"] and r["delta"] == 0 and r["p_value"] == 1.0 and not r["significant"]
                        for r in rows)


def test_a_clearly_better_run_is_significant_and_deltas_are_run_minus_reference():
    ref = make("01_teacher", "teacher-lora", noise=0.5)
    good = make("10_bnb_int8", "good", noise=0.0)
    rows = significance.compare(good, ref, n_samples=200)
    assert all(r["p_holm"] is None and r["significant"] is None for r in rows)  # a table's family decides
    table = pd.DataFrame(significance.adjust(rows))
    assert (table["p_holm"] >= table["p_value"]).all()
    for direction in ("de-en", "en-zh", "xx-en", "en-xx"):
        row = _rows(table, "good", direction)
        assert row["comparable"] and row["significant"] and row["delta"] > 0 and row["ci_low"] > 0
    # per direction: the same numbers as metrics.paired_bootstrap, and the record's own score
    row = _rows(table, "good", "de-en", "bleu")
    a, b = good["outputs"]["de-en"], ref["outputs"]["de-en"]
    direct = metrics.paired_bootstrap(a["hyp"], b["hyp"], a["ref"], "bleu", "en", n_samples=200)
    assert row["delta"] == pytest.approx(direct["delta"]) and row["p_value"] == direct["p_value"]
    assert row["score"] == pytest.approx(good["metrics"]["de-en"]["bleu"])
    # groups: the mean of per-direction corpus scores, i.e. the record's averages
    assert _rows(table, "good", "en-xx")["score"] == pytest.approx(good["averages"]["en-xx"]["chrf++"])
    assert _rows(table, "good", "xx-en")["ref_score"] == pytest.approx(ref["averages"]["xx-en"]["chrf++"])


def test_group_bootstrap_of_one_direction_is_the_plain_bootstrap():
    ref = make("01_teacher", "r", noise=0.5, directions=("de-en",))
    run = make("10_x", "a", noise=0.3, directions=("de-en",))
    a, b = run["outputs"]["de-en"], ref["outputs"]["de-en"]
    one = metrics.paired_bootstrap_mean([(a["hyp"], b["hyp"], a["ref"], "en")], "chrf++", n_samples=300, seed=7)
    plain = metrics.paired_bootstrap(a["hyp"], b["hyp"], a["ref"], "chrf++", "en", n_samples=300, seed=7)
    for key in ("score_a", "score_b", "delta", "p_value", "ci_low", "ci_high"):
        assert one[key] == pytest.approx(plain[key])


def test_misaligned_or_missing_outputs_are_not_comparable():
    ref = make("01_teacher", "teacher-lora", noise=0.3)
    fewer = make("10_bnb_int8", "fewer", n=10)
    bare = make("11_bnb_nf4", "bare", keep_outputs=False)
    other = make("12_gptq", "other")
    other["outputs"]["de-en"]["src"] = list(reversed(other["outputs"]["de-en"]["src"]))
    for run, reason in ((fewer, "source segments differ"), (bare, "no stored outputs")):
        rows = significance.compare(run, ref, n_samples=50)
        assert rows and all(not r["comparable"] and reason in r["reason"] for r in rows)
    rows = pd.DataFrame(significance.compare(other, ref, n_samples=50))
    assert not _rows(rows, "other", "de-en")["comparable"]
    assert not _rows(rows, "other", "xx-en")["comparable"]  # a group with a misaligned direction is not tested
    assert _rows(rows, "other", "en-xx")["comparable"] and _rows(rows, "other", "cs-en")["comparable"]


def test_write_tables_reuses_unchanged_rows_and_marks_non_significant(tmp_path, monkeypatch):
    results = tmp_path / "results"
    core(results)
    records.write_record(make("10_bnb_int8", "fewer", n=10), results)
    csv, md = significance.write(results, "full", REF, n_samples=100)
    table = significance.read_table(csv)
    assert set(table["run"]) == {"base-3shot", "teacher-full", "fewer"}  # the reference is not tested against itself
    assert set(table["reference"]) == {REF}
    text = md.read_text()
    assert "n/c" in text and "chrF++, run − reference" in text and "p ≥ 0.05" in text
    if (~table["significant"] & table["comparable"]).any():
        assert significance.NOT_SIGNIFICANT in text

    def boom(*args, **kwargs):
        raise AssertionError("a cached comparison was recomputed")

    monkeypatch.setattr(significance.M, "paired_bootstrap", boom)
    monkeypatch.setattr(significance.M, "paired_bootstrap_mean", boom)
    csv2, _ = significance.write(results, "full", REF, n_samples=100)
    pd.testing.assert_frame_equal(significance.read_table(csv2), table)
    # a changed setting invalidates the cache
    with pytest.raises(AssertionError, match="recomputed"):
        significance.write(results, "full", REF, n_samples=101)


def test_without_the_reference_record_the_table_is_empty_and_says_so(tmp_path):
    core(tmp_path)
    csv, md = significance.write(tmp_path, "full", "01_teacher/absent", n_samples=50)
    assert significance.read_table(csv).empty
    assert "No significance tests" in md.read_text()


def test_reference_names_are_checked():
    assert significance.parse_reference("01_teacher/x.json") == ("01_teacher", "x")
    for bad in ("01_teacher", "/x", "a/b/c"):
        with pytest.raises(ValueError):
            significance.parse_reference(bad)


def test_the_markdown_marks_a_stale_record_once_and_says_what_the_mark_means():
    ref = make("01_teacher", "teacher-lora", noise=0.3)
    runs = [make("10_bnb_int8", "old", noise=0.35), make("11_bnb_nf4", "new", noise=0.4)]
    table = pd.DataFrame([row for run in runs for row in significance.compare(run, ref, n_samples=50)])
    text = significance.markdown(table, stale={("10_bnb_int8", "old")})
    assert all(line.count("§") == 1 for line in text.splitlines() if line.startswith("| old"))
    assert not any("§" in line for line in text.splitlines() if line.startswith("| new"))
    assert "§ made by an older layout of the code" in text
    assert "§" not in significance.markdown(table)


def test_holm_adjusts_over_the_whole_table_and_an_interval_holding_zero_is_never_significant():
    ref = make("01_teacher", "teacher-lora", noise=0.5)
    runs = [make("10_bnb_int8", "good", noise=0.0), make("11_x", "close", noise=0.49)]
    table = significance.significance_table([ref, *runs], reference="01_teacher/teacher-lora", n_samples=200)
    tested = table[table["comparable"]]
    assert list(tested["p_holm"]) == pytest.approx(metrics.holm(list(tested["p_value"])))
    assert (tested["significant"] == (tested["p_holm"] < significance.ALPHA)).all()
    spans = tested[(tested["ci_low"] < 0) & (tested["ci_high"] > 0)]
    assert not spans["significant"].any()
    assert set(tested["test"]) == {significance.TEST}


def test_a_run_made_from_another_teacher_is_tested_against_it_decoded_alike():
    """A method on the full fine-tuned teacher is set against that teacher's evaluation with the same decoding, not
    the table's reference; decoded otherwise, a pair is not comparable; the Markdown names each row's reference."""
    lora = make("01_teacher", "teacher-lora", noise=0.3)
    full = make("01_teacher", "full", noise=0.2)
    artifact = "results/artifacts/01_teacher/full/merged"
    chosen = {"model_id": artifact, "repetition_penalty": 1.1, "decoding_record": "02_decoding/full.json"}
    again = make("00_baseline", "full-chosen", noise=0.2, params=chosen)
    method = make("11_bnb_nf4", "full-nf4", noise=0.4, params=chosen)
    on_lora = make("11_bnb_nf4", "lora-nf4", noise=0.4, params={"model_id": "results/artifacts/01_teacher/teacher-lora"})
    table = significance.significance_table([lora, full, again, method, on_lora], REF, n_samples=50)
    refs = {run: set(table[table["run"] == run]["reference"]) for run in set(table["run"])}
    assert refs == {"full": {REF}, "full-chosen": {REF}, "full-nf4": {"00_baseline/full-chosen"}, "lora-nf4": {REF}}
    assert not _rows(table, "full-chosen", "de-en")["comparable"]  # 1.1 against the reference's 1.0
    assert "decoded with repetition_penalty 1.1" in _rows(table, "full-chosen", "de-en")["reason"]
    assert _rows(table, "full-nf4", "de-en")["comparable"] and _rows(table, "lora-nf4", "de-en")["comparable"]
    text = significance.markdown(table)
    assert "run − its reference" in text and "| full-nf4 | 00_baseline/full-chosen |" in text
    without = significance.significance_table([lora, full, method], REF, n_samples=50)
    row = _rows(without, "full-nf4", "de-en")  # no evaluation decoded like it: its teacher's own, not comparable
    assert row["reference"] == "01_teacher/full" and not row["comparable"]
