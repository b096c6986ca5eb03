"""Run params files through their notebooks with papermill: validated first, skipped when already done.

    python -m studylib.pipeline [--profile full|smoke] [--force] [--results DIR] params/*.yaml

A params file names a notebook and overrides some of its parameters::

    notebook: 00_baseline
    parameters:
      run_name: gemma3-270m-3shot
      model_id: gemma-3-270m
      ...

Every file is checked before anything runs (unknown keys, bad values: one clear error). A run whose record
already exists with the same profile and the same values for every key the file sets is skipped. Records are
written atomically by the notebooks, so a run killed halfway leaves no record and is redone next time.
``--force`` runs every file again, and a sweep then runs again the settings it would skip as recorded
(``$STUDYLIB_FORCE``, read by :func:`studylib.core.records.rerun_requested`).
``--profile smoke`` runs each notebook on its own (tiny, CPU) defaults, keeping only the run name, so the
whole chain can be exercised in minutes.

``--jobs N`` runs up to N notebooks at once, each in its own process with its log in ``build/logs``: a small
model leaves most of a big GPU idle while it translates. Timed sections (decode speed, compression) take the
GPU alone through :mod:`studylib.core.gpulock`, so their numbers mean the same as in a serial run. A job waits for
every job it refers to (a parameter naming another run's notebook, e.g. ``teacher_record: 01_teacher/...``),
a failed job does not stop the others (only those that refer to it), and the exit status says whether all
succeeded.

``--gpus 0,1,2,3`` spreads those jobs over several GPUs of one machine: each job starts on the GPU running the
fewest (``CUDA_VISIBLE_DEVICES`` set to that one id) and shares a lock with that GPU's jobs only
(``$STUDYLIB_GPU_LOCK/gpu<id>``). Jobs run in the order the files are given, so put the long ones first.
With ``--jobs`` > 1 a sweep notebook runs as one job per setting where its params class allows it
(``SPLIT_AXES``: 15/16 per value, 33 per out-of-domain size, 27 per strategy); the records are the same.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from studylib.core import records
from studylib.core.params import NOTEBOOK_DIR, ParamsError, check_overrides, params_class


@dataclass
class Job:
    source: Path
    notebook: str
    parameters: dict
    part: str = ""  # one share of a split sweep (see split_job), e.g. "1000"; "" for a whole file
    overrides: dict = field(default_factory=dict)  # what the share sets over the file, e.g. {"ood_sizes": [1000]}

    @property
    def run(self) -> str:
        return self.parameters["run_name"]

    @property
    def label(self) -> str:
        return f"{self.run}[{self.part}]" if self.part else self.run

    @property
    def file_stem(self) -> str:
        """The label as a file name (logs, executed notebooks): ``<run>.<part>``."""
        return f"{self.run}.{self.part}" if self.part else self.run


def load_job(path: str | Path, profile: str = "full", notebooks: Path = NOTEBOOK_DIR) -> Job:
    """Read and validate one params file (no model, no kernel)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(spec, dict) or set(spec) - {"notebook", "parameters"} or "notebook" not in spec:
        raise ParamsError(f"{path}: expected the keys 'notebook' and 'parameters' only")
    notebook = spec["notebook"]
    if not (notebooks / f"{notebook}.ipynb").is_file():
        raise ParamsError(f"{path}: notebook {notebook!r} not found in {notebooks}")
    parameters = dict(spec.get("parameters") or {})
    if "run_name" not in parameters:
        raise ParamsError(f"{path}: parameters must set run_name")
    if profile == "smoke":
        parameters = {"run_name": parameters["run_name"], "profile": "smoke"}
    parameters.setdefault("profile", "full")
    try:
        check_overrides(notebook, parameters, notebooks)
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    return Job(path, notebook, parameters)


def _part_name(values) -> str:
    return "-".join(v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":")) for v in values)


def split_job(job: Job, notebooks: Path = NOTEBOOK_DIR) -> list[Job]:
    """A sweep as one job per value of its params class's ``SPLIT_AXES`` (each a one-element list), so that
    parallel jobs share it out; every setting's record is the same as the whole sweep would write. Other jobs,
    and sweeps of one setting, come back as they are."""
    try:
        cls = params_class(job.notebook, notebooks)
    except ParamsError:
        return [job]
    axes = tuple(getattr(cls, "SPLIT_AXES", ()))
    if not axes:
        return [job]
    full = normalized_params(job, notebooks)
    combos = list(itertools.product(*(full[axis] for axis in axes)))
    if len(combos) <= 1:
        return [job]
    return [share(job, {a: [v] for a, v in zip(axes, combo)}, notebooks) for combo in combos]


def share(job: Job, overrides: dict, notebooks: Path = NOTEBOOK_DIR) -> Job:
    """``job`` with ``overrides`` set (one share of a split sweep), checked like the file's own values."""
    parameters = {**job.parameters, **overrides}
    try:
        check_overrides(job.notebook, parameters, notebooks)
    except ParamsError as err:
        raise ParamsError(f"{job.source}: {err}") from None
    part = _part_name(v[0] if isinstance(v, list) and len(v) == 1 else v for v in overrides.values())
    return Job(job.source, job.notebook, parameters, part=part, overrides=dict(overrides))


def _params_with(job: Job, method: str, results: Path | None, notebooks: Path):
    """``job``'s params instance (results where the run writes them) if its class has ``method``, else None."""
    try:
        cls = params_class(job.notebook, notebooks)
    except ParamsError:  # a notebook without a params class (load_job refuses those; tests use such)
        return None
    if not hasattr(cls, method):
        return None
    return cls(**{**job.parameters, "results_dir": str(records.results_dir(results))})


def expected_records(job: Job, results: Path | None = None, notebooks: Path = NOTEBOOK_DIR) -> list | None:
    """The (run, params) records a sweep notebook writes, or None for a notebook that writes one record."""
    cfg = _params_with(job, "expected_records", results, notebooks)
    return None if cfg is None else cfg.expected_records()


def required_outputs(job: Job, results: Path | None = None, notebooks: Path = NOTEBOOK_DIR) -> list:
    """Files a run makes for other runs (its params class's ``required_outputs``, e.g. 30_kd_data's pairs)."""
    cfg = _params_with(job, "required_outputs", results, notebooks)
    return [] if cfg is None else cfg.required_outputs()


def is_done(job: Job, results: Path | None = None, notebooks: Path = NOTEBOOK_DIR) -> bool:
    """A record exists for this run with the same value for every parameter the file sets, and the files it
    makes for other runs exist (``required_outputs``: a record alone cannot feed a student).

    A sweep notebook writes one record per setting (its params class lists them, ``expected_records``): it is
    done when every one exists with exactly its params."""
    if not all(Path(p).exists() for p in required_outputs(job, results, notebooks)):
        return False
    expected = expected_records(job, results, notebooks)
    if expected is not None:
        return all(records.record_matches(job.notebook, run, params, results) for run, params in expected)
    path = records.record_path(job.notebook, job.run, results)
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["params"]
    except (ValueError, KeyError):
        return False
    saved = records.comparable_params(saved)
    wanted = records.comparable_params(normalized_params(job, notebooks))
    return all(saved.get(k) == wanted.get(k) for k in job.parameters if k not in records.WHERE_KEYS)


def normalized_params(job: Job, notebooks: Path = NOTEBOOK_DIR) -> dict:
    """The file's values as the notebook's params class stores them ('all' expanded, defaults filled)."""
    try:
        return params_class(job.notebook, notebooks)(**job.parameters).as_dict()
    except ParamsError:  # a notebook without a params class (tests): the values as written
        return dict(job.parameters)


def execute(job: Job, results: Path | None = None, executed_dir: Path = Path("build/executed"),
            notebooks: Path = NOTEBOOK_DIR) -> Path:
    """Run the notebook with papermill (kernel ``python3``); returns the executed copy's path."""
    import papermill as pm

    parameters = dict(job.parameters)
    if results is not None:
        parameters["results_dir"] = str(results)
    out = executed_dir / job.notebook / f"{job.file_stem}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(notebooks / f"{job.notebook}.ipynb"), str(out), parameters=parameters,
                        kernel_name="python3", progress_bar=True, log_output=True, cwd=str(notebooks.parent))
    return out


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def refers_to(job: Job, other: Job) -> bool:
    """Whether ``job`` uses what ``other`` makes: one of its parameters names ``other``'s notebook."""
    if other.notebook == job.notebook:
        return False
    return any(other.notebook in text for text in _strings(job.parameters))


def parse_gpus(text: str | None) -> list[str] | None:
    """``"0,1,3"`` -> ``["0", "1", "3"]`` (device ids as ``CUDA_VISIBLE_DEVICES`` takes them); None or "" -> None."""
    if not text:
        return None
    ids = [part.strip() for part in text.split(",")]
    if not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise ParamsError(f"--gpus takes distinct device ids separated by commas (e.g. 0,1,2,3), not {text!r}")
    return ids


def run_parallel(todo: list[Job], results: Path, profile: str, jobs: int, log_dir: Path = Path("build/logs"),
                 command=None, gpus: list[str] | None = None) -> int:
    """Run ``todo`` with up to ``jobs`` at once, each as ``python -m studylib.pipeline FILE`` in its own process
    (``command(job)`` gives another argv, for tests).

    A job starts once every job it refers to has succeeded; one that refers to a failed job is not run. With
    ``gpus``, each job is started on the GPU with the fewest running jobs and sees that one alone.
    Returns the number of jobs that failed or were not run.
    """
    lock = Path(os.environ.get("STUDYLIB_GPU_LOCK") or tempfile.mkdtemp(prefix="studylib-gpulock-"))
    per_gpu = -(-jobs // len(gpus)) if gpus else jobs
    env = dict(os.environ, STUDYLIB_GPU_LOCK=str(lock), STUDYLIB_JOBS=str(per_gpu))
    pending, running, failed, succeeded = list(todo), {}, [], []
    on_gpu: dict[int, str] = {}  # id(job) -> GPU id

    def place(job: Job) -> dict:
        if not gpus:
            return env
        busy = {g: sum(1 for j in running.values() if on_gpu.get(id(j)) == g) for g in gpus}
        gpu = min(gpus, key=lambda g: busy[g])  # ties: the first listed
        on_gpu[id(job)] = gpu
        return dict(env, CUDA_VISIBLE_DEVICES=gpu, STUDYLIB_GPU_LOCK=str(lock / f"gpu{gpu}"))

    def launch(job: Job, job_env: dict):
        log = log_dir / job.notebook / f"{job.file_stem}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = command(job) if command else [sys.executable, "-m", "studylib.pipeline", "--profile", profile,
                                            "--results", str(results), "--no-summary", "--force", str(job.source)]
        if job.overrides and not command:
            cmd += ["--overrides", json.dumps(job.overrides)]
        start = time.perf_counter()
        with open(log, "w", encoding="utf-8") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=job_env).returncode
        return rc, time.perf_counter() - start, log

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            for job in list(pending):
                blockers = [o for o in pending + list(running.values()) if o is not job and refers_to(job, o)]
                if any(refers_to(job, f) for f in failed):
                    pending.remove(job)
                    failed.append(job)
                    print(f"[not run] {job.notebook} / {job.label}: a run it refers to failed", flush=True)
                elif not blockers and len(running) < jobs:
                    pending.remove(job)
                    job_env = place(job)
                    running[pool.submit(launch, job, job_env)] = job
                    where = f" on GPU {on_gpu[id(job)]}" if gpus else ""
                    print(f"[start] {job.notebook} / {job.label}{where}", flush=True)
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                rc, seconds, log = future.result()
                (succeeded if rc == 0 else failed).append(job)
                status = "done" if rc == 0 else f"FAILED (exit {rc})"
                print(f"[{status}] {job.notebook} / {job.label} in {seconds / 60:.1f} min; log {log}", flush=True)
    for job in pending:  # blocked for good (a cycle of references)
        failed.append(job)
        print(f"[not run] {job.notebook} / {job.label}: waits on itself through its references", flush=True)
    return len(failed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("params", nargs="+", help="params/*.yaml files, run in the order given (a file named twice runs once)")
    ap.add_argument("--profile", choices=records.PROFILES, default="full")
    ap.add_argument("--results", type=Path, default=None, help="results root (default: $STUDYLIB_RESULTS or results)")
    ap.add_argument("--force", action="store_true",
                    help="re-run even when a matching record exists (a sweep's recorded settings too)")
    ap.add_argument("--dry-run", action="store_true", help="validate and list what would run")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks run at once (default 1); see the module help")
    ap.add_argument("--gpus", default=os.environ.get("STUDYLIB_GPUS") or None,
                    help="spread the --jobs over these GPU ids, e.g. 0,1,2,3 (default $STUDYLIB_GPUS; unset: as CUDA sees)")
    ap.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default=None, help=argparse.SUPPRESS)  # one share of a split sweep (JSON)
    args = ap.parse_args(argv)
    if args.jobs < 1:
        print("error: --jobs must be >= 1", file=sys.stderr)
        return 2
    try:
        gpus = parse_gpus(args.gpus)
        jobs = [load_job(p, args.profile) for p in dict.fromkeys(args.params)]
        if args.overrides:
            jobs = [share(job, json.loads(args.overrides)) for job in jobs]
        elif args.jobs > 1:  # a sweep's settings can then run side by side
            jobs = [part for job in jobs for part in split_job(job)]
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.no_summary:  # the user's call (a child launched by run_parallel inherits the parent's choice)
        os.environ[records.FORCE_ENV] = "1" if args.force else "0"
    results = args.results or records.results_dir()
    todo = []
    for job in jobs:
        done = is_done(job, results)
        print(f"[{'skip' if done and not args.force else 'run '}] {job.notebook} / {job.label}  ({job.source})", flush=True)
        if not (args.dry_run or (done and not args.force)):
            todo.append(job)
    failures = 0
    if args.jobs > 1 and len(todo) > 1:
        failures = run_parallel(todo, results, args.profile, args.jobs, gpus=gpus)
    else:
        for job in todo:
            execute(job, results)
    if not args.dry_run and not args.no_summary:
        print(records.write_summary(results, args.profile))
    if failures:
        print(f"error: {failures} run(s) failed or were not run; see their logs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
