import pytest

from studylib.core import calibration, data, leakage
from studylib.core.languages import DIRECTIONS


def test_balanced_over_all_directions_and_disjoint_from_tests(data_root):
    cal = calibration.calibration_set(3, root=data_root)
    assert cal.per_direction == {d: 3 for d in DIRECTIONS}  # never silently one language
    assert len(cal.texts) == 30
    pool = leakage.test_sentences(root=data_root)
    for text in cal.texts:
        assert text.startswith("Translate this from ")
        src_line = text.split("\n")[1].split(": ", 1)[1]
        assert data.normalize(src_line) not in pool
    # de-en and en-de do not draw the same underlying pairs
    de_en = [t for t in cal.texts if t.startswith("Translate this from German")]
    en_de = [t for t in cal.texts if t.startswith("Translate this from English to German")]
    assert {t.split("\n")[1][8:] for t in de_en}.isdisjoint({t.split("\n")[2][8:] for t in en_de})


def test_calibration_is_deterministic_and_checked(data_root):
    a = calibration.calibration_set(2, ["de-en", "en-zh"], root=data_root, seed=1)
    b = calibration.calibration_set(2, ["de-en", "en-zh"], root=data_root, seed=1)
    assert a.texts == b.texts and a.describe()["n"] == 4
    with pytest.raises(ValueError, match="per_direction"):
        calibration.calibration_set(0, root=data_root)
    with pytest.raises(ValueError, match="unknown directions"):
        calibration.calibration_set(2, ["de-fr"], root=data_root)
