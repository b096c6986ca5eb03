"""BLEU / chrF / chrF++ settings and the paired bootstrap."""

from __future__ import annotations

import random

import pytest
import sacrebleu

from studylib.core.metrics import (
    ALLOWED_METRICS,
    bleu_tokenizer,
    corpus_scores,
    paired_bootstrap,
    paired_bootstrap_segment_means,
    sentence_scores,
)

REFS = [
    "The cat sat on the mat.",
    "It is raining in Prague today.",
    "We will meet at the station at noon.",
    "This house was built in 1920.",
]
ZH_HYP = ["我今天在家里吃了一个苹果。"]
ZH_REF = ["我今天在家吃了一个大苹果。"]


def _corpus(n=300, seed=0):
    """A synthetic reference set and a corrupted system (about 30% words replaced)."""
    rng = random.Random(seed)
    words = "the a cat dog sat on mat house is red blue big small ran over under tree".split()
    refs = [" ".join(rng.choices(words, k=rng.randint(6, 14))) for _ in range(n)]
    bad = [" ".join(w if rng.random() < 0.7 else rng.choice(words) for w in r.split()) for r in refs]
    return refs, bad


# --------------------------------------------------------------------------- corpus scores


def test_identical_hyps_and_refs_score_100():
    out = corpus_scores(REFS, REFS, "en")
    assert out["bleu"] == pytest.approx(100.0)
    assert out["chrf"] == pytest.approx(100.0)
    assert out["chrf++"] == pytest.approx(100.0)
    assert set(out["signatures"]) == {"bleu", "chrf", "chrf++"}


def test_settings_show_in_signatures():
    sig = corpus_scores(REFS, REFS, "de")["signatures"]
    assert "tok:13a" in sig["bleu"] and "nrefs:1" in sig["bleu"]
    assert "nc:6" in sig["chrf"] and "nw:0" in sig["chrf"]
    assert "nc:6" in sig["chrf++"] and "nw:2" in sig["chrf++"]


def test_chinese_target_uses_zh_tokenizer_and_differs_from_13a():
    out = corpus_scores(ZH_HYP, ZH_REF, "zh", metrics=["bleu"])
    assert "tok:zh" in out["signatures"]["bleu"]
    assert bleu_tokenizer("zh") == "zh" and bleu_tokenizer("en") == "13a"
    # The same sentence with 13a: no spaces, so one "word" per sentence and no match.
    bleu_13a = sacrebleu.BLEU(tokenize="13a").corpus_score(ZH_HYP, [ZH_REF]).score
    bleu_zh = sacrebleu.BLEU(tokenize="zh").corpus_score(ZH_HYP, [ZH_REF]).score
    assert bleu_13a == pytest.approx(0.0)
    assert out["bleu"] == pytest.approx(bleu_zh)
    assert out["bleu"] > 20.0


def test_chrfpp_differs_from_chrf():
    hyps = ["the mat sat on the cat", "today in Prague it is raining"]
    out = corpus_scores(hyps, REFS[:2], "en", metrics=("chrf", "chrF++"))
    assert set(out) == {"chrf", "chrf++", "signatures"}
    assert out["chrf++"] != pytest.approx(out["chrf"], abs=0.1)


def test_scores_match_plain_sacrebleu():
    refs, bad = _corpus(50)
    out = corpus_scores(bad, refs, "en")
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(bad, [refs]).score)
    assert out["chrf"] == pytest.approx(sacrebleu.corpus_chrf(bad, [refs]).score)
    assert out["chrf++"] == pytest.approx(sacrebleu.corpus_chrf(bad, [refs], word_order=2).score)


@pytest.mark.parametrize(
    "hyps, refs, match",
    [
        (["a", "b"], ["a"], "segment counts differ"),
        ([], [], "empty"),
        ("a string", "a string", "list of strings"),
        (["a", None], ["a", "b"], r"hyps\[1\]"),
    ],
)
def test_bad_inputs_raise(hyps, refs, match):
    with pytest.raises(ValueError, match=match):
        corpus_scores(hyps, refs, "en")


def test_unknown_metric_and_language_raise():
    with pytest.raises(ValueError, match="allowed are bleu, chrf, chrf\\+\\+, comet"):
        corpus_scores(REFS, REFS, "en", metrics=["ter"])
    with pytest.raises(ValueError, match="unknown target language"):
        corpus_scores(REFS, REFS, "xx")
    assert "comet" in ALLOWED_METRICS


def test_comet_without_checkpoint_raises():
    with pytest.raises(ValueError, match="comet_checkpoint"):
        corpus_scores(REFS, REFS, "en", metrics=["chrf", "comet"])


def test_sentence_scores():
    hyps = [REFS[0], "completely different words here", REFS[2]]
    chrf = sentence_scores(hyps, REFS[:3], "en", "chrf")
    assert chrf[0] == pytest.approx(100.0) and chrf[2] == pytest.approx(100.0)
    assert chrf[1] < 30.0
    bleu = sentence_scores(hyps, REFS[:3], "en", "bleu")
    assert bleu[0] == pytest.approx(sacrebleu.sentence_bleu(hyps[0], [REFS[0]]).score)
    assert bleu[1] == pytest.approx(sacrebleu.sentence_bleu(hyps[1], [REFS[1]]).score)


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("metric", ["bleu", "chrf", "chrf++"])
def test_bootstrap_perfect_vs_corrupted_is_significant(metric):
    refs, bad = _corpus()
    res = paired_bootstrap(refs, bad, refs, metric=metric, n_samples=300)
    assert res["delta"] > 0
    assert res["p_value"] < 0.05
    assert res["ci_low"] > 0 and res["ci_low"] <= res["delta"] <= res["ci_high"]
    assert res["score_a"] == pytest.approx(100.0)
    assert res["score_b"] == pytest.approx(corpus_scores(bad, refs, "en", [metric])[metric])
    assert res["n_samples"] == 300 and res["metric"] == metric
    # Swapping the systems mirrors the result.
    swapped = paired_bootstrap(bad, refs, refs, metric=metric, n_samples=300)
    assert swapped["delta"] == pytest.approx(-res["delta"])
    assert swapped["p_value"] == res["p_value"]


def test_bootstrap_identical_systems_have_no_winner():
    refs, bad = _corpus(100)
    res = paired_bootstrap(bad, list(bad), refs, metric="chrf", n_samples=200)
    assert res["delta"] == 0.0
    assert res["p_value"] == 1.0  # by definition: no observed winner
    assert res["ci_low"] == 0.0 and res["ci_high"] == 0.0


def test_bootstrap_close_systems_are_not_significant():
    refs, bad = _corpus(200, seed=1)
    # B differs from A in one segment only: the difference is tiny and unstable.
    other = list(bad)
    other[0] = refs[0]
    res = paired_bootstrap(bad, other, refs, metric="chrf", n_samples=500)
    assert res["delta"] < 0
    assert res["p_value"] > 0.05


def test_bootstrap_is_deterministic_for_a_seed():
    refs, bad = _corpus(100)
    _, worse = _corpus(100, seed=3)
    a = paired_bootstrap(bad, worse, refs, metric="bleu", n_samples=200, seed=7)
    b = paired_bootstrap(bad, worse, refs, metric="bleu", n_samples=200, seed=7)
    c = paired_bootstrap(bad, worse, refs, metric="bleu", n_samples=200, seed=8)
    assert a == b
    assert (a["ci_low"], a["ci_high"]) != (c["ci_low"], c["ci_high"])


def test_bootstrap_resample_equals_corpus_score_of_resampled_lists():
    """The sufficient-statistics shortcut gives exactly sacreBLEU's corpus score."""
    import numpy as np

    from studylib.core.metrics import _resample_sums, _score_from_summed_stats, _segment_stats, make_metric

    refs, bad = _corpus(40)
    for name in ("bleu", "chrf++"):
        m = make_metric(name, "en")
        stats = _segment_stats(m, bad, refs)
        sums = next(_resample_sums([stats], 3, seed=5))[0]
        idx = np.random.default_rng(5).integers(0, len(refs), size=(3, len(refs)))
        for row, draw in zip(sums, idx):
            direct = make_metric(name, "en").corpus_score(
                [bad[i] for i in draw], [[refs[i] for i in draw]]
            )
            assert _score_from_summed_stats(m, row) == pytest.approx(direct.score, abs=1e-9)


def test_bootstrap_bad_arguments():
    with pytest.raises(ValueError, match="segment counts differ"):
        paired_bootstrap(["a", "b"], ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="n_samples"):
        paired_bootstrap(["a"], ["a"], ["a"], n_samples=0)
    with pytest.raises(ValueError, match="allowed are bleu, chrf, chrf\\+\\+"):
        paired_bootstrap(["a"], ["a"], ["a"], metric="comet")


def test_bootstrap_segment_means():
    rng = random.Random(0)
    seg_b = [rng.random() for _ in range(200)]
    seg_a = [x + 0.1 for x in seg_b]
    res = paired_bootstrap_segment_means(seg_a, seg_b, n_samples=200)
    assert res["delta"] == pytest.approx(0.1)
    assert res["p_value"] < 1e-9  # every resample moves by the same +0.1: no spread at all
    assert res["ci_low"] == pytest.approx(0.1) and res["ci_high"] == pytest.approx(0.1)
    same = paired_bootstrap_segment_means(seg_b, seg_b, n_samples=50)
    assert same["delta"] == 0.0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="segment counts differ"):
        paired_bootstrap_segment_means([0.1], [0.1, 0.2])


def test_holm_step_down_matches_the_textbook_example():
    from studylib.core.metrics import holm

    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_two_sided_p_from_the_bootstrap_standard_error():
    from studylib.core.metrics import two_sided_p

    assert two_sided_p(0.0, 1.0) == 1.0 and two_sided_p(0.5, 0.0) == 0.0
    assert two_sided_p(1.96, 1.0) == pytest.approx(0.05, abs=1e-3)  # |z| = 1.96: p = 0.05, either sign
    assert two_sided_p(-1.96, 1.0) == two_sided_p(1.96, 1.0)
    assert two_sided_p(1.0, 1.0) > two_sided_p(2.0, 1.0)
    refs, bad = _corpus()
    res = paired_bootstrap(refs, bad, refs, metric="chrf", n_samples=300)
    assert res["p_value"] == pytest.approx(two_sided_p(res["delta"], res["se"]))
    assert 0 <= res["p_one_sided"] <= 1
