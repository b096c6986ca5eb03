"""Comparisons between pairs of methods and the spread over seeds, on synthetic records (the mechanics only: no
measured result is asserted)."""

from types import SimpleNamespace

import pytest

from studylib.core import metrics
from studylib.report import comparisons as C
from studylib.report import seeds
from studylib.report.markdown import write_json
from synthetic import make

PAIRS = (("good vs bad", "10_x/good", "10_x/bad"), ("bad vs missing", "10_x/bad", "99_none/missing"))


def test_pairs_are_a_minus_b_on_the_group_mean_and_holm_adjusted_over_the_table():
    good, bad = make("10_x", "good", noise=0.0), make("10_x", "bad", noise=0.6)
    table = C.comparisons_table([good, bad], PAIRS, n_samples=200)
    tested = table[table["status"] == "tested"]
    assert len(tested) == 4 and (tested["p_holm"] >= tested["p_value"]).all()
    row = tested[(tested["group"] == "en-xx") & (tested["metric"] == "chrf++")].iloc[0]
    items = [(good["outputs"][d]["hyp"], bad["outputs"][d]["hyp"], good["outputs"][d]["ref"], d[-2:])
             for d in C.S.GROUPS["en-xx"] if d in good["outputs"]]
    direct = metrics.paired_bootstrap_mean(items, "chrf++", n_samples=200)
    assert row["delta"] == pytest.approx(direct["delta"]) and row["p_value"] == direct["p_value"]
    assert row["score_a"] == pytest.approx(good["averages"]["en-xx"]["chrf++"])
    absent = table[table["status"] == "absent"].iloc[0]
    assert absent["claim"] == "bad vs missing" and "99_none/missing" in absent["reason"]
    assert "higher (Holm p=" in C.verdict(row) or "no difference found (Holm p=" in C.verdict(row)


def test_different_segments_are_not_comparable_and_never_tested():
    a, b = make("10_x", "good", noise=0.0), make("10_x", "bad", n=10)
    table = C.comparisons_table([a, b], PAIRS[:1], n_samples=50)
    assert set(table["status"]) == {"not comparable"} and table["p_value"].isna().all()
    assert table["reason"].str.contains("differ").all()


def test_identical_runs_find_no_difference_and_the_text_says_so(tmp_path):
    a = make("10_x", "good", noise=0.3)
    b = make("10_x", "good", noise=0.3)
    b["run"] = "bad"
    table = C.comparisons_table([a, b], PAIRS, n_samples=50)
    tested = table[table["status"] == "tested"]
    assert (tested["delta"] == 0).all() and not tested["significant"].any()
    write_json(C.comparisons_data(table), tmp_path / "comparisons.json")
    text = C.text_comparisons(SimpleNamespace(tables=tmp_path))
    assert "good vs bad" in text and "no difference found (Holm p=1)" in text and "absent" in text
    assert "| good vs bad |" in C.markdown(table)
    path = tmp_path / "comparisons.csv"
    path.write_text(table.to_csv(index=False))
    assert C.markdown(C.read_table(path)) == C.markdown(table)  # tables.write renders it from the CSV
    assert C.comparisons_data(C.read_table(path)) == C.comparisons_data(table)


def test_seed_groups_give_mean_and_sd_per_direction_group():
    recs = [make("31_model_a", f"student-s{s}", noise=0.2 + 0.1 * s, params={"seed": s}) for s in (0, 1, 2)]
    recs.append(make("32_model_b", "other", params={"seed": 0}))
    data = seeds.seeds_data(recs)
    assert len(data) == 1 and data[0]["seeds"] == [0, 1, 2]
    scores = [r["averages"]["xx-en"]["chrf++"] for r in recs[:3]]
    one = data[0]["groups"]["xx-en"]
    assert one["mean"] == pytest.approx(sum(scores) / 3) and one["n"] == 3 and one["half_width"] is None
    assert one["sd"] == pytest.approx(__import__("statistics").stdev(scores))
    assert "±" in seeds.seeds_table(data)


def test_no_run_with_several_seeds_is_one_line(tmp_path):
    recs = [make("31_model_a", "a", params={"seed": 0}), make("31_model_a", "b", params={"seed": 0, "lr": 1})]
    assert seeds.seeds_data(recs) == []
    assert seeds.seeds_table([]).strip() == seeds.NONE
    assert seeds.text_seeds(SimpleNamespace(tables=tmp_path)) == seeds.NONE
