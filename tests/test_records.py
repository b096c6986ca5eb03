import json

import pytest

from studylib.core import records


def _metrics():
    return {"de-en": {"bleu": 20.0, "chrf": 50.0, "chrf++": 48.0, "n": 3},
            "cs-en": {"bleu": 10.0, "chrf": 40.0, "chrf++": 38.0, "n": 3},
            "en-de": {"bleu": 5.0, "chrf": 30.0, "chrf++": 28.0, "n": 3}}


def test_record_schema_and_averages(tmp_path):
    rec = records.make_record(notebook="00_baseline", run="r1", params={"model_id": "m", "n_test": 3},
                              profile="smoke", metrics=_metrics())
    assert rec["averages"]["xx-en"]["chrf++"] == pytest.approx(43.0)
    assert rec["averages"]["en-xx"]["bleu"] == pytest.approx(5.0)
    assert rec["averages"]["xx-en"]["directions"] == ["cs-en", "de-en"]
    env = rec["environment"]
    assert {"git_sha", "packages", "device", "date", "python"} <= set(env)
    assert "torch" in env["packages"]
    path = records.write_record(rec, tmp_path)
    assert path == tmp_path / "runs" / "00_baseline" / "r1.json"
    assert json.loads(path.read_text())["params_hash"] == records.params_hash({"n_test": 3, "model_id": "m"})


def test_bad_profile_and_direction_are_refused():
    with pytest.raises(ValueError, match="profile"):
        records.make_record(notebook="n", run="r", params={}, profile="quick", metrics={})
    with pytest.raises(ValueError, match="unknown directions"):
        records.make_record(notebook="n", run="r", params={}, profile="full", metrics={"de-fr": {}})
    with pytest.raises(ValueError, match="plain"):
        records.record_path("00_baseline", "../escape")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "r.json"
    records.write_json_atomic({"ok": 1}, path)

    class Unserializable:
        def __str__(self):
            raise RuntimeError("cannot serialize")

    with pytest.raises(RuntimeError):
        records.write_json_atomic({"bad": Unserializable()}, path)
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_results_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDYLIB_RESULTS", str(tmp_path))
    assert records.results_dir() == tmp_path
    assert records.results_dir("x") == type(tmp_path)("x")


def test_outputs_are_stored_beside_the_record_and_read_back_whole(tmp_path):
    """Hypotheses per run, sources and references once per test selection; reading gives the record as made."""
    outputs = {"de-en": {"src": ["Hallo", "Welt"], "ref": ["Hello", "World"], "hyp": ["Hi", "World"]}}
    recs = [records.make_record(notebook="12_gptq", run=run, params={"run_name": run}, profile="full",
                                metrics={"de-en": {"chrf++": 50.0}}, outputs={"de-en": {**outputs["de-en"], "hyp": h}})
            for run, h in (("a", ["Hi", "World"]), ("b", ["Hey", "Earth"]))]
    for rec in recs:
        path = records.write_record(rec, tmp_path)
        assert "outputs" not in json.loads(path.read_text()) and records.read_record(path) == {
            **rec, "outputs_file": f"{rec['run']}.outputs.json.gz"}
    assert len(list((tmp_path / "testsets").iterdir())) == 1  # the shared sources and references, once
    assert [records.read_record(tmp_path / "runs" / "12_gptq" / f"{run}.json")["outputs"]["de-en"]["hyp"]
            for run in ("a", "b")] == [["Hi", "World"], ["Hey", "Earth"]]


def test_a_missing_test_selection_is_made_again_from_the_data_folder(tmp_path, monkeypatch, data_root):
    """The sources and references are the test data: never committed, made again from the data by the record's
    params when a reader lacks them, and checked to be the segments the record was scored on."""
    import pytest

    from studylib.core import data

    monkeypatch.setenv("STUDYLIB_DATA", str(data_root))
    params = {"run_name": "a", "test_source": "alma", "n_test": 3, "test_seed": 0}
    made = {d: data.load_split("alma", d, "test", n=3, seed=0, root=data_root) for d in ("de-en", "en-is")}
    outputs = {d: {"src": [e.src for e in exs], "ref": [e.tgt for e in exs], "hyp": ["x"] * len(exs)}
               for d, exs in made.items()}
    rec = records.make_record(notebook="12_gptq", run="a", params=params, profile="full",
                              metrics={d: {"chrf++": 1.0} for d in made}, outputs=outputs)
    path = records.write_record(rec, tmp_path)
    for f in (tmp_path / "testsets").iterdir():
        f.unlink()  # as in a fresh clone
    assert records.read_record(path)["outputs"] == outputs
    assert len(list((tmp_path / "testsets").iterdir())) == 1
    side = json.loads(path.read_text())
    side["params"]["test_seed"] = 1  # another selection than the one scored
    path.write_text(json.dumps(side))
    for f in (tmp_path / "testsets").iterdir():
        f.unlink()
    with pytest.raises(data.DataError, match="are not the segments the record was scored on") as err:
        records.read_record(path)
    assert "\n" not in str(err.value)


def test_environment_says_how_busy_the_host_was(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    host = records.environment()["host"]
    assert host["cpus"] >= 1 and host["cuda_visible_devices"] == "2"
    assert host["load_average_1_5_15_min"] is None or len(host["load_average_1_5_15_min"]) == 3


def test_a_record_states_what_it_is_and_records_of_an_older_layout_are_stale():
    rec = records.make_record(notebook="15_gptq_bits", run="g-bits4", profile="full", metrics=_metrics(),
                              params={"recipe": [{"method": "gptq", "bits": 4, "group_size": 128}]},
                              family="quantization", sweep={"parent": "g", "axes": {"bits": 4}})
    assert rec["layout"] == records.LAYOUT and not records.is_stale(rec)
    assert rec["what"]["family"] == "quantization" and rec["what"]["bits"] == 4.0
    assert rec["what"]["sweep"] == {"parent": "g", "axes": {"bits": 4}}
    assert records.is_stale({**rec, "layout": 1}) and records.is_stale({k: v for k, v in rec.items() if k != "layout"})
