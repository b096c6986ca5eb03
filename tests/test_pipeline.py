import ast
import dataclasses
import json

import papermill as pm
import pytest

from studylib import pipeline, records
from studylib.params import NOTEBOOK_DIR, ParamsError, params_class

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
