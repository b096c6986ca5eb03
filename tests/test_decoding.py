"""02_decoding (studylib.runs.decoding): candidate decodings compared on dev, checked before any model loads."""

import json

import pytest

from studylib.runs.decoding import DecodingParams, check_teacher_dev, compare
from studylib.runs.params import ParamsError, read_spec


@pytest.mark.parametrize("candidates, message", [
    ([], "candidates must be a non-empty list"),
    ([{"temperature": 0.7}], "candidates must be a non-empty list of mappings of repetition_penalty, max_new_tokens"),
    ([{"repetition_penalty": 0.8}], "repetition_penalty must be a number >= 1.0"),
    ([{"max_new_tokens": 0}], "max_new_tokens must be a positive integer"),
    ([{"repetition_penalty": 1.0}, {"repetition_penalty": 1.0, "max_new_tokens": 32}], "candidates must differ"),
])
def test_bad_candidates_are_one_line(candidates, message):
    with pytest.raises(ParamsError, match=message) as err:
        DecodingParams.build({"candidates": candidates}, "p.yaml")
    assert str(err.value).startswith("p.yaml: ") and "\n" not in str(err.value)


def _teacher(tmp_path, per_direction, seed=0):
    path = tmp_path / "runs" / "01_teacher" / "t.json"
    path.parent.mkdir(parents=True)
    dev = {"per_direction": {"de-en": per_direction, "en-de": per_direction}, "seed": seed}
    path.write_text(json.dumps({"training": {"dev_selection": {"best_score": 1.0, "dev": dev}}}))


def test_the_teachers_held_out_dev_pairs_must_be_the_ones_decoded(tmp_path):
    _teacher(tmp_path, 100)
    cfg = DecodingParams(dev_per_direction=100, teacher_record="01_teacher/t.json", results_dir=str(tmp_path))
    assert check_teacher_dev(cfg)["best_score"] == 1.0
    other = DecodingParams(dev_per_direction=50, teacher_record="01_teacher/t.json", results_dir=str(tmp_path))
    with pytest.raises(ParamsError, match="the teacher held out \\[100\\] dev pairs a direction"):
        check_teacher_dev(other)
    missing = DecodingParams(teacher_record="01_teacher/none.json", results_dir=str(tmp_path))
    with pytest.raises(ParamsError, match="no such record"):
        check_teacher_dev(missing)
    assert check_teacher_dev(DecodingParams()) is None


def test_compare_scores_every_candidate_on_dev_and_keeps_the_best(tiny, data_root):
    from studylib.methods import devset

    model, tok = tiny
    cfg = DecodingParams(directions=["de-en", "en-de"], dev_per_direction=2, data_dir=str(data_root),
                         candidates=[{"repetition_penalty": 1.0}, {"repetition_penalty": 1.5, "max_new_tokens": 8}])
    dev = devset.dev_examples(cfg.directions, 2, root=data_root)
    dev_sets = {d: [ex for ex in dev.examples if ex.direction == d] for d in cfg.directions}
    got = compare(model, tok, cfg, dev_sets, progress=False)
    first, second = got["candidates"]
    assert first["knobs"] == {"repetition_penalty": 1.0, "max_new_tokens": cfg.max_new_tokens}
    assert second["knobs"] == {"repetition_penalty": 1.5, "max_new_tokens": 8}
    assert set(first["per_direction"]) == {"de-en", "en-de"} and "runaway_rate" in first["mean"]
    best = max(range(2), key=lambda i: (got["candidates"][i]["mean"]["chrf++"],
                                        -got["candidates"][i]["mean"]["runaway_rate"]))
    assert got["chosen"] == best and got["engine"]["engine"] == "hf"


def test_the_record_says_it_read_the_dev_split_and_no_test_set():
    from studylib.core import what

    cfg = DecodingParams()
    stated = what.describe(cfg.FAMILY, cfg.as_dict(), method=cfg.METHOD)
    assert stated["method"] == "decoding" and stated["testset"] == "alma-dev" and stated["testsets"] is None


def _decoding_record(tmp_path, chosen):
    path = tmp_path / "runs" / "02_decoding" / "d.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"decoding": {"chosen": chosen}}))


def _params_file(tmp_path, **values):
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"notebook": "30_kd_data", "parameters": {"run_name": "kd", **values}}))
    return path


def test_a_run_naming_a_decoding_record_decodes_as_that_run_chose_on_dev(tmp_path):
    from studylib.runs.distillation import KDParams

    _decoding_record(tmp_path, {"repetition_penalty": 1.1, "max_new_tokens": 200})
    f = _params_file(tmp_path, decoding_record="02_decoding/d.json")
    cfg = KDParams.load(f, results_dir=str(tmp_path))
    assert (cfg.repetition_penalty, cfg.max_new_tokens) == (1.1, 200)
    assert "results/runs/02_decoding/d.json" in cfg.uses()  # the workflow runs the choice first
    planned = KDParams.from_spec(read_spec(f), results_dir=str(tmp_path))
    assert planned.repetition_penalty == 1.0  # the plan reads no record: it may not be made yet


def test_a_decoding_record_missing_or_set_beside_its_knobs_is_one_line(tmp_path):
    from studylib.runs.distillation import KDParams

    f = _params_file(tmp_path, decoding_record="02_decoding/d.json")
    with pytest.raises(ParamsError, match="decoding_record 02_decoding/d.json: no such record .*run its 02_decoding"):
        KDParams.load(f, results_dir=str(tmp_path))
    _decoding_record(tmp_path, {"temperature": 0.7})
    with pytest.raises(ParamsError, match="no decoding chosen on dev in it"):
        KDParams.load(f, results_dir=str(tmp_path))
    both = _params_file(tmp_path, decoding_record="02_decoding/d.json", repetition_penalty=1.2)
    with pytest.raises(ParamsError, match="set decoding_record or repetition_penalty, not both") as err:
        KDParams.load(both, results_dir=str(tmp_path))
    assert "\n" not in str(err.value)
    with pytest.raises(ParamsError, match="decoding_record must look like '02_decoding/<run>.json'"):
        KDParams.build({"decoding_record": "01_teacher/t.json"}, "p.yaml")
    with pytest.raises(ParamsError, match="a decoding run chooses its decoding"):
        DecodingParams.build({"decoding_record": "02_decoding/d.json"}, "p.yaml")
