"""Test sets carry their true names (WMT21 for ALMA's is<->en, WMT22 for its other eight, WMT24), and WMT24 en->xx
loads through load_split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studylib.core import data, leakage, what
from studylib.core.languages import DIRECTIONS, EN_XX, XX_EN
from studylib.runs.params import EvalParams, ParamsError

REPO = Path(__file__).resolve().parents[1]
ALL_WMT22 = {d: "wmt22" for d in DIRECTIONS} | {"is-en": "wmt21", "en-is": "wmt21"}


def test_true_names_per_direction():
    assert data.testset_names("alma") == ALL_WMT22
    assert data.testset_names("hub") == ALL_WMT22 == data.testset_names(data.HUB_TEST_ID)
    assert data.testset_name("alma") == "wmt22"  # the main name: eight of ten directions
    assert data.testset_names("wmt24", EN_XX) == {d: "wmt24" for d in EN_XX}
    assert data.testset_name("tatoeba", "de-en") == "tatoeba"
    assert data.testset_name("some/dir/wmt24_esa.jsonl", "en-de") == "wmt24_esa.jsonl"
    with pytest.raises(data.DataError, match="wmt24 has no de-en test set: it holds en-cs, en-de"):
        data.testset_name("wmt24", "de-en")
    with pytest.raises(data.UnknownDirection):
        data.testset_name("alma", "fr-en")


def test_group_labels():
    label = data.testset_label
    assert label(data.testset_names("alma")) == "WMT22 (WMT21 for is↔en)"
    assert label(data.testset_names("alma", XX_EN)) == "WMT22 (WMT21 for is→en)"
    assert label(data.testset_names("alma", EN_XX)) == "WMT22 (WMT21 for en→is)"
    assert label(data.testset_names("alma", ["de-en", "en-de"])) == "WMT22"
    assert label(data.testset_names("alma", ["is-en", "en-is"])) == "WMT21"
    assert label(data.testset_names("wmt24", EN_XX)) == "WMT24"
    assert label({}) == ""


def _wmt24_file(root: Path, rows) -> Path:
    (root / "wmt24").mkdir()
    path = root / "wmt24" / "wmt24.jsonl"
    path.write_text("".join(json.dumps({"langs": d, "line_id": i, "src": f"s{i}", "tgt": f"t{i}"}) + "\n"
                            for i, d in enumerate(rows)))
    return path


def test_wmt24_direction_it_lacks_fails_in_one_line(tmp_path):
    _wmt24_file(tmp_path, ["en-de", "en-de", "en-cs"])
    assert [e.src for e in data.load_split("wmt24", "en-de", "test", root=tmp_path)] == ["s0", "s1"]
    for direction in ("en-zh", "de-en"):
        with pytest.raises(data.DataError) as err:
            data.load_split("wmt24", direction, "test", root=tmp_path)
        msg = str(err.value)
        assert "\n" not in msg and f"no rows for {direction}: it holds en-cs, en-de (" in msg


def test_params_refuse_wmt24_outside_en_xx():
    assert EvalParams(test_source="wmt24", directions=list(EN_XX)).directions == list(EN_XX)
    with pytest.raises(ParamsError, match=r"wmt24 holds en-cs, en-de, en-is, en-ru, en-zh only .*not de-en: "):
        EvalParams(test_source="wmt24", directions=["en-de", "de-en"])


def test_wmt24_real_file(data_root):
    if not (data_root / "wmt24" / "wmt24.jsonl").is_file():
        pytest.skip("no wmt24/wmt24.jsonl in the data folder")
    counts = {d: len(data.load_split("wmt24", d, "test", root=data_root)) for d in EN_XX}
    assert counts == {d: 997 for d in EN_XX} and sum(counts.values()) == 4985
    sample = data.load_split("wmt24", "en-zh", "test", n=20, seed=3, root=data_root)
    assert len(sample) == 20 and sample == data.load_split("wmt24", "en-zh", "test", n=20, seed=3, root=data_root)
    with pytest.raises(data.DataError, match="no rows for zh-en: it holds en-cs, en-de, en-is, en-ru, en-zh"):
        data.load_split("wmt24", "zh-en", "test", root=data_root)
    pool = leakage.every_test_sentence(data_root)  # the leak guard holds every WMT24 sentence
    assert all(data.normalize(e.src) in pool and data.normalize(e.tgt) in pool
               for d in EN_XX for e in data.load_split("wmt24", d, "test", root=data_root))


def test_what_names_new_and_old_records():
    params = {"test_source": "alma", "directions": ["is-en", "de-en"]}
    block = what.describe("base", params)
    assert block["testset"] == "wmt22" and block["testsets"] == {"is-en": "wmt21", "de-en": "wmt22"}
    new = {"what": block, "params": params}
    old = {"what": {k: v for k, v in block.items() if k != "testsets"}, "params": params}
    assert what.testsets_of(new) == what.testsets_of(old) == {"is-en": "wmt21", "de-en": "wmt22"}
    assert what.testsets_of({"what": {"testset": "wmt22"}, "params": {}}) == {}  # a run that evaluates nothing
    assert what.describe("efficiency", {"variant": "x"})["testsets"] is None
    assert what.describe("base", {"test_source": "wmt24", "directions": ["en-is"]})["testsets"] == {"en-is": "wmt24"}
    assert what.testsets_of({"what": {}, "params": {"test_source": "alma", "directions": "all"}}) == ALL_WMT22


def test_committed_records_read_unchanged():
    """A committed record without ``testsets`` is named from its params; nothing is written back."""
    path = REPO / "results" / "runs" / "00_baseline" / "gemma3-270m-3shot.json"
    if not path.is_file():
        pytest.skip(f"no committed record at {path}")
    before = path.read_bytes()
    record = json.loads(before)
    names = what.testsets_of(record)
    assert names == {d: ALL_WMT22[d] for d in record["metrics"]} and names["is-en"] == "wmt21"
    assert data.testset_label(names) == "WMT22 (WMT21 for is↔en)"
    assert path.read_bytes() == before
