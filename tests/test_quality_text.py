"""The paper's sentences on quality (studylib.report.quality): a difference is given only between runs scored on the
same test segments."""

from types import SimpleNamespace

import pandas as pd

from studylib.report import quality

REF = ("01_teacher", "lora")


def _ctx(comparable: bool):
    rows = [{"notebook": "01_teacher", "run": run, "family": "teacher", "direction": g, "testset": "wmt22",
             "chrf++": score} for run, score in (("lora", 30.0), ("full", 33.0)) for g in ("xx-en", "en-xx")]
    sig = pd.DataFrame([{"notebook": "01_teacher", "run": "full", "direction": g, "metric": "chrf++",
                         "comparable": comparable, "delta": 3.0 if comparable else float("nan"),
                         "significant": comparable, "p_value": 0.001, "p_holm": 0.002} for g in ("xx-en", "en-xx")])
    return SimpleNamespace(summary=pd.DataFrame(rows), sig=sig, reference="/".join(REF))


def test_teachers_on_the_same_segments_get_their_tested_difference():
    text = quality.text_teachers(_ctx(comparable=True))
    assert "`full` differs from `lora` by +3.0 chrF++ on xx→en (Holm-adjusted p = 0.002)" in text


def test_teachers_on_other_segments_get_no_difference():
    """A full-size record against a 200-segment reference: averages over different segments are not a difference."""
    text = quality.text_teachers(_ctx(comparable=False))
    assert "+3.0" not in text and "untested" not in text
    assert "`full` was scored on other test segments than `lora`" in text
