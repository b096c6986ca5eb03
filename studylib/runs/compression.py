"""The steps every compression notebook shares: calibrate, compress (timed), save, evaluate, record.

A notebook stays thin::

    cfg = GPTQParams.load(params_file, setting, profile=profile, results_dir=results_dir)
    job = compression.prepare(cfg)                 # data + calibration + recipe, all checked, no model yet
    compression.choose_on_dev(job)                 # only with cfg.choose_on_dev: the recipe's parameter, on dev
    model, tokenizer = compression.load(cfg)
    model = compression.compress(job, model, tokenizer)
    record = compression.evaluate_and_record(job, model, tokenizer, notebook="12_gptq")
    ... asserts ...
    records.write_record(record, cfg.results_dir)
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from studylib.core import calibration, efficiency, evaluation, models, records
from studylib.methods import apply_recipe, build_recipe, devset


@dataclass
class CompressionJob:
    cfg: object
    recipe: list
    test_sets: dict
    calibration: calibration.Calibration | None
    described: list = field(default_factory=list)
    compress_seconds: float | None = None
    storage_bytes: int | None = None
    dev: devset.DevSet | None = None
    dev_choice: dict | None = None
    also: dict = field(default_factory=dict)  # the other test sets decoded beside (params also_test)


def prepare(cfg) -> CompressionJob:
    """Everything that can fail without a model: the recipe, the test sets, the calibration texts."""
    recipe = build_recipe(cfg.recipe)
    test_sets = evaluation.load_test_sets(cfg)
    calib = calibration_for(cfg, recipe)
    dev = None
    if cfg.choose_on_dev:  # disjoint from every test set (asserted); the same pairs a dev-stopped teacher held out
        dev = devset.dev_examples(cfg.directions, cfg.dev_per_direction, seed=cfg.test_seed, root=cfg.data_dir)
    return CompressionJob(cfg=cfg, recipe=recipe, test_sets=test_sets, calibration=calib, dev=dev,
                          also=evaluation.load_also_test_sets(cfg))


def calibration_for(cfg, recipe: list) -> calibration.Calibration | None:
    """The ALMA train texts ``recipe``'s methods calibrate on (``cfg.calib_*``), None when none needs any."""
    if not any(m.needs_calibration for m in recipe):
        return None
    return calibration.calibration_set(cfg.calib_per_direction, cfg.calib_directions, style=cfg.prompt_style,
                                       seed=cfg.calib_seed, root=cfg.data_dir)


def choose_on_dev(job: CompressionJob, *, progress: bool = True) -> dict | None:
    """With ``cfg.choose_on_dev`` ({param: [values]}): compress a fresh copy of the model once per value, score the dev
    set (greedy, the evaluations' token cap and repetition penalty, chrF++ mean over directions) and keep the best
    value in ``job.recipe`` (ties: the first listed). Test data play no part. Returns what the record keeps."""
    import torch

    cfg = job.cfg
    if not cfg.choose_on_dev:
        return None
    (key, values), = cfg.choose_on_dev.items()
    texts = job.calibration.texts if job.calibration else None
    tried = []
    for value in tqdm(values, desc=f"{key} on dev", disable=not progress, unit="value"):
        model, tokenizer = load(cfg)
        model, _ = apply_recipe(model, tokenizer, build_recipe([{**cfg.recipe[0], key: value}]), texts)
        scored = devset.dev_score(model, tokenizer, job.dev, style=cfg.prompt_style, batch_size=cfg.batch_size,
                                  max_new_tokens=cfg.max_new_tokens, repetition_penalty=cfg.repetition_penalty)
        tried.append({"value": value, "score": scored["score"], "per_direction": scored["per_direction"]})
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    best = max(range(len(tried)), key=lambda i: (tried[i]["score"], -i))
    job.recipe = build_recipe([{**cfg.recipe[0], key: tried[best]["value"]}])
    job.dev_choice = {"param": key, "chosen": tried[best]["value"], "metric": "chrf++", "tried": tried,
                      "dev": job.dev.describe()}
    return job.dev_choice


def load(cfg):
    """The model to compress, in the dtype the notebook asks for."""
    return models.load_model(cfg.model_id, cfg.dtype, cfg.device)


def apply_timed(model, tokenizer, recipe: list, texts: list[str] | None):
    """Apply ``recipe``: (model, what each step did, wall seconds with the GPU synchronized at both ends)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    model, described = apply_recipe(model, tokenizer, recipe, texts)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return model, described, time.perf_counter() - start


def compress(job: CompressionJob, model, tokenizer):
    """Apply the recipe; wall time (synchronized) goes into the record as the compression time."""
    texts = job.calibration.texts if job.calibration else None
    model, job.described, job.compress_seconds = apply_timed(model, tokenizer, job.recipe, texts)
    return model


def describe(job: CompressionJob) -> dict:
    """What the recipe did, for the record: each step's description, the compression time, the calibration."""
    return {"recipe": job.described, "seconds": job.compress_seconds,
            "calibration": job.calibration.describe() if job.calibration else None,
            **({"dev_choice": job.dev_choice} if job.dev_choice else {})}


def saved_size(job: CompressionJob, model) -> int | None:
    """Bytes of the compressed model as saved (safetensors); None when the format cannot be saved.

    A last recipe step that writes its own checkpoint format (GPTQ through GPTQModel) reports ``checkpoint_bytes``:
    that is the storage, since saving the loaded model again would measure its kernel's repacked layout instead.
    """
    if not job.cfg.save_compressed:
        return None
    job.storage_bytes, error = stored_bytes(model, job.described)
    if error:
        job.described.append({"save_error": error})
    return job.storage_bytes


def stored_bytes(model, described: list) -> tuple[int | None, str | None]:
    """(bytes of the model as stored, why it could not be saved): the checkpoint a last step wrote (GPTQ's), else the
    model saved now as safetensors."""
    if described and described[-1].get("checkpoint_bytes"):
        return int(described[-1]["checkpoint_bytes"]), None
    try:
        return efficiency.saved_storage_bytes(model), None
    except Exception as err:  # noqa: BLE001 -- recorded by the caller, not hidden
        return None, f"{type(err).__name__}: {err}"


def evaluate_and_record(job: CompressionJob, model, tokenizer, *, notebook: str, extra: dict | None = None) -> dict:
    """Translate and score the test sets, measure efficiency, and assemble (not write) the record."""
    cfg = job.cfg
    storage = saved_size(job, model)
    ev = evaluation.evaluate(model, tokenizer, cfg, job.test_sets, also=job.also)
    eff = efficiency.efficiency_report(model, tokenizer, prompt=evaluation.speed_prompt(cfg, tokenizer),
                                       batch_sizes=cfg.speed_batch_sizes, new_tokens=cfg.speed_new_tokens,
                                       storage=storage, measure_storage=False)
    return records.make_record(notebook=notebook, run=cfg.run_name, params=cfg.as_dict(), profile=cfg.profile,
                               **cfg.identity(), metrics=ev.metrics, efficiency=eff,
                               outputs=ev.outputs if cfg.keep_outputs else None, engine=ev.engine,
                               extra={"compression": describe(job), **evaluation.also_block(ev), **(extra or {})})
