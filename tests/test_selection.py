"""Choices made on dev (studylib.report.selection): the setting with the best dev score is kept, test scores aside."""

from types import SimpleNamespace

from studylib.report import selection


def _rec(run, lr, dev, test_xx_en, seed=0, parent="full-dev"):
    return {"notebook": "01_teacher", "run": run, "params": {"seed": seed, "learning_rate": lr},
            "what": {"sweep": {"parent": parent, "axes": {"learning_rate": lr, **({"seed": seed} if seed else {})}}},
            "training": {"dev_selection": {"best_score": dev, "best_step": 900, "planned_steps": 3632,
                                           "stopped_early": True, "metric": "chrf++", "dev": {"n": 1000}}},
            "averages": {"xx-en": {"chrf++": test_xx_en}, "en-xx": {"chrf++": 30.0}}}


def test_the_best_dev_score_is_kept_whatever_the_test_says():
    recs = [_rec("a", 5e-5, 40.0, 45.0), _rec("b", 1e-4, 41.0, 42.0)]
    data = selection.choices_data(recs)
    assert len(data) == 1 and data[0]["chosen"] == "learning_rate 0.0001" and data[0]["chosen_runs"] == ["b"]
    assert selection.chosen_record(recs, "01_teacher", "full-dev")["run"] == "b"
    table = selection.selection_table(data)
    assert "✓" in table and "900 of 3632 (stopped)" in table


def test_seeds_of_a_setting_are_averaged_before_the_choice():
    recs = [_rec("a0", 5e-5, 40.0, 40.0), _rec("a1", 5e-5, 43.0, 40.0, seed=1),
            _rec("b0", 1e-4, 41.0, 40.0), _rec("b1", 1e-4, 41.0, 40.0, seed=1)]
    data = selection.choices_data(recs)
    kept = [r for r in data[0]["settings"] if r["setting"] == data[0]["chosen"]][0]
    assert data[0]["chosen"] == "learning_rate 5e-05" and kept["dev"] == 41.5 and kept["seeds"] == [0, 1]


def test_records_without_dev_scores_or_sweeps_are_not_choices(tmp_path):
    plain = _rec("a", 5e-5, 40.0, 45.0)
    plain["training"] = {}
    unswept = _rec("b", 5e-5, 40.0, 45.0)
    unswept["what"]["sweep"] = None
    assert selection.choices_data([plain, unswept]) == []
    assert selection.selection_table([]) == ""  # the paper leaves an empty table out
    assert selection.text_selection(SimpleNamespace(tables=tmp_path)) == selection.NONE


def test_the_sentence_names_the_kept_setting_and_says_when_the_choice_is_open(tmp_path):
    import json

    (tmp_path / "selection.json").write_text(json.dumps(selection.choices_data([_rec("a", 5e-5, 40.0, 45.0)])))
    text = selection.text_selection(SimpleNamespace(tables=tmp_path))
    assert "only the setting learning_rate 5e-05" in text and "still open" in text


def test_a_parameter_chosen_inside_a_run_lists_every_value_tried(tmp_path):
    import json

    rec = {"notebook": "13_smoothquant", "run": "sq-dev", "params": {"seed": 0}, "what": {"sweep": None},
           "compression": {"dev_choice": {"param": "alpha", "chosen": 0.6, "metric": "chrf++", "dev": {"n": 1000},
                                          "tried": [{"value": 0.5, "score": 40.0}, {"value": 0.6, "score": 41.5}]}},
           "averages": {"xx-en": {"chrf++": 44.0}, "en-xx": {"chrf++": 30.0}}}
    data = selection.run_choices([rec])
    assert selection.choices_data([rec]) == [] and len(data) == 1 and data[0]["chosen"] == "alpha 0.6"
    table = selection.selection_table(data)
    assert table.count("sq-dev") == 2 and "44.00" in table and "✓" in table
    (tmp_path / "selection.json").write_text(json.dumps(data))
    text = selection.text_selection(SimpleNamespace(tables=tmp_path))
    assert "chose alpha 0.6 on dev" in text and "alpha 0.5 40.00" in text


def test_a_committed_teacher_record_of_the_sweep_is_read_as_a_choice():
    """The records keep the sweep under ``what``: a record the study made is found, not only a hand-built one."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "results/runs/01_teacher/gemma3-270m-full-dev-lr0.0001.json"
    rec = json.loads(path.read_text())
    data = selection.choices_data([rec])
    assert [e["parent"] for e in data] == ["gemma3-270m-full-dev"]
    assert data[0]["settings"][0]["setting"] == "learning_rate 0.0001" and data[0]["chosen_runs"] == [rec["run"]]


def _decoding_rec(teacher: str) -> dict:
    knobs = [{"repetition_penalty": p, "max_new_tokens": 256} for p in (1.0, 1.1)]
    return {"notebook": "02_decoding", "run": "dec", "params": {"seed": 0, "teacher_record": teacher},
            "what": {"sweep": None}, "averages": {},
            "decoding": {"chosen": knobs[1], "metric": "chrf++", "dev": {"n": 1000},
                         "candidates": [{"knobs": k, "mean": {"chrf++": s, "runaway_rate": r}}
                                        for k, s, r in zip(knobs, (31.5, 32.0), (0.07, 0.05))]}}


def test_a_decoding_choice_lists_its_candidates_by_the_knob_that_differs(tmp_path):
    import json

    data = selection.decoding_choices([_decoding_rec("01_teacher/a-lr0.0002.json")])
    assert len(data) == 1 and data[0]["chosen"] == "repetition_penalty 1.1"
    assert [r["setting"] for r in data[0]["settings"]] == ["repetition_penalty 1.0", "repetition_penalty 1.1"]
    table = selection.selection_table(data)
    assert table.count("| dec |") == 2 and "32.00" in table and "✓" in table
    assert "max_new_tokens" not in table  # the same in every candidate: not what the choice is between
    (tmp_path / "selection.json").write_text(json.dumps(data))
    text = selection.text_selection(SimpleNamespace(tables=tmp_path))
    assert "chose repetition_penalty 1.1 on dev" in text and "repetition_penalty 1.0 31.50" in text


def test_a_decoding_choice_says_whether_its_teacher_is_the_one_kept(tmp_path):
    import json

    sweep = selection.choices_data([_rec("a-lr0.0001", 1e-4, 32.4, 39.0), _rec("a-lr0.0002", 2e-4, 31.8, 37.0)])
    for teacher, said in (("a-lr0.0002", "a teacher not kept on dev: learning_rate 0.0001 was"),
                          ("a-lr0.0001", "the teacher kept on dev")):
        data = sweep + selection.decoding_choices([_decoding_rec(f"01_teacher/{teacher}.json")])
        (tmp_path / "selection.json").write_text(json.dumps(data))
        assert said in selection.text_selection(SimpleNamespace(tables=tmp_path))
