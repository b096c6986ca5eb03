"""`make reproduce` is resumable: done runs are skipped, a deleted record is redone alone, a killed run leaves no
record. The notebooks are mocked (a fake execute) or replaced by a tiny notebook run by papermill."""

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from studylib import pipeline
from studylib.core import records
from studylib.core.params import NOTEBOOK_DIR

REPO = Path(__file__).resolve().parent.parent
PARAMS = sorted(str(p) for p in (REPO / "params").glob("*.yaml"))


@pytest.fixture
def fake_execute(monkeypatch):
    """pipeline.execute replaced by one that writes the record a notebook would (its params) and the files it
    makes for other runs, and counts."""
    calls = []

    def execute(job, results=None, **kwargs):
        calls.append(f"{job.notebook}/{job.run}")
        # a sweep writes one record per setting, with that setting's full params
        for run, params in pipeline.expected_records(job, results) or [(job.run, pipeline.normalized_params(job))]:
            rec = records.make_record(notebook=job.notebook, run=run, params=params,
                                      profile=job.parameters["profile"], metrics={})
            records.write_record(rec, results)
        for path in pipeline.required_outputs(job, results):  # files made for other runs (30's KD pairs)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(b"")

    monkeypatch.setattr(pipeline, "execute", execute)
    return calls


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_done_runs_are_skipped_and_a_deleted_record_is_redone_alone(tmp_path, fake_execute, profile, capsys):
    if not PARAMS:
        pytest.skip("no params files")
    results = tmp_path / "results"
    args = ["--profile", profile, "--results", str(results), *PARAMS]
    jobs = [pipeline.load_job(p, profile) for p in PARAMS]
    everything = sorted(f"{j.notebook}/{j.run}" for j in jobs)

    assert pipeline.main(args) == 0
    assert sorted(fake_execute) == everything
    assert (results / f"summary-{profile}.csv").is_file()

    fake_execute.clear()
    assert pipeline.main(args) == 0
    assert fake_execute == []  # every record exists with the same params: nothing runs
    assert capsys.readouterr().out.count("[skip]") >= len(jobs)

    victim = jobs[len(jobs) // 2]
    records.record_path(victim.notebook, victim.run, results).unlink()
    assert pipeline.main(args) == 0
    assert fake_execute == [f"{victim.notebook}/{victim.run}"]  # only the deleted one is redone

    # a sweep whose one setting's record is deleted is redone (and only it); a complete sweep is skipped
    sweep = next(j for j in jobs if j.notebook == "15_gptq_bits")
    (setting, _), *_ = pipeline.expected_records(sweep, results)
    records.record_path(sweep.notebook, setting, results).unlink()
    fake_execute.clear()
    assert pipeline.main(args) == 0
    assert fake_execute == [f"{sweep.notebook}/{sweep.run}"]


def test_a_record_with_other_params_is_redone(tmp_path, fake_execute):
    if not PARAMS:
        pytest.skip("no params files")
    results = tmp_path / "results"
    args = ["--profile", "smoke", "--results", str(results), PARAMS[0]]
    pipeline.main(args)
    job = pipeline.load_job(PARAMS[0], "smoke")
    path = records.record_path(job.notebook, job.run, results)
    rec = json.loads(path.read_text())
    rec["params"]["profile"] = "full"  # made by the other profile: not this run
    path.write_text(json.dumps(rec))
    fake_execute.clear()
    pipeline.main(args)
    assert fake_execute == [f"{job.notebook}/{job.run}"]


# ----------------------------------------------------------------- the record is a notebook's last act


def _write_calls(source: str) -> list[ast.Call]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "write_record"]


def _in_loop(source: str) -> bool:
    tree = ast.parse(source)
    return any(isinstance(node, (ast.For, ast.While)) and _write_calls(ast.unparse(node)) for node in ast.walk(tree))


@pytest.mark.parametrize("notebook", sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
def test_every_notebook_writes_its_record_last(notebook):
    """Records are written atomically (temporary file + rename) and only after everything else has run: in the
    last code cell, after the asserts. A sweep notebook writes one complete record per setting inside its loop."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{notebook}.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    writers = [i for i, src in enumerate(code) if _write_calls(src)]
    # a notebook may delegate the whole sweep to a studylib function that writes one record per setting
    if not writers:
        assert any("sweep" in src or "run_sweep" in src or ".run(" in src for src in code), \
            f"{notebook} writes no record"
        return
    for i in writers:
        if _in_loop(code[i]):
            continue  # a sweep: every setting's record is complete when written
        assert i == len(code) - 1, f"{notebook}: write_record in code cell {i}, not the last ({len(code) - 1})"


_TINY = {
    "parameters": "run_name = 'r'\nresults_dir = None\nmarker = None\nmode = 'ok'\n",
    "cells": [
        "from studylib import records\n"
        "params = {'run_name': run_name, 'profile': 'smoke', 'mode': mode, 'marker': marker}\n"
        "rec = records.make_record(notebook='99_tiny', run=run_name, params=params, profile='smoke', metrics={})",
        "import os, pathlib, time\n"
        "pathlib.Path(marker).write_text(str(os.getpid()))\n"
        "if mode == 'raise':\n    raise RuntimeError('failed halfway')\n"
        "if mode == 'hang':\n    time.sleep(300)",
        "records.write_record(rec, results_dir)",
    ],
}


@pytest.fixture
def tiny_notebook(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(_TINY["parameters"])
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(src) for src in _TINY["cells"]]
    folder = tmp_path / "notebooks"
    folder.mkdir()
    nbformat.write(nb, folder / "99_tiny.ipynb")
    return folder


def _job(mode, marker):
    return pipeline.Job(Path("tiny.yaml"), "99_tiny", {"run_name": "r", "profile": "smoke", "mode": mode,
                                                        "marker": str(marker)})


def test_a_run_failing_halfway_leaves_no_record_and_is_redone(tmp_path, tiny_notebook):
    results, marker = tmp_path / "results", tmp_path / "started"
    job = _job("raise", marker)
    with pytest.raises(pm.PapermillExecutionError, match="failed halfway"):
        pipeline.execute(job, results, executed_dir=tmp_path / "executed", notebooks=tiny_notebook)
    assert marker.is_file()
    assert not records.record_path("99_tiny", "r", results).exists() and not pipeline.is_done(job, results)
    job = _job("ok", marker)
    assert not pipeline.is_done(job, results)
    pipeline.execute(job, results, executed_dir=tmp_path / "executed", notebooks=tiny_notebook)
    assert pipeline.is_done(job, results)  # redone, and now recorded with these params


def test_a_run_killed_halfway_leaves_no_record(tmp_path, tiny_notebook):
    results, marker = tmp_path / "results", tmp_path / "started"
    script = textwrap.dedent(f"""
        from pathlib import Path
        from studylib import pipeline
        job = pipeline.Job(Path("tiny.yaml"), "99_tiny", {{"run_name": "r", "profile": "smoke", "mode": "hang",
                                                           "marker": {str(marker)!r}}})
        pipeline.execute(job, Path({str(results)!r}), executed_dir=Path({str(tmp_path / 'executed')!r}),
                         notebooks=Path({str(tiny_notebook)!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), "the tiny notebook never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner: the process group this test started
        proc.wait(timeout=30)
    # the kernel runs in its own session; without its client it executes no further cell (so never the record
    # cell) and ipykernel's parent poller ends it; make sure it is gone, by its own pid
    kernel = int(marker.read_text())
    deadline = time.time() + 15
    while _alive(kernel) and time.time() < deadline:
        time.sleep(0.2)
    if _alive(kernel):
        os.kill(kernel, signal.SIGKILL)
    runs = results / "runs"
    assert not records.record_path("99_tiny", "r", results).exists()
    assert not runs.exists() or not any(runs.rglob("*.json"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of nobody we wait for counts as gone
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return True
