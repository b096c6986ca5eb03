"""Tests of studylib.core.data and studylib.core.leakage: real-data counts (from /work/shared/data), errors, sampling,
leak guards."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from studylib.core.data import (
    IS_DEV_SIZE,
    DataError,
    Example,
    balanced_sample,
    load_alma,
    load_few_shot,
    load_hub,
    load_jsonl,
    load_parallel_text,
    load_split,
    load_tatoeba,
    resolve_data_dir,
    subsample,
)
from studylib.core.languages import DIRECTIONS, UnknownDirectionError
from studylib.core.leakage import DataLeakError, assert_no_test_overlap, drop_test_overlap, test_sentences

# The shared data folder: $STUDYLIB_DATA if set, else this workplace's ../shared/data.
_DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DATA = Path(os.environ.get("STUDYLIB_DATA") or _DEFAULT).resolve()
needs_data = pytest.mark.skipif(
    not (DATA / "alma" / "human_written_data").is_dir(),
    reason=f"shared data folder not found at {DATA} (set STUDYLIB_DATA)",
)


@pytest.fixture
def real_data(monkeypatch):
    """Point STUDYLIB_DATA at the shared data folder for one test."""
    monkeypatch.setenv("STUDYLIB_DATA", str(DATA))
    return DATA


def _ex(src, tgt="t", direction="de-en"):
    return Example(src, tgt, direction)


# ------------------------------------------------------------------ data root


def test_resolve_data_dir_needs_env_or_argument(monkeypatch, tmp_path):
    monkeypatch.delenv("STUDYLIB_DATA", raising=False)
    with pytest.raises(DataError, match="STUDYLIB_DATA"):
        resolve_data_dir()
    assert resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("STUDYLIB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="nowhere"):
        resolve_data_dir()
    assert resolve_data_dir(tmp_path) == tmp_path  # the argument wins over the variable


def _one_line(err) -> str:
    """The error's message, checked to be one line raised without a chained traceback."""
    message = str(err.value)
    assert "\n" not in message
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)
    return message


def test_missing_data_folder_is_one_line_naming_path_and_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("STUDYLIB_DATA", raising=False)
    with pytest.raises(DataError) as err:
        load_alma("de-en", "test")
    assert "$STUDYLIB_DATA" in _one_line(err)
    monkeypatch.setenv("STUDYLIB_DATA", str(tmp_path / "nowhere"))
    for call in (lambda: load_alma("de-en", "test"), lambda: load_few_shot("de-en"), lambda: load_tatoeba("de-en"),
                 lambda: load_split("wmt24", "en-de", "test")):
        with pytest.raises(DataError) as err:
            call()
        message = _one_line(err)
        assert str(tmp_path / "nowhere") in message and "from $STUDYLIB_DATA" in message and "does not exist" in message
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is not a folder") as err:
        resolve_data_dir(tmp_path / "file")
    assert "$STUDYLIB_DATA" in _one_line(err)


def test_a_root_without_the_data_says_so(tmp_path):
    """A root that exists but holds no alma/ (or tatoeba/, wmt24/): the file and the variable are named."""
    cases = [
        (lambda: load_alma("de-en", "test", root=tmp_path), "alma/human_written_data/deen/test.de-en.json", "alma/"),
        (lambda: load_alma("is-en", "dev", root=tmp_path), "train.is-en.is", "alma/"),
        (lambda: load_few_shot("de-en", root=tmp_path), "HW-5-shot/shots.de-en.json", "alma/"),
        (lambda: load_tatoeba("de-en", root=tmp_path), "tatoeba-test-v2021-08-07.deu", "tatoeba/"),
        (lambda: load_split("wmt24", "en-de", "test", root=tmp_path), "wmt24/wmt24.jsonl", "wmt24/"),
    ]
    for call, path, top in cases:
        with pytest.raises(DataError) as err:
            call()
        message = _one_line(err)
        assert path in message and f"has no {top}" in message and "$STUDYLIB_DATA" in message


def test_unreadable_files_and_bad_records_are_one_line(tmp_path):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"langs": "en-de", "src": "\xe9", "tgt": "b"}\n')
    with pytest.raises(DataError, match="latin1.jsonl: not UTF-8") as err:
        load_jsonl(bad)
    _one_line(err)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{oops\n")
    with pytest.raises(DataError, match="broken.jsonl:1") as err:
        load_jsonl(broken)
    _one_line(err)
    with pytest.raises(DataError, match="fr-en") as err:
        load_alma("fr-en", "test", root=tmp_path)
    _one_line(err)


# ------------------------------------------------------------------ real ALMA data

TRAIN_PAIRS = {"cs": 12076, "de": 14211, "is": 2009, "ru": 15000, "zh": 15406}
TEST_SEGMENTS = {
    "cs-en": 1448, "en-cs": 2037, "de-en": 1984, "en-de": 2037, "is-en": 1000,
    "en-is": 1000, "ru-en": 2016, "en-ru": 2037, "zh-en": 1875, "en-zh": 2037,
}


@needs_data
@pytest.mark.parametrize("xx", sorted(TRAIN_PAIRS))
def test_alma_train_counts_and_swap(real_data, xx):
    into_en, from_en = load_alma(f"{xx}-en", "train"), load_alma(f"en-{xx}", "train")
    expected = TRAIN_PAIRS[xx] - (IS_DEV_SIZE if xx == "is" else 0)
    assert len(into_en) == len(from_en) == expected
    assert [(e.tgt, e.src) for e in from_en] == [(e.src, e.tgt) for e in into_en]
    assert into_en[0].direction == f"{xx}-en" and from_en[0].direction == f"en-{xx}"
    assert all(e.src and e.tgt for e in into_en)


@needs_data
def test_alma_test_counts(real_data):
    assert {d: len(load_alma(d, "test")) for d in DIRECTIONS} == TEST_SEGMENTS


@needs_data
def test_alma_first_records(real_data):
    de_en = load_alma("de-en", "test")[0]
    assert (de_en.src, de_en.tgt) == ("Die Ware hat unter 20 Euro gekostet.", "The goods cost less than 20 euros.")
    dev = load_alma("en-de", "dev")
    assert len(dev) == 1002
    assert dev[1].src == "There's mask-shaming and then there's full on assault."
    assert dev[1].tgt == "Masken-Shaming ist eine Sache, Körperverletzung eine andere."


@needs_data
def test_icelandic_dev_is_carved_off_train(real_data):
    train, dev = load_alma("is-en", "train"), load_alma("is-en", "dev")
    assert len(dev) == IS_DEV_SIZE and len(train) + len(dev) == TRAIN_PAIRS["is"]
    assert {(e.src, e.tgt) for e in train}.isdisjoint({(e.src, e.tgt) for e in dev})
    assert {e.src for e in train}.isdisjoint({e.src for e in dev})
    # the dev set is the tail of the file and keeps its line numbers
    assert [e.get("index") for e in dev] == list(range(TRAIN_PAIRS["is"] - IS_DEV_SIZE, TRAIN_PAIRS["is"]))
    assert [e.get("index") for e in train] == list(range(TRAIN_PAIRS["is"] - IS_DEV_SIZE))
    assert [(e.tgt, e.src) for e in load_alma("en-is", "dev")] == [(e.src, e.tgt) for e in dev]


@needs_data
def test_few_shot_files(real_data):
    shots = load_few_shot("de-en")
    assert len(shots) == 5
    assert shots[0] == (
        "Die Lehrstellen beim Kreis sind offenbar sehr begehrt.",
        "The apprenticeship positions at the district are apparently very coveted.",
    )
    assert all(len(load_few_shot(d)) == 5 for d in DIRECTIONS)
    assert len(load_few_shot("en-zh", kind="Filtered-5-shot")) == 5
    with pytest.raises(DataError, match="kind"):
        load_few_shot("de-en", kind="10-shot")


# ------------------------------------------------------------------ errors


def test_missing_file_names_the_path(tmp_path):
    (tmp_path / "alma" / "human_written_data" / "deen").mkdir(parents=True)
    expected = tmp_path / "alma" / "human_written_data" / "deen" / "test.en-de.json"
    with pytest.raises(DataError) as err:
        load_alma("en-de", "test", root=tmp_path)
    assert str(expected) in str(err.value)
    with pytest.raises(DataError, match="train.de-en.de"):
        load_alma("de-en", "train", root=tmp_path)
    with pytest.raises(DataError, match="valid.de-en.json"):
        load_alma("de-en", "dev", root=tmp_path)


@pytest.mark.parametrize("bad", ["fr-en", "de-fr", "en-en", "de_en", "DE-EN"])
def test_unknown_direction_is_one_error(tmp_path, bad):
    for call in (
        lambda: load_alma(bad, "train", root=tmp_path),
        lambda: load_split("alma", bad, "test", root=tmp_path),
        lambda: load_tatoeba(bad, root=tmp_path),
    ):
        with pytest.raises(DataError) as err:
            call()
        assert isinstance(err.value, UnknownDirectionError) and isinstance(err.value, ValueError)
        assert bad in str(err.value)


def test_unknown_split_and_source(tmp_path):
    with pytest.raises(DataError, match="split"):
        load_alma("de-en", "validation", root=tmp_path)
    with pytest.raises(DataError, match="unknown data source"):
        load_split("europarl", "de-en", "train", root=tmp_path)


def test_bad_schema_names_path(tmp_path):
    folder = tmp_path / "alma" / "human_written_data" / "deen"
    folder.mkdir(parents=True)
    (folder / "test.de-en.json").write_text(json.dumps([{"translation": {"de": "a", "fr": "b"}}]))
    with pytest.raises(DataError, match="test.de-en.json"):
        load_alma("de-en", "test", root=tmp_path)
    (folder / "valid.de-en.json").write_text("[{not json")
    with pytest.raises(DataError, match="valid.de-en.json"):
        load_alma("de-en", "dev", root=tmp_path)


# ------------------------------------------------------------------ plain text, JSON lines


def test_parallel_text(tmp_path):
    a, b = tmp_path / "x.de", tmp_path / "x.en"
    a.write_text("Hallo Welt.\nZweiter Satz \u2028 mit Trenner.\n", encoding="utf-8")
    b.write_text("Hello world.\r\nSecond sentence.\n", encoding="utf-8")
    ex = load_parallel_text(a, b, "de-en")
    assert [(e.src, e.tgt) for e in ex] == [
        ("Hallo Welt.", "Hello world."),
        ("Zweiter Satz \u2028 mit Trenner.", "Second sentence."),
    ]
    b.write_text("only one line\n")
    with pytest.raises(DataError, match=r"x\.de has 2 lines, .*x\.en has 1$"):
        load_parallel_text(a, b, "de-en")
    b.write_text("one\n\n")
    with pytest.raises(DataError, match="line 2"):
        load_parallel_text(a, b, "de-en")


def test_load_jsonl_schema_and_meta(tmp_path):
    path = tmp_path / "esa.jsonl"
    rows = [
        {"langs": "en-de", "line_id": 1, "src": "Hi.", "tgt": "Hallo.", "esa_score": 88.5},
        {"langs": "en-ja", "line_id": 2, "src": "Hi.", "tgt": "こんにちは。"},
        {"langs": "en-cs", "line_id": 3, "src": "Hi.", "tgt": "Ahoj.", "system": "X", "spans": [1, 2]},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    ex = load_jsonl(path)
    assert [e.direction for e in ex] == ["en-de", "en-cs"]  # en-ja is outside the study
    assert ex[0].get("esa_score") == 88.5 and ex[0].get("line_id") == 1
    assert ex[1].meta_dict() == {"line_id": 3, "system": "X"}  # non-scalar fields left out
    hash(ex[0])  # examples stay hashable
    assert [e.tgt for e in load_jsonl(path, ["en-cs"])] == ["Ahoj."]
    assert load_split(str(path), "en-de", "test")[0].tgt == "Hallo."
    with pytest.raises(DataError, match="has no rows for de-en"):
        load_split(str(path), "de-en", "test")
    with pytest.raises(DataError):
        load_jsonl(path, ["en-xx"])
    path.write_text('{"langs": "en-de", "src": "Hi."}\n')
    with pytest.raises(DataError, match=r"esa.jsonl:1"):
        load_jsonl(path)
    path.write_text('{"langs": "en-de", "src": "a", "tgt": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"esa.jsonl:2"):
        load_jsonl(path)


@needs_data
def test_wmt24(real_data):
    ex = load_split("wmt24", "en-de", "test")
    assert len(ex) == 997 and ex[0].get("line_id") is not None
    assert all(e.direction == "en-de" for e in ex)
    with pytest.raises(DataError, match="en->xx"):
        load_split("wmt24", "de-en", "test")
    with pytest.raises(DataError, match="test set only"):
        load_split("wmt24", "en-de", "train")


@needs_data
def test_tatoeba(real_data):
    counts = {"cs": 13824, "de": 17565, "is": 2503, "ru": 19425, "zh": 10390}
    for xx, n in counts.items():
        assert len(load_tatoeba(f"{xx}-en")) == n
    is_en, en_is = load_tatoeba("is-en"), load_tatoeba("en-is")  # folder eng-isl
    assert [(e.tgt, e.src) for e in en_is] == [(e.src, e.tgt) for e in is_en]
    assert len(load_split("tatoeba", "de-en", "train", n=100, seed=1)) == 100
    with pytest.raises(DataError, match="single pool"):
        load_split("tatoeba", "de-en", "dev")


# ------------------------------------------------------------------ sampling


def test_subsample_deterministic_ordered_nested():
    pool = [_ex(f"s{i}") for i in range(1000)]
    a, b = subsample(pool, 50, seed=3), subsample(pool, 50, seed=3)
    assert a == b and len(a) == 50
    assert subsample(pool, 50, seed=4) != a
    idx = [pool.index(e) for e in a]
    assert idx == sorted(idx)  # original order kept
    assert set(a) <= set(subsample(pool, 200, seed=3))  # nested for one seed
    assert subsample(pool, None) == pool and subsample(pool, 5000, seed=9) == pool
    for bad in (0, -1):
        with pytest.raises(ValueError):
            subsample(pool, bad)


@needs_data
def test_load_split_subsample_and_balanced(real_data):
    a = load_split("alma", "zh-en", "train", n=64, seed=7)
    assert a == load_split("alma", "zh-en", "train", n=64, seed=7) and len(a) == 64
    dirs = ["de-en", "en-de", "is-en"]
    cal = balanced_sample(dirs, 16, seed=0)
    assert [e.direction for e in cal] == [d for d in dirs for _ in range(16)]
    assert cal == balanced_sample(dirs, 16, seed=0)
    # xx->en and en->xx do not draw the same underlying pairs
    assert {e.src for e in cal[:16]} != {e.tgt for e in cal[16:32]}
    with pytest.raises(DataLeakError):
        balanced_sample(dirs, 16, split="test")
    with pytest.raises(DataError, match="fewer than"):
        balanced_sample(["is-en"], 500, split="dev")


# ------------------------------------------------------------------ test-set guards


def test_overlap_guard_on_synthetic_data():
    test = [_ex("Die Ware hat unter 20 Euro gekostet.", "The goods cost less than 20 euros.")]
    clean = [_ex("Guten Morgen.", "Good morning.")]
    assert_no_test_overlap(clean, test, "calibration")  # no error
    leaky = clean + [_ex("Etwas anderes.", "The  goods cost less\tthan 20 euros. ")]  # target leak, odd spacing
    with pytest.raises(DataLeakError, match="calibration"):
        assert_no_test_overlap(leaky, test, "calibration")
    with pytest.raises(AssertionError):  # DataLeakError is an AssertionError, not a DataError
        assert_no_test_overlap(leaky, {"The goods cost less than 20 euros."}, "training")
    kept, dropped = drop_test_overlap(leaky, test)
    assert kept == clean and dropped == 1


@needs_data
def test_overlap_guard_on_planted_leak(real_data):
    tests = test_sentences(["de-en", "en-de"])
    train = load_alma("de-en", "train")
    assert_no_test_overlap(train, tests, "training")  # de train is clean against de tests
    planted = subsample(train, 100, seed=0) + [load_alma("en-de", "test")[5]]
    with pytest.raises(DataLeakError, match="1 example"):
        assert_no_test_overlap(planted, tests, "layer selection")
    assert drop_test_overlap(planted, tests)[1] == 1


@needs_data
def test_known_overlaps_in_shipped_data(real_data):
    """Pins what the shipped data holds (see the module doc of studylib.core.data)."""
    every_test = test_sentences()
    train_hits = sum(drop_test_overlap(load_alma(f"{xx}-en", "train"), every_test)[1] for xx in TRAIN_PAIRS)
    assert train_hits == 6  # short generic sentences ("So what?", "Thank you.", ...)
    _, ru_hits = drop_test_overlap(load_alma("ru-en", "train"), test_sentences(["ru-en"]))
    assert ru_hits == 1  # "Ну и что?" / "So what?" is also a ru->en test segment
    en_is = test_sentences(["en-is"])
    for xx in ("cs", "de", "ru", "zh"):  # WMT21's shared English news source
        assert drop_test_overlap(load_alma(f"{xx}-en", "dev"), en_is)[1] == 885
    assert drop_test_overlap(load_alma("is-en", "dev"), every_test)[1] == 0
    assert drop_test_overlap(load_split("wmt24", "en-de", "test"), every_test)[1] == 0


# ------------------------------------------------------------------ hub path (fake `datasets`)


def _fake_datasets(calls, fail=False):
    rows = {
        ("haoranxu/WMT22-Test", "de-en", "test"): [{"de-en": {"de": "Hallo.", "en": "Hello."}}],
        ("haoranxu/WMT22-Test", "en-de", "test"): [{"en-de": {"en": "Bye.", "de": "Tschüss."}}],
        ("haoranxu/ALMA-Human-Parallel", "de-en", "train"): [
            {"translation": {"de": "Eins.", "en": "One."}},
            {"translation": {"de": "Zwei.", "en": "Two."}},
        ],
        ("haoranxu/ALMA-Human-Parallel", "is-en", "train"): [
            {"translation": {"is": f"is{i}", "en": f"en{i}"}} for i in range(IS_DEV_SIZE + 3)
        ],
    }

    def load_dataset(name, config, split=None, cache_dir=None):
        calls.append((name, config, split))
        if fail:
            raise ConnectionError("offline")
        return rows[(name, config, split)]

    mod = types.ModuleType("datasets")
    mod.load_dataset = load_dataset
    return mod


def test_hub_loader_with_fake_datasets(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(calls))
    assert load_hub("de-en", "test") == [Example("Hallo.", "Hello.", "de-en", (("index", 0), ("hub", "haoranxu/WMT22-Test")))]
    assert [(e.src, e.tgt) for e in load_hub("en-de", "test")] == [("Bye.", "Tschüss.")]
    assert [(e.src, e.tgt) for e in load_split("hub", "en-de", "train")] == [("One.", "Eins."), ("Two.", "Zwei.")]
    is_dev = load_split("haoranxu/ALMA-Human-Parallel", "is-en", "dev")
    is_train = load_hub("is-en", "train")
    assert len(is_dev) == IS_DEV_SIZE and len(is_train) == 3 and is_dev[0].src == "is3"
    assert calls == [
        ("haoranxu/WMT22-Test", "de-en", "test"),
        ("haoranxu/WMT22-Test", "en-de", "test"),
        ("haoranxu/ALMA-Human-Parallel", "de-en", "train"),
        ("haoranxu/ALMA-Human-Parallel", "is-en", "train"),
        ("haoranxu/ALMA-Human-Parallel", "is-en", "train"),
    ]


def test_hub_loader_errors_point_to_local_copy(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets([], fail=True))
    with pytest.raises(DataError, match="load_split\\('alma'"):
        load_hub("de-en", "dev")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DataError, match="not installed.*STUDYLIB_DATA"):
        load_hub("de-en", "test")
