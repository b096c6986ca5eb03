"""The workflow: a job per params file or sweep setting, done when its record's params match, edges from the files
runs name, and Snakemake running exactly what is not done (a deleted setting's record: that setting alone)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from studylib import workflow
from studylib.core import records
from studylib.runs.params import ParamsError

REPO = Path(__file__).resolve().parent.parent
PARAMS = sorted(str(p) for p in (REPO / "params").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _data(data_root, monkeypatch):
    """Runs that would start check their data folder first: the study's data, as the Makefile gives it."""
    monkeypatch.setenv("STUDYLIB_DATA", str(data_root))


def _copy_params(tmp_path, *names, edit=None) -> list[str]:
    out = []
    for name in names:
        text = (REPO / "params" / name).read_text()
        (tmp_path / name).write_text(edit(text) if edit and name == names[0] else text)
        out.append(str(tmp_path / name))
    return out


def test_a_fresh_clone_recomputes_nothing():
    """Every committed record matches its params file: the full profile runs nothing that is recorded. A job with
    no record yet (a run declared for the next GPU session: a 7B benchmark format, an engines check, a control) is
    GPU-scale: held back on a machine without a GPU, listed with its estimate; so is a done run whose outputs git does
    not keep (the KD pairs) when such a job needs them. No run is redone for differing params or a rerun upstream."""
    jobs = workflow.plan(PARAMS, "full", REPO / "results")
    assert jobs and all(not j.run or j.why == "no record" or j.why.endswith("needs it") for j in jobs), \
        [(j.key, j.why) for j in jobs if j.run]
    held = workflow.held_back(jobs, "full", gpu=False, allow_cpu=False)
    assert held == [j for j in jobs if j.run]
    text = workflow.describe(jobs, held)
    assert "done (their records match)" in text and (not held or "about" in text and "ALLOW_CPU=1" in text)


def test_sweeps_expand_into_one_job_per_setting():
    jobs = {j.key: j for j in workflow.load_jobs(PARAMS, "full", REPO / "results")}
    bits = sorted(k for k in jobs if k.startswith("15_gptq_bits/"))
    assert bits == [f"15_gptq_bits/teacher-lora-gptq-g128-bits{b}" for b in (2, 3, 4, 8)]
    assert jobs["15_gptq_bits/teacher-lora-gptq-g128-bits3"].cfg.recipe[0]["bits"] == 3  # the axis is the step's
    depth = [k for k in jobs if k.startswith("27_prune_depth/")]
    assert len(depth) == 16 and "27_prune_depth/teacher-lora-iterative-d4-before" in depth
    before = jobs["27_prune_depth/teacher-lora-middle-d2-before"].cfg
    assert before.recovery == "none" and before.sweep == {
        "parent": "teacher-lora", "axes": {"strategy": "middle", "depth": 2, "stage": "before"}}
    smoke = {j.key for j in workflow.load_jobs(PARAMS, "smoke", "build/x")}
    assert "15_gptq_bits/teacher-lora-gptq-g128-bits2" in smoke and "15_gptq_bits/teacher-lora-gptq-g128-bits8" not in smoke


def test_changed_params_rerun_the_run_and_what_reads_it(tmp_path):
    teacher, int8, kd, model_a = _copy_params(
        tmp_path, "01_teacher_gemma3-270m-lora.yaml", "10_bnb_int8_teacher-lora-int8.yaml",
        "30_kd_data_teacher-lora-2k.yaml", "31_model_a_teacher-nf4-qlora.yaml",
        edit=lambda t: t.replace("n_test: 200", "n_test: 100"))
    jobs = {j.key: j for j in workflow.plan([teacher, int8, kd, model_a], "full", REPO / "results")}
    assert jobs["01_teacher/gemma3-270m-lora"].why == "params differ: n_test is 200 in the record, 100 now"
    assert jobs["10_bnb_int8/teacher-lora-int8"].why == "01_teacher/gemma3-270m-lora runs before it"
    assert jobs["31_model_a/teacher-nf4-qlora"].run and jobs["30_kd_data/teacher-lora-2k"].run
    assert jobs["30_kd_data/teacher-lora-2k"].upstream == [jobs["01_teacher/gemma3-270m-lora"]]
    assert sorted(u.key for u in jobs["31_model_a/teacher-nf4-qlora"].upstream) == [
        "01_teacher/gemma3-270m-lora", "30_kd_data/teacher-lora-2k"]


def test_files_a_done_run_made_are_remade_only_when_a_run_needs_them(tmp_path):
    """git keeps 30_kd_data's record but not its pairs: the students are done, so nothing runs; a student that
    must run has 30 remake its pairs, and 30 running for that reruns no other done student."""
    results = tmp_path / "results"
    shutil.copytree(REPO / "results" / "runs", results / "runs")
    files = [str(REPO / "params" / n) for n in ("30_kd_data_teacher-lora-2k.yaml", "32_model_b_middle8-nf4-qlora.yaml")]
    files += _copy_params(tmp_path, "31_model_a_teacher-nf4-qlora.yaml", edit=lambda t: t.replace("qlora_r: 64", "qlora_r: 32"))
    kd_pairs = results / "artifacts" / "30_kd_data" / "teacher-lora-2k.jsonl.gz"
    assert not kd_pairs.exists()
    jobs = {j.key: j for j in workflow.plan(files[:2], "full", results)}
    assert not any(j.run for j in jobs.values())
    jobs = {j.key: j for j in workflow.plan(files, "full", results)}
    assert jobs["31_model_a/teacher-nf4-qlora"].why.startswith("params differ: qlora_r")
    assert jobs["30_kd_data/teacher-lora-2k"].run and "needs it" in jobs["30_kd_data/teacher-lora-2k"].why
    assert jobs["30_kd_data/teacher-lora-2k"].for_files and not jobs["31_model_a/teacher-nf4-qlora"].for_files
    assert not jobs["32_model_b/middle8-nf4-qlora"].run


def test_a_run_for_its_files_gets_its_record_back_before_the_notebook_starts(tmp_path, monkeypatch):
    """Snakemake deletes a job's record before running it; a job that runs only for its files (the full teacher's
    weights, which git does not keep) has the Snakefile's copy put back, so its notebook can keep it."""
    record = records.record_path("01_teacher", "t", tmp_path / "results")
    kept = tmp_path / "t.kept.json"
    kept.write_text(json.dumps({"notebook": "01_teacher", "run": "t", "params": {}}))
    seen = []
    monkeypatch.setattr(workflow, "execute", lambda *a, **k: seen.append(record.exists()))
    argv = ["run", "01_teacher", "p.yaml", "{}", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "o")]
    assert workflow.main(argv) == 0 and seen == [False]  # no copy named: nothing put back
    assert workflow.main(argv + ["--kept", str(kept)]) == 0 and seen[-1] is True
    assert json.loads(record.read_text())["run"] == "t"
    record.write_text("{}")
    assert workflow.restore(str(kept), tmp_path / "results") is None and record.read_text() == "{}"  # never over one


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("notebook: 12_gptq\nparameters: {run_name: r}\nextras: 1\n", "unknown top-level key 'extras'"),
    ("notebook: 99_none\nparameters: {run_name: r}\n", "unknown notebook '99_none'"),
    ("notebook: 12_gptq\nparameters: {model_id: tiny-gemma3}\n", "sets run_name"),
    ("notebook: 12_gptq\nparameters: {run_name: r, n_tset: 3}\n", "'n_tset' is not a parameter of 12_gptq; did you mean 'n_test'"),
    ("notebook: 12_gptq\nparameters: {run_name: r, recipe: [{method: gptq, bits: 5}]}\n", "bits must be one of"),
    ("notebook: 15_gptq_bits\nparameters: {run_name: r}\nsweep: {bits: [4, 5]}\n", "bits must be one of"),
    ("notebook: 15_gptq_bits\nparameters: {run_name: r}\nsweep: {bits: [4, 4]}\n", "sweep.bits repeats a value"),
    ("notebook: 15_gptq_bits\nparameters: {run_name: r}\nsweep: {alpha: [0.5]}\n", "sweep axis 'alpha' is neither"),
    ("notebook: 15_gptq_bits\nparameters: {run_name: r}\nsweep: {bits: 4}\n", "non-empty list"),
])
def test_a_bad_params_file_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=message) as err:
        workflow.load_jobs([path], "full", tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_missing_data_folder_fails_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYLIB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ParamsError, match="nowhere") as err:
        workflow.plan([str(REPO / "params" / "00_baseline_gemma3-270m-3shot.yaml")], "smoke", tmp_path)
    assert "00_baseline_gemma3-270m-3shot.yaml" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------ Snakemake, with a tiny notebook

_PARAMS_CELL = "params_file = None\nsetting = {}\nprofile = None\nresults_dir = None\n"
_BODY = [
    "import os\nfrom pathlib import Path\nfrom studylib.core import records\n"
    "from studylib.runs.quantization import GPTQBitsParams\n"
    "cfg = GPTQBitsParams.load(params_file, setting, profile=profile, results_dir=results_dir)\n"
    "Path(os.environ['TINY_RUNS_LOG']).open('a').write(cfg.run_name + '\\n')\n"
    "record = records.make_record(notebook='15_gptq_bits', run=cfg.run_name, params=cfg.as_dict(),\n"
    "                             profile=cfg.profile, metrics={}, **cfg.identity())",
    "if os.environ.get('TINY_FAIL') == cfg.run_name:\n    raise RuntimeError('failed halfway')\n"
    "if os.environ.get('TINY_HANG') == cfg.run_name:\n    import time; time.sleep(300)",
    "records.write_record(record, cfg.results_dir)",
]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A notebook that loads a setting of 15_gptq_bits' params and writes its record (no model), a params file
    sweeping bits over 2 and 4, and the environment its runs log to."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(_PARAMS_CELL)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(src) for src in _BODY]
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "15_gptq_bits.ipynb")
    (tmp_path / "sweep.yaml").write_text(
        "notebook: 15_gptq_bits\nparameters: {run_name: t, model_id: tiny-gemma3, dtype: float32, n_test: 2}\n"
        "sweep: {bits: [2, 4]}\n")
    log = tmp_path / "runs.log"
    monkeypatch.setenv("TINY_RUNS_LOG", str(log))
    return tmp_path


def _snakemake(root: Path, *extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root), "--cores", "1",
           "--config", "profile=full", f"results={root / 'results'}", f"params={root / 'sweep.yaml'}",
           f"notebooks={root / 'notebooks'}", "allow_cpu=1", "gpu=0", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)


def _ran(root: Path) -> list[str]:
    log = root / "runs.log"
    return log.read_text().split() if log.exists() else []


def test_snakemake_reruns_only_the_setting_whose_record_was_deleted(tiny):
    first = _snakemake(tiny)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(_ran(tiny)) == ["t-bits2", "t-bits4"]
    record = records.record_path("15_gptq_bits", "t-bits2", tiny / "results")
    assert json.loads(record.read_text())["what"]["sweep"] == {"parent": "t", "axes": {"bits": 2}}
    assert oct(record.stat().st_mode & 0o777) == "0o644"

    again = _snakemake(tiny)
    assert again.returncode == 0 and len(_ran(tiny)) == 2  # every record matches: nothing runs

    record.unlink()
    dry = _snakemake(tiny, "--dry-run")
    assert dry.returncode == 0 and "run   15_gptq_bits/t-bits2: no record" in dry.stderr and len(_ran(tiny)) == 2
    redo = _snakemake(tiny)
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert _ran(tiny)[2:] == ["t-bits2"]  # that setting alone

    sweep = tiny / "sweep.yaml"
    sweep.write_text(sweep.read_text().replace("n_test: 2", "n_test: 3"))
    changed = _snakemake(tiny)
    assert changed.returncode == 0 and sorted(_ran(tiny)[3:]) == ["t-bits2", "t-bits4"]  # params changed: both


def test_a_run_failing_halfway_leaves_no_record_and_is_redone(tiny, monkeypatch):
    monkeypatch.setenv("TINY_FAIL", "t-bits4")
    failed = _snakemake(tiny)
    assert failed.returncode != 0 and "failed halfway" in (failed.stdout + failed.stderr)
    assert records.record_path("15_gptq_bits", "t-bits2", tiny / "results").exists()
    assert not records.record_path("15_gptq_bits", "t-bits4", tiny / "results").exists()
    monkeypatch.delenv("TINY_FAIL")
    assert _snakemake(tiny).returncode == 0 and _ran(tiny)[-1] == "t-bits4"


def test_a_run_killed_halfway_leaves_no_record(tiny):
    out = tiny / "executed.ipynb"
    cmd = [sys.executable, "-m", "studylib.workflow", "run", "15_gptq_bits", str(tiny / "sweep.yaml"), '{"bits": 2}',
           "--results", str(tiny / "results"), "--out", str(out), "--notebooks", str(tiny / "notebooks")]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, TINY_HANG="t-bits2"))
    try:
        deadline = time.time() + 120
        while not _ran(tiny) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _ran(tiny) == ["t-bits2"], "the tiny notebook never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(1)
    assert not records.record_path("15_gptq_bits", "t-bits2", tiny / "results").exists()


# ------------------------------------------------------------------------------ the notebooks

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_is_registered_and_sets_only_what_papermill_passes(path):
    from studylib.runs import params_class

    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    names = [line.split("=")[0].strip() for line in params[0].source.splitlines()
             if line and not line.startswith("#")]
    assert names == ["params_file", "setting", "profile", "results_dir"]
    cls = params_class(path.stem)
    assert cls.NOTEBOOK == path.stem and f"{cls.__name__}.load(params_file, setting" in "\n".join(
        c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_writes_its_record_after_its_checks(path):
    code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    writes = [i for i, src in enumerate(code) if "write_record(" in src]
    assert len(writes) == 1, path.stem
    checks = [i for i, src in enumerate(code) if "assert " in src or "check_record(" in src]
    assert not checks or max(checks) <= writes[0]
