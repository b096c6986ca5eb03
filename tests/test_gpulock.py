"""Concurrent runs share the GPU for translation but time alone: the lock's guarantees, between processes."""

import subprocess
import sys
import textwrap
import time

import pytest

from studylib.core import gpulock
from studylib import pipeline


def test_without_the_environment_variable_both_are_no_ops(monkeypatch):
    monkeypatch.delenv(gpulock.ENV, raising=False)
    with gpulock.shared(), gpulock.shared():
        pass
    with gpulock.exclusive():
        pass
    assert gpulock.describe() is None


def test_nesting_rules(monkeypatch, tmp_path):
    monkeypatch.setenv(gpulock.ENV, str(tmp_path))
    with gpulock.exclusive():
        with gpulock.shared(), gpulock.exclusive():  # already alone: no-ops, no self-deadlock
            pass
    with gpulock.shared():
        with gpulock.shared():
            pass
        with pytest.raises(RuntimeError, match="holds gpulock.shared"):
            with gpulock.exclusive():
                pass
    assert gpulock.describe()["exclusive"]


def _holder(lock_dir, mode, log, seconds):
    """A process that takes the lock, logs start/end around ``seconds`` of work."""
    script = textwrap.dedent(f"""
        import os, time
        os.environ[{gpulock.ENV!r}] = {str(lock_dir)!r}
        from studylib.core import gpulock
        with getattr(gpulock, {mode!r})():
            with open({str(log)!r}, "a") as f: f.write("{mode}-start\\n")
            time.sleep({seconds})
            with open({str(log)!r}, "a") as f: f.write("{mode}-end\\n")
    """)
    return subprocess.Popen([sys.executable, "-c", script])


def _wait_for(log, line, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and line in log.read_text().split():
            return
        time.sleep(0.05)
    raise AssertionError(f"{line} never appeared")


def test_exclusive_waits_for_shared_holders_and_keeps_new_ones_out(tmp_path):
    log = tmp_path / "log"
    first = _holder(tmp_path / "lock", "shared", log, 1.0)
    _wait_for(log, "shared-start")
    writer = _holder(tmp_path / "lock", "exclusive", log, 1.0)
    time.sleep(0.3)  # the writer now holds the gate and waits for the GPU
    late = _holder(tmp_path / "lock", "shared", log, 0.1)
    for proc in (first, writer, late):
        assert proc.wait(timeout=60) == 0
    lines = log.read_text().split()
    # the writer starts only after the first reader ended, and the late reader only after the writer ended
    assert lines.index("exclusive-start") > lines.index("shared-end")
    assert lines.index("exclusive-end") < len(lines) - 2
    assert lines[-2:] == ["shared-start", "shared-end"]


def _job(tmp_path, notebook, run, **parameters):
    return pipeline.Job(tmp_path / f"{notebook}_{run}.yaml", notebook, {"run_name": run, **parameters})


def test_parallel_runs_respect_references_and_failures(tmp_path):
    order = tmp_path / "order"
    teacher = _job(tmp_path, "01_teacher", "t")
    student = _job(tmp_path, "31_model_a", "a", teacher_record="01_teacher/t.json")
    broken = _job(tmp_path, "30_kd_data", "kd")
    needs_broken = _job(tmp_path, "32_model_b", "b", kd_data="results/runs/30_kd_data/kd.jsonl")
    other = _job(tmp_path, "10_bnb_int8", "q")
    assert pipeline.refers_to(student, teacher) and not pipeline.refers_to(teacher, student)

    def command(job):
        rc = 1 if job is broken else 0
        code = (f"import time; time.sleep(0.2 if {job.run!r} == 't' else 0)\n"
                f"open({str(order)!r}, 'a').write({job.run!r} + '\\n'); raise SystemExit({rc})")
        return [sys.executable, "-c", code]

    failed = pipeline.run_parallel([student, teacher, broken, needs_broken, other], tmp_path / "results", "smoke",
                                   jobs=3, log_dir=tmp_path / "logs", command=command)
    ran = order.read_text().split()
    assert failed == 2  # the broken run and the one that needs it
    assert "b" not in ran and set(ran) == {"t", "a", "kd", "q"}
    assert ran.index("t") < ran.index("a")  # the student waited for its teacher
    assert (tmp_path / "logs" / "01_teacher" / "t.log").is_file()


def test_jobs_spread_over_gpus_each_with_its_own_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDYLIB_GPU_LOCK", str(tmp_path / "lock"))
    seen = tmp_path / "seen"
    jobs = [_job(tmp_path, f"1{i}_x", f"r{i}") for i in range(4)]

    def command(job):
        code = ("import os, time; time.sleep(0.3)\n"
                f"open({str(seen)!r}, 'a').write(' '.join([{job.run!r}, os.environ['CUDA_VISIBLE_DEVICES'], "
                "os.environ['STUDYLIB_GPU_LOCK'], os.environ['STUDYLIB_JOBS']]) + '\\n')")
        return [sys.executable, "-c", code]

    failed = pipeline.run_parallel(jobs, tmp_path / "results", "smoke", jobs=4, log_dir=tmp_path / "logs",
                                   command=command, gpus=["2", "5"])
    assert failed == 0
    rows = {run: (gpu, lock, per_gpu) for run, gpu, lock, per_gpu in (line.split() for line in seen.read_text().splitlines())}
    assert sorted(gpu for gpu, _, _ in rows.values()) == ["2", "2", "5", "5"]  # two a GPU: the least busy first
    assert all(lock == str(tmp_path / "lock" / f"gpu{gpu}") and per_gpu == "2" for gpu, lock, per_gpu in rows.values())


def test_gpus_option_is_checked():
    assert pipeline.parse_gpus("0, 1,3") == ["0", "1", "3"] and pipeline.parse_gpus("") is None
    for bad in ("0,0", "a,b", "1;2"):
        with pytest.raises(pipeline.ParamsError, match="--gpus"):
            pipeline.parse_gpus(bad)
