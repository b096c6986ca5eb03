import ast
import dataclasses
import json

import papermill as pm
import pytest

from studylib import pipeline
from studylib.core import records
from studylib.core.params import NOTEBOOK_DIR, ParamsError, params_class

NOTEBOOKS = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_parameters_cell_matches_its_dataclass(notebook):
    """The parameters cell declares exactly the dataclass's fields, with the same (smoke) defaults."""
    cls = params_class(notebook)
    declared = pm.inspect_notebook(str(pipeline.NOTEBOOK_DIR / f"{notebook}.ipynb"))
    assert list(declared) == cls.names()
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        assert ast.literal_eval(declared[f.name]["default"]) == default, f.name
    assert cls().profile == "smoke"


def test_every_params_file_is_valid():
    files = sorted(pipeline.NOTEBOOK_DIR.parent.glob("params/*.yaml"))
    assert files
    for path in files:
        job = pipeline.load_job(path)
        assert job.parameters["profile"] == "full"
        assert path.stem.endswith(job.run), f"{path.name}: file name should end with the run name {job.run}"


def _write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_params_file_errors_are_clear(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        pipeline.load_job(tmp_path / "missing.yaml")
    with pytest.raises(ParamsError, match="does not declare lr"):
        pipeline.load_job(_write(tmp_path, "notebook: 00_baseline\nparameters: {run_name: r, lr: 1}\n"))
    with pytest.raises(ParamsError, match="n_test"):
        pipeline.load_job(_write(tmp_path, "notebook: 00_baseline\nparameters: {run_name: r, n_test: -1}\n"))
    with pytest.raises(ParamsError, match="not found"):
        pipeline.load_job(_write(tmp_path, "notebook: 42_nothing\nparameters: {run_name: r}\n"))
    with pytest.raises(ParamsError, match="run_name"):
        pipeline.load_job(_write(tmp_path, "notebook: 00_baseline\nparameters: {n_test: 2}\n"))
    with pytest.raises(ParamsError, match="YAML"):
        pipeline.load_job(_write(tmp_path, "notebook: [unclosed\n"))


def test_smoke_profile_keeps_only_the_run_name(tmp_path):
    job = pipeline.load_job(_write(tmp_path, "notebook: 00_baseline\nparameters: {run_name: r, model_id: gemma-3-270m}\n"),
                            profile="smoke")
    assert job.parameters == {"run_name": "r", "profile": "smoke"}


def test_a_run_is_done_only_when_its_record_matches(tmp_path):
    job = pipeline.load_job(_write(tmp_path, "notebook: 00_baseline\nparameters: {run_name: r, n_test: 3}\n"))
    results = tmp_path / "results"
    assert not pipeline.is_done(job, results)
    rec = records.make_record(notebook="00_baseline", run="r", profile="full", metrics={},
                              params={"run_name": "r", "n_test": 3, "profile": "full", "directions": ["de-en"]})
    path = records.write_record(rec, results)
    assert pipeline.is_done(job, results)
    rec["params"]["n_test"] = 4  # the params file changed since: redo
    path.write_text(json.dumps(rec))
    assert not pipeline.is_done(job, results)
    path.write_text("{ half a record")  # unreadable: redo
    assert not pipeline.is_done(job, results)


def test_main_refuses_bad_files_before_running_anything(tmp_path, capsys):
    bad = _write(tmp_path, "notebook: 00_baseline\nparameters: {run_name: r, shots: 9}\n")
    assert pipeline.main([str(bad)]) == 2
    assert "shots" in capsys.readouterr().err


PARAMS_DIR = NOTEBOOK_DIR.parent / "params"


def test_sweeps_split_into_one_job_per_setting_with_the_same_records(tmp_path):
    """--jobs > 1 runs a sweep's settings side by side; each share expects exactly its setting's record."""
    ood = pipeline.load_job(PARAMS_DIR / "33_ood_size_middle8-nf4-qlora.yaml")
    parts = pipeline.split_job(ood)
    sizes = ood.parameters["ood_sizes"]
    assert [p.overrides for p in parts] == [{"ood_sizes": [n]} for n in sizes]
    assert [p.label for p in parts] == [f"{ood.run}[{n}]" for n in sizes]
    assert [p.file_stem for p in parts] == [f"{ood.run}.{n}" for n in sizes]
    whole = pipeline.expected_records(ood, tmp_path)
    assert [r for p in parts for r in pipeline.expected_records(p, tmp_path)] == whole
    depth = pipeline.load_job(PARAMS_DIR / "27_prune_depth_teacher-lora.yaml")
    assert [p.overrides for p in pipeline.split_job(depth)] == [{"strategies": ["iterative"]}, {"strategies": ["middle"]}]
    calib = pipeline.load_job(next(PARAMS_DIR.glob("16_calibration_size_*gptq*.yaml")))
    assert len(pipeline.split_job(calib)) == len(calib.parameters["values"]) > 1
    single = pipeline.load_job(next(PARAMS_DIR.glob("12_gptq_*.yaml")))
    assert pipeline.split_job(single) == [single]
    # a share as the child process rebuilds it from --overrides is the same job, checked like a file
    again = pipeline.share(ood, parts[1].overrides)
    assert again.parameters == parts[1].parameters and again.label == parts[1].label
    with pytest.raises(ParamsError, match="ood_sizes"):
        pipeline.share(ood, {"ood_sizes": [-1]})


def test_main_splits_sweeps_only_for_parallel_runs(tmp_path, capsys):
    path = str(PARAMS_DIR / "33_ood_size_middle8-nf4-qlora.yaml")
    results = str(tmp_path / "results")
    assert pipeline.main(["--dry-run", "--results", results, path]) == 0
    assert capsys.readouterr().out.count("33_ood_size /") == 1
    assert pipeline.main(["--dry-run", "--jobs", "3", "--results", results, path]) == 0
    assert capsys.readouterr().out.count("33_ood_size /") == 5
    assert pipeline.main(["--dry-run", "--results", results, "--overrides", '{"ood_sizes": [5000]}', path]) == 0
    assert "middle8-nf4-qlora[5000]" in capsys.readouterr().out


def test_kd_data_is_done_only_with_its_pairs(tmp_path):
    """30_kd_data feeds the students: its record without the pairs file (left on another machine) means redo."""
    job = pipeline.load_job(PARAMS_DIR / "30_kd_data_teacher-lora-2k.yaml")
    results = tmp_path / "results"
    params = pipeline.normalized_params(job)
    records.write_record(records.make_record(notebook="30_kd_data", run=job.run, profile="full", metrics={},
                                             params=params), results)
    assert not pipeline.is_done(job, results)
    pairs = results / "artifacts" / "30_kd_data" / f"{job.run}.jsonl.gz"
    assert pipeline.required_outputs(job, results) == [pairs]
    pairs.parent.mkdir(parents=True)
    pairs.write_bytes(b"")
    assert pipeline.is_done(job, results)


def test_paths_under_results_follow_the_results_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    name = "results/artifacts/30_kd_data/x.jsonl.gz"
    moved = elsewhere / "artifacts" / "30_kd_data" / "x.jsonl.gz"
    assert records.in_results(name, elsewhere) == moved  # nowhere yet: under the root (where a run writes it)
    (tmp_path / "results/artifacts/30_kd_data").mkdir(parents=True)
    (tmp_path / name).write_bytes(b"")
    assert records.in_results(name, elsewhere) == records.Path(name)  # only the repository's copy: that one
    (elsewhere / "artifacts" / "30_kd_data").mkdir(parents=True)
    (elsewhere / "artifacts" / "30_kd_data" / "x.jsonl.gz").write_bytes(b"")
    assert records.in_results(name, elsewhere) == elsewhere / "artifacts" / "30_kd_data" / "x.jsonl.gz"
    assert records.in_results("data/x.jsonl", elsewhere) == records.Path("data/x.jsonl")
    assert records.in_results(tmp_path / name, elsewhere) == tmp_path / name


def test_force_reaches_the_sweeps_which_then_rerun_their_recorded_settings(tmp_path, monkeypatch):
    """`pipeline --force` re-runs a sweep's recorded settings too (they used to be skipped by the sweep itself)."""
    import os

    from studylib.runs import sweeps
    from studylib.runs.quantization import GPTQBitsParams

    monkeypatch.setenv(records.FORCE_ENV, "stale")
    path = str(PARAMS_DIR / "33_ood_size_middle8-nf4-qlora.yaml")
    results = str(tmp_path / "results")
    assert pipeline.main(["--dry-run", "--results", results, path]) == 0
    assert os.environ[records.FORCE_ENV] == "0" and not records.rerun_requested()  # the user's call decides
    assert pipeline.main(["--dry-run", "--force", "--results", results, path]) == 0
    assert os.environ[records.FORCE_ENV] == "1" and records.rerun_requested()
    # a child launched by run_parallel (always --force --no-summary) keeps what its parent was asked
    monkeypatch.setenv(records.FORCE_ENV, "0")
    assert pipeline.main(["--dry-run", "--force", "--no-summary", "--results", results, path]) == 0
    assert os.environ[records.FORCE_ENV] == "0"

    cfg = GPTQBitsParams(run_name="t", results_dir=str(tmp_path))
    recorded = sweeps.plan(cfg, "15_gptq_bits")[2]
    records.write_record(records.make_record(notebook="15_gptq_bits", run=recorded.run, profile="smoke", metrics={},
                                             params=recorded.cfg.as_dict()), tmp_path)
    assert [s.done for s in sweeps.plan(cfg, "15_gptq_bits")] == [False, False, True, False]
    assert records.resumable("15_gptq_bits", recorded.run, recorded.cfg.as_dict(), tmp_path)
    monkeypatch.setenv(records.FORCE_ENV, "1")
    assert not any(s.done for s in sweeps.plan(cfg, "15_gptq_bits"))
    assert not records.resumable("15_gptq_bits", recorded.run, recorded.cfg.as_dict(), tmp_path)
    assert sweeps.is_done("15_gptq_bits", recorded.cfg)  # the check after a run is not affected
