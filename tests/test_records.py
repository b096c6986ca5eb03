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


def test_summary_table_from_records(tmp_path):
    for run in ("a", "b"):
        rec = records.make_record(notebook="00_baseline", run=run, params={"model_id": run}, profile="full",
                                  metrics=_metrics(), efficiency={"params": 10, "storage_gb": 0.1})
        records.write_record(rec, tmp_path)
    table = records.summary_table(records.load_records(tmp_path))
    assert len(table) == 2 * (3 + 2)  # 3 directions + 2 averages per run
    row = table[(table.run == "b") & (table.direction == "de-en")].iloc[0]
    assert row["chrf++"] == 48.0 and row["params"] == 10
    out = records.write_summary(tmp_path, "full")
    assert out.name == "summary-full.csv" and out.read_text().count("\n") == len(table) + 1
    assert records.load_records(tmp_path, profile="smoke") == []


def test_results_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDYLIB_RESULTS", str(tmp_path))
    assert records.results_dir() == tmp_path
    assert records.results_dir("x") == type(tmp_path)("x")


def test_errata_withdraw_fields_from_the_summary_and_the_main_table(tmp_path):
    """A measurement found wrong after the run is withdrawn (‡), not edited; bad errata entries are refused."""
    import pytest

    from studylib.report import tables

    rec = records.make_record(notebook="12_gptq", run="w4", params={"run_name": "w4"}, profile="full",
                              metrics={"de-en": {"bleu": 10.0, "chrf": 40.0, "chrf++": 38.0, "n": 2}},
                              efficiency={"params": 181e6, "peak_memory_gb": 1.37, "storage_gb": 0.39,
                                          "time_per_token_ms": 26.1})
    records.write_record(rec, tmp_path)
    sha = rec["environment"]["git_sha"] or "0000000"
    rec["environment"]["git_sha"] = sha
    records.write_record(rec, tmp_path)
    (tmp_path / "errata.yaml").write_text(f"- record: 12_gptq/w4\n  made_at: {sha[:7]}\n"
                                          "  fields: [params, peak_memory_gb]\n  reason: model kept alive\n")
    summary = records.summary_table(records.load_records(tmp_path))
    assert summary["peak_memory_gb"].isna().all() and summary["params"].isna().all()
    assert (summary["storage_gb"] == 0.39).all() and (summary["errata"] == "model kept alive").all()
    _, md = tables.main_table(summary, reference="01_teacher/none")
    assert "‡ w4: withdrawn (model kept alive)." in md and "1.37" not in md and "0.39" in md
    (tmp_path / "errata.yaml").write_text(f"- record: 12_gptq/w4\n  made_at: {sha[:7]}\n  fields: [bleu]\n  reason: x\n")
    with pytest.raises(ValueError, match="fields must be some of"):
        records.load_records(tmp_path)
    (tmp_path / "errata.yaml").write_text("- record: 12_gptq/gone\n  made_at: 1234567\n  fields: [params]\n  reason: x\n")
    with pytest.raises(ValueError, match="do not exist"):
        records.load_records(tmp_path)
    # the run redone (another sha): the entry is stale and must go
    (tmp_path / "errata.yaml").write_text("- record: 12_gptq/w4\n  made_at: fedcba9\n  fields: [params]\n  reason: x\n")
    with pytest.raises(ValueError, match="redone"):
        records.load_records(tmp_path)


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
    assert [r["outputs"]["de-en"]["hyp"] for r in records.load_records(tmp_path)] == [["Hi", "World"], ["Hey", "Earth"]]


def test_environment_says_how_busy_the_host_was(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    host = records.environment()["host"]
    assert host["cpus"] >= 1 and host["cuda_visible_devices"] == "2"
    assert host["load_average_1_5_15_min"] is None or len(host["load_average_1_5_15_min"]) == 3
