"""42_speed: the decode speed and memory of one 270M format, in a job of its own, beside its reference.

The evaluation runs time their model too, but on a GPU that other jobs may share and in a process that has just
translated thousands of segments, so the same format read 23.4 ms a token in one run and 30.0 ms in another. Here
one process loads the model (the teacher, bf16), times it (the reference), builds one format from it with the study's
own method (:mod:`studylib.methods`, the recipe of :data:`FORMATS`), times that, then loads the reference again and
times it once more (A-B-A): the ratios divide by the mean of the two reference readings, and their gap (``drift``) says
how far the process's own speed moved while the format was built and timed.
The params file sweeps ``variant``: one job, process and record per format, each holding the GPU alone
(``gpu_processes`` in each timing says whether it did). No test segment is translated: the calibration texts of
the formats that need them come from ALMA's train split, like the compression runs', and only the speed prompt (the
first test source of the first direction, as in every run) is decoded.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

from studylib.core import efficiency, evaluation, records
from studylib.methods import build_recipe
from studylib.runs import compression
from studylib.runs.params import CompressParams, _check

# the study's 270M formats, each as the recipe its compression run applies (bf16: the reference alone)
FORMATS = {
    "bf16": [],
    "int8": [{"method": "bnb-int8", "threshold": 6.0}],
    "nf4": [{"method": "bnb-nf4", "double_quant": True, "compute_dtype": "bfloat16"}],
    "gptq-w4": [{"method": "gptq", "bits": 4, "group_size": 128}],
    "gptq-w8": [{"method": "gptq", "bits": 8, "group_size": 128}],
    "fp8": [{"method": "fp8"}],
    "awq-w4": [{"method": "awq", "bits": 4, "group_size": 128}],
    "smoothquant-w8a8": [{"method": "smoothquant", "alpha": 0.5, "kernel": "auto"}],
    "wanda-50": [{"method": "wanda", "sparsity": 0.5}],
    "middle-d4": [{"method": "layer-prune-middle", "depth": 4}],
    "middle-d8": [{"method": "layer-prune-middle", "depth": 8}],
}
REFERENCE = "bf16"


@dataclass
class SpeedParams(CompressParams):
    """42_speed: one format (``variant``, a key of :data:`FORMATS`) timed beside the model it is built from.

    ``speed_batch_sizes`` / ``speed_new_tokens``: the decode shapes; ``repeats``: timed runs of each (the median is
    recorded, after one untimed warm-up); ``calib_per_direction``: calibration texts a direction for the formats that
    need them (their speed does not depend on it; the compression runs use 128).
    """

    NOTEBOOK: ClassVar[str] = "42_speed"
    FAMILY: ClassVar[str] = "efficiency"
    GPU: ClassVar[str] = "exclusive"  # times decoding: the GPU alone
    H200_MINUTES: ClassVar[float] = 3.0
    RECIPE_OPTIONAL: ClassVar[bool] = True
    SMOKE_SWEEP: ClassVar[dict] = {"variant": ["nf4", "wanda-50"]}  # both build on the tiny model (2 layers, 64 wide)

    variant: str = "nf4"
    recipe: list = field(default_factory=list)  # set from variant, never by the file
    repeats: int = 3

    def __post_init__(self):
        _check(self.variant in FORMATS, f"variant must be one of {', '.join(FORMATS)}, got {self.variant!r}")
        _check(not self.recipe or self.recipe == FORMATS[self.variant],
               f"42_speed builds the recipe of its variant ({self.variant}): leave recipe out of the params")
        self.recipe = copy.deepcopy(FORMATS[self.variant])
        super().__post_init__()
        _check(isinstance(self.repeats, int) and self.repeats >= 1, f"repeats must be >= 1, got {self.repeats!r}")


def calibration_texts(cfg: SpeedParams) -> list[str] | None:
    """The ALMA train texts the format's methods calibrate on (None when none needs any); checked before any model."""
    calib = compression.calibration_for(cfg, build_recipe(cfg.recipe) if cfg.recipe else [])
    return calib.texts if calib else None


def measure(model, tokenizer, cfg: SpeedParams, described: list | None = None, *, storage: bool = True) -> dict:
    """Decode speed at each batch size, peak memory, parameters and storage of ``model`` as it is now (storage: the
    checkpoint a last step wrote, as GPTQ's, else the model saved now; None when it cannot be saved or when
    ``storage`` is False, as for the reference's second reading)."""
    storage = compression.stored_bytes(model, described or [])[0] if cfg.save_compressed and storage else None
    return efficiency.efficiency_report(model, tokenizer, prompt=evaluation.speed_prompt(cfg, tokenizer),
                                        batch_sizes=cfg.speed_batch_sizes, new_tokens=cfg.speed_new_tokens,
                                        repeats=cfg.repeats, storage=storage, measure_storage=False)


def build(model, tokenizer, cfg: SpeedParams, texts: list[str] | None):
    """The format made from ``model`` by its recipe: (model, what each step did, seconds)."""
    if not cfg.recipe:
        return model, [], 0.0
    return compression.apply_timed(model, tokenizer, build_recipe(cfg.recipe), texts)


def release() -> None:
    """Give back the GPU memory of models no name holds any more (``model = None`` first), before the reference
    loads again."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def reference_ms(reference: dict, after: dict | None, key: str) -> float | None:
    """The reference's time per token at batch size ``key``: the mean of its readings before and after the format
    (the one before where there is no second)."""
    times = [((r or {}).get("decode") or {}).get(key, {}).get("time_per_token_ms") for r in (reference, after)]
    times = [t for t in times if t]
    return sum(times) / len(times) if times else None


def drift(reference: dict, after: dict | None) -> dict:
    """The reference's second reading over its first, at each batch size (1.0: no drift within the process)."""
    out = {}
    for key, first in ((reference.get("decode") or {}).items() if after else ()):
        second = ((after.get("decode") or {}).get(key) or {}).get("time_per_token_ms")
        if second and first.get("time_per_token_ms"):
            out[f"time_per_token_{key}"] = second / first["time_per_token_ms"]
    return out


def ratios(reference: dict, measured: dict, after: dict | None = None) -> dict:
    """Format ÷ reference of the time per token at each batch size (the reference: the mean of its two readings
    where ``after`` is given), of peak memory and of storage."""
    out = {}
    for key in (reference.get("decode") or {}):
        got, ref = (measured.get("decode") or {}).get(key), reference_ms(reference, after, key)
        if got and ref:
            out[f"time_per_token_{key}"] = got["time_per_token_ms"] / ref
    for key in ("peak_memory_bytes", "storage_bytes", "params"):
        if reference.get(key) and measured.get(key) is not None:
            out[key] = measured[key] / reference[key]
    return out


def make(cfg: SpeedParams, reference: dict, measured: dict, described: list, seconds: float,
         after: dict | None = None) -> dict:
    """The record: the format's efficiency (the tables' columns), the reference's two readings (``reference``
    before the format, ``reference_after`` after it), the reference's drift between them, the ratios."""
    return records.make_record(
        notebook=cfg.NOTEBOOK, run=cfg.run_name, params=cfg.as_dict(), profile=cfg.profile, **cfg.identity(),
        metrics={}, efficiency=measured,
        extra={"speed": {"variant": cfg.variant, "reference_variant": REFERENCE, "reference": reference,
                         "reference_after": after, "drift": drift(reference, after),
                         "reference_ms": {k: reference_ms(reference, after, k) for k in reference.get("decode") or {}},
                         "ratios": ratios(reference, measured, after)},
               **({"compression": {"recipe": described, "seconds": seconds}} if described else {})})


def check_record(record: dict, cfg: SpeedParams) -> None:
    """Every batch size timed for both models in this process (the reference twice), and the ratios present."""
    speed = record["speed"]
    if not speed.get("reference_after"):
        raise AssertionError("the reference was not timed again after the format")
    for name, eff in (("reference", speed["reference"]), (cfg.variant, record["efficiency"]),
                      ("reference after", speed["reference_after"])):
        timed = eff.get("decode") or {}
        if sorted(timed) != sorted(f"batch{b}" for b in cfg.speed_batch_sizes):
            raise AssertionError(f"{name}: timed {sorted(timed)}, asked batch sizes {cfg.speed_batch_sizes}")
        if not all(t["time_per_token_ms"] > 0 for t in timed.values()):
            raise AssertionError(f"{name}: a time per token is not positive")
    if not all(f"time_per_token_batch{b}" in speed["ratios"] for b in cfg.speed_batch_sizes):
        raise AssertionError(f"ratios missing: {sorted(speed['ratios'])}")
    if cfg.recipe and [s["method"] for s in record["compression"]["recipe"]] != [s["method"] for s in cfg.recipe]:
        raise AssertionError(f"recipe ran {record['compression']['recipe']}, expected {cfg.recipe}")


load = compression.load  # the model the format is built from, in the params' dtype
