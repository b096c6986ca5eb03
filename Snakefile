# The study's workflow: one job per params file, or per setting of the sweep it declares; each job runs its
# notebook with papermill and writes one record. A job is done when its record was made with the same parameters
# (studylib.workflow compares them), so committed records are never recomputed.
#
#   snakemake                              # one machine (profiles/default, applied by itself; make reproduce)
#   snakemake --profile profiles/slurm     # a SLURM cluster, one GPU per job
#   config: profile=full|smoke  results=DIR  params="a.yaml b.yaml"  allow_cpu=1  gpu=0|1  notebooks=DIR
import shutil
import sys
from pathlib import Path

from studylib import workflow as study

PROFILE = config.get("profile", "full")
RESULTS = config.get("results") or ("results" if PROFILE == "full" else "build/smoke-results")
PARAMS = str(config.get("params") or "").split() or sorted(str(p) for p in Path("params").glob("*.yaml"))
GPU = bool(int(config["gpu"])) if "gpu" in config else study.has_gpu()
NOTEBOOKS = config.get("notebooks", str(study.NOTEBOOKS))
FLAGS = f"build/workflow/{PROFILE}/rerun"

try:
    JOBS = {job.key: job for job in study.plan(PARAMS, PROFILE, RESULTS)}
except study.ParamsError as err:
    sys.exit(f"error: {err}")
HELD = study.held_back(list(JOBS.values()), PROFILE, GPU, bool(int(config.get("allow_cpu", 0))))
print(study.describe(list(JOBS.values()), HELD), file=sys.stderr)
TODO = [job for job in JOBS.values() if job.run and job not in HELD]
for job in TODO:  # a record that exists but must be made again gets a flag newer than it, among its inputs
    if job.record.exists():
        Path(FLAGS, job.notebook).mkdir(parents=True, exist_ok=True)
        Path(FLAGS, job.key + ".flag").write_text(job.why + "\n")
        if job.for_files:  # Snakemake deletes the record before the job: a copy, which the job puts back first
            shutil.copyfile(job.record, Path(FLAGS, job.key + ".kept.json"))


def kept(wildcards):
    job = JOBS[f"{wildcards.notebook}/{wildcards.run}"]
    return f"{FLAGS}/{job.key}.kept.json" if job.for_files else ""


def job_inputs(wildcards):
    job = JOBS[f"{wildcards.notebook}/{wildcards.run}"]
    if not job.run:
        return []
    flag = [f"{FLAGS}/{job.key}.flag"] if job.record.exists() else []
    return [str(up.record) for up in job.upstream] + flag


wildcard_constraints:
    notebook=r"\d\d_[a-z0-9_]+",
    run=r"[^/]+",


rule all:
    input: [str(job.record) for job in TODO]


rule run:
    output: f"{RESULTS}/runs/{{notebook}}/{{run}}.json"
    input: job_inputs
    log: f"build/logs/{PROFILE}/{{notebook}}/{{run}}.log"
    params:
        file=lambda wc: JOBS[f"{wc.notebook}/{wc.run}"].spec.path,
        setting=lambda wc: JOBS[f"{wc.notebook}/{wc.run}"].papermill_setting(),
        executed=lambda wc: f"build/executed/{PROFILE}/{wc.notebook}/{wc.run}.ipynb",
        kept=kept,
    resources:
        gpu_share=lambda wc: study.GPU_SHARE[JOBS[f"{wc.notebook}/{wc.run}"].gpu()],
        runtime=lambda wc: int(3 * JOBS[f"{wc.notebook}/{wc.run}"].minutes()) + 10,
    shell:
        f"{sys.executable} -m studylib.workflow run {{wildcards.notebook}} {{params.file}} '{{params.setting}}' "
        f"--profile {PROFILE} --results {RESULTS} --out {{params.executed}} --notebooks {NOTEBOOKS} "
        f"--kept '{{params.kept}}' 2>&1 | tee {{log}}"

