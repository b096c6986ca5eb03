"""The study as jobs for Snakemake (``Snakefile``): one job per params file, or per setting of the sweep it declares.

A job is done when its record exists and was made with the parameters the file (and the setting) give: the values
are compared, not file times, so a fresh clone's committed records count as done. A job runs when it is not done,
or when a job it reads from runs (its edges are the files its parameters name: :meth:`NotebookParams.uses` against
:meth:`NotebookParams.makes` and the records). A done job whose files for others are missing (git does not keep the
KD pairs) runs again only when a job that runs needs them. Snakemake then schedules what runs, with each job's GPU
use as a resource, on one machine or a cluster (``profiles/``).

    python -m studylib.workflow plan  [--profile P] [--results DIR] [PARAMS ...]   # what would run, and why
    python -m studylib.workflow run   NOTEBOOK PARAMS_FILE SETTING_JSON --profile P --results DIR   # one job
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from studylib.core import records
from studylib.runs.params import ParamsError, Spec, read_spec

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
GPU_SHARE = {"exclusive": 100, "shared": 25}  # of one GPU's 100: a timing job holds it alone, four others share it


@dataclass
class Job:
    spec: Spec
    setting: dict
    cfg: object
    results: Path
    upstream: list = field(default_factory=list)
    run: bool = False
    why: str = "done: its record matches"
    for_files: bool = False  # runs only to make again the files a later job needs (its record matches)

    @property
    def notebook(self) -> str:
        return self.spec.notebook

    @property
    def name(self) -> str:
        return self.cfg.run_name

    @property
    def key(self) -> str:
        return f"{self.notebook}/{self.name}"

    @property
    def record(self) -> Path:
        return records.record_path(self.notebook, self.name, self.results)

    def files(self, paths: list[str]) -> list[Path]:
        return [records.in_results(p, self.results) if str(p).startswith("results/") else Path(p) for p in paths]

    def compared(self) -> dict:
        """The parameters that make the run what it is: those the file sets (in the smoke profile, the run name and
        profile) and the setting's axes, as the class normalizes them."""
        keys = set(self.spec.parameters_for(self.cfg.profile)) | set(self.setting) | {"run_name", "profile"}
        keys -= set(records.WHERE_KEYS)
        values = records.comparable_params(self.cfg.as_dict())
        return {k: values[k] for k in sorted(keys) if k in values}

    def mismatch(self) -> str | None:
        """Why the job's record does not make it done (None when it does)."""
        try:
            saved = records.comparable_params(json.loads(self.record.read_text(encoding="utf-8"))["params"])
        except FileNotFoundError:
            return "no record"
        except (OSError, ValueError, KeyError):
            return "its record cannot be read"
        for key, value in self.compared().items():
            if saved.get(key) != value:
                return f"params differ: {key} is {saved.get(key)!r} in the record, {value!r} now"
        return None

    def gpu(self) -> str:
        return self.cfg.GPU

    def minutes(self) -> float:
        return float(self.cfg.H200_MINUTES)

    def papermill_setting(self) -> str:
        return json.dumps(self.setting, separators=(",", ":"))


def _relative(path: str) -> str:
    """A ``results/...`` path as its place under the results root (how producers and users meet)."""
    parts = Path(path).parts
    return str(Path(*parts[1:])) if parts and parts[0] == "results" else str(path)


def load_jobs(params_files, profile: str, results) -> list[Job]:
    """Every job of the params files (each setting of a declared sweep), checked before anything runs."""
    results = Path(results)
    jobs, seen = [], {}
    for path in dict.fromkeys(str(p) for p in params_files):
        spec = read_spec(path)
        cls = spec.params_class()
        for setting in spec.settings(profile):
            cfg = cls.from_spec(spec, setting, profile=profile, results_dir=str(results))
            job = Job(spec, setting, cfg, results)
            if job.key in seen:
                raise ParamsError(f"{path}: run {job.key} is also made by {seen[job.key]}")
            seen[job.key] = path
            jobs.append(job)
    return jobs


def plan(params_files, profile: str = "full", results="results") -> list[Job]:
    """The jobs with their edges and whether each runs (``run``) and why (``why``)."""
    jobs = load_jobs(params_files, profile, results)
    producer = {}
    for job in jobs:
        producer[_relative(f"results/runs/{job.notebook}/{job.name}.json")] = job
        for made in job.cfg.makes():
            producer[_relative(made)] = job
    for job in jobs:
        for used in job.cfg.uses():
            rel = _relative(used)
            src = producer.get(rel) or next((p for k, p in producer.items() if rel.startswith(k + "/")), None)
            if src is not None and src is not job and src not in job.upstream:
                job.upstream.append(src)
    for job in jobs:
        reason = job.mismatch()
        if reason:
            job.run, job.why = True, reason
    changed = True
    while changed:  # a job runs when one it reads from runs; a done job's missing files are remade when needed
        changed = False
        for job in jobs:
            if job.run:
                for up in job.upstream:
                    missing = [p for p in up.files(up.cfg.makes()) if not p.exists()]
                    if not up.run and missing:
                        up.run, up.why, changed = True, f"{missing[0]} is missing and {job.key} needs it", True
                        up.for_files = True
                continue
            ran = [up for up in job.upstream if up.run and not up.why.endswith("needs it")]
            if ran:
                job.run, job.why, changed = True, f"{ran[0].key} runs before it", True
    for job in jobs:
        if job.run:
            try:
                job.cfg.preflight()
            except ParamsError as err:
                raise ParamsError(f"{job.spec.path} ({job.key}): {err}") from None
    return jobs


def has_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU (its driver's tool answers), without importing torch."""
    import subprocess

    tool = shutil.which("nvidia-smi")
    if not tool:
        return False
    try:
        return subprocess.run([tool, "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def held_back(jobs: list[Job], profile: str, gpu: bool, allow_cpu: bool) -> list[Job]:
    """The jobs to run that are GPU-scale (the full profile) on a machine without a GPU: listed, not started,
    unless asked (``allow_cpu``)."""
    if profile != "full" or gpu or allow_cpu:
        return []
    return [j for j in jobs if j.run]


def describe(jobs: list[Job], held: list[Job]) -> str:
    """What the plan does, a line per job that runs (why), and the jobs held back with their estimate."""
    todo = [j for j in jobs if j.run and j not in held]
    lines = [f"{len(jobs)} runs: {len(jobs) - len([j for j in jobs if j.run])} done (their records match), "
             f"{len(todo)} to run here" + (f", {len(held)} held back (no GPU here)" if held else "")]
    lines += [f"  run   {j.key}: {j.why}" for j in todo]
    if held:
        minutes = sum(j.minutes() for j in held)
        lines.append(f"  Not started on this machine without a GPU (about {minutes:.0f} min on one H200, a rough "
                     f"estimate): make reproduce ALLOW_CPU=1 runs them here anyway, slowly.")
        lines += [f"  held  {j.key} (~{j.minutes():.0f} min, GPU {j.gpu()}): {j.why}" for j in held]
    return "\n".join(lines)


def execute(notebook: str, params_file: str, setting: dict, profile: str, results: str, out: str,
            notebooks: Path = NOTEBOOKS) -> None:
    """Run one job's notebook with papermill (kernel ``python3``): the notebook loads the params file and setting.
    The record is the notebook's last act, so a run that fails or is killed leaves none."""
    import papermill as pm

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(Path(notebooks) / f"{notebook}.ipynb"), out, kernel_name="python3", progress_bar=False,
                        log_output=True, cwd=str(REPO),
                        parameters={"params_file": params_file, "setting": setting, "profile": profile,
                                    "results_dir": str(results)})


def restore(kept: str | None, results) -> Path | None:
    """Put back the record of a job that runs only to make its files again (``for_files``), from the copy the
    Snakefile kept of it (Snakemake deletes a job's output before running it): the notebook then sees the record it
    may keep (01_teacher keeps it when its training makes the same weights). Nothing when there is no copy or the
    record is there; the path restored otherwise."""
    if not kept or not Path(kept).is_file():
        return None
    rec = json.loads(Path(kept).read_text(encoding="utf-8"))
    path = records.record_path(rec["notebook"], rec["run"], results)
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kept, path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.workflow", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="list what would run, and why")
    p.add_argument("params", nargs="*", help="params files (default: params/*.yaml)")
    p.add_argument("--profile", choices=records.PROFILES, default="full")
    p.add_argument("--results", default=None)
    r = sub.add_parser("run", help="run one job (what the Snakefile's rule calls)")
    r.add_argument("notebook")
    r.add_argument("params_file")
    r.add_argument("setting", help="the setting as JSON, {} for a file without a sweep")
    r.add_argument("--profile", choices=records.PROFILES, default="full")
    r.add_argument("--results", required=True)
    r.add_argument("--out", required=True, help="the executed notebook's path")
    r.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help=argparse.SUPPRESS)
    r.add_argument("--kept", default="", help="a copy of the job's record to put back first (a run for its files)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "plan":
            results = args.results or ("results" if args.profile == "full" else "build/smoke-results")
            files = args.params or sorted(str(p) for p in (REPO / "params").glob("*.yaml"))
            jobs = plan(files, args.profile, results)
            print(describe(jobs, held_back(jobs, args.profile, has_gpu(), allow_cpu=False)))
            return 0
        restore(args.kept, args.results)
        execute(args.notebook, args.params_file, json.loads(args.setting), args.profile, args.results, args.out,
                args.notebooks)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
