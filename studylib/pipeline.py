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
``--profile smoke`` runs each notebook on its own (tiny, CPU) defaults, keeping only the run name, so the
whole chain can be exercised in minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import records
from .params import NOTEBOOK_DIR, ParamsError, check_overrides


@dataclass
class Job:
    source: Path
    notebook: str
    parameters: dict

    @property
    def run(self) -> str:
        return self.parameters["run_name"]


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


def is_done(job: Job, results: Path | None = None) -> bool:
    """A record exists for this run with the same value for every parameter the file sets."""
    path = records.record_path(job.notebook, job.run, results)
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["params"]
    except (ValueError, KeyError):
        return False
    return all(saved.get(k) == v or (k == "directions" and v == "all") for k, v in job.parameters.items())


def execute(job: Job, results: Path | None = None, executed_dir: Path = Path("build/executed"),
            notebooks: Path = NOTEBOOK_DIR) -> Path:
    """Run the notebook with papermill (kernel ``python3``); returns the executed copy's path."""
    import papermill as pm

    parameters = dict(job.parameters)
    if results is not None:
        parameters["results_dir"] = str(results)
    out = executed_dir / job.notebook / f"{job.run}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(notebooks / f"{job.notebook}.ipynb"), str(out), parameters=parameters,
                        kernel_name="python3", progress_bar=True, log_output=True, cwd=str(notebooks.parent))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("params", nargs="+", help="params/*.yaml files, run in the order given")
    ap.add_argument("--profile", choices=records.PROFILES, default="full")
    ap.add_argument("--results", type=Path, default=None, help="results root (default: $STUDYLIB_RESULTS or results)")
    ap.add_argument("--force", action="store_true", help="re-run even when a matching record exists")
    ap.add_argument("--dry-run", action="store_true", help="validate and list what would run")
    args = ap.parse_args(argv)
    try:
        jobs = [load_job(p, args.profile) for p in sorted(args.params, key=lambda p: Path(p).name)]
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = args.results or records.results_dir()
    for job in jobs:
        done = is_done(job, results)
        print(f"[{'skip' if done and not args.force else 'run '}] {job.notebook} / {job.run}  ({job.source})", flush=True)
        if args.dry_run or (done and not args.force):
            continue
        execute(job, results)
    if not args.dry_run:
        print(records.write_summary(results, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
