"""41_engines: the evaluation engines side by side on the same model and test sets -- time, agreement, determinism.

One run decodes the whole test pool with each engine of ``engines`` in turn (the first is the reference). With
``repeat`` the last engine decodes the same pool once more, in the same order (the same batches: what a second run of
the same params does); with ``rerun``, once more with each direction as a pool of its own, so that every prompt
shares its batches with other prompts than the first time. With batch-invariant decoding all of them give the same
hypotheses; the repeat tells a run-to-run difference from a batch-composition one. The record holds, per pass, the
decoding time (engine start apart), the segments and tokens, the scores per direction; per engine the share of
hypotheses identical to the reference engine's and the paired bootstrap of the mean chrF++ difference; and the
repeat's and the rerun's identical shares (target ``identical-rerun`` = 1.0: the rerun's). Its ``metrics`` stay
empty: the quality tables take the model's own record, not this check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

from studylib.core import engines as E
from studylib.core import evaluation, records
from studylib.runs import compression
from studylib.runs.params import CompressParams, _check


@dataclass
class EngineParams(CompressParams):
    """41_engines: the same model and test sets through each of ``engines``; the last one again with ``repeat`` (the
    same pool) and with ``rerun`` (each direction alone). ``vllm_memory`` is the share of GPU memory a vLLM engine
    may take (weights and KV cache). ``recipe`` (empty: the model as it is) compresses the model first, as its
    compression notebook does, so that a format both engines serve is checked to agree."""

    NOTEBOOK: ClassVar[str] = "41_engines"
    FAMILY: ClassVar[str] = "efficiency"
    METHOD: ClassVar[str] = "engines"
    GPU: ClassVar[str] = "exclusive"  # times decoding
    H200_MINUTES: ClassVar[float] = 14.0  # hf on 17,471 segments takes most of it
    RECIPE_OPTIONAL: ClassVar[bool] = True  # no recipe: the model as it is

    recipe: list = field(default_factory=list)
    save_compressed: bool = False
    engines: list = field(default_factory=lambda: ["hf"])
    rerun: bool = True
    repeat: bool = False
    vllm_memory: float = 0.3

    def __post_init__(self):
        super().__post_init__()
        _check(isinstance(self.engines, list) and self.engines and all(e in E.ENGINES for e in self.engines)
               and len(set(self.engines)) == len(self.engines),
               f"engines must be a list of distinct engines from {E.ENGINES}, got {self.engines!r}")
        _check(isinstance(self.rerun, bool), f"rerun must be true or false, got {self.rerun!r}")
        _check(isinstance(self.repeat, bool), f"repeat must be true or false, got {self.repeat!r}")
        _check("vllm" not in self.engines or self.dtype in ("bfloat16", "float16"),
               f"engine 'vllm' decodes in bfloat16 or float16, got dtype {self.dtype!r}")
        if "vllm" in self.engines:
            name, why = E.choose("vllm", evaluation.recipe_methods(self))
            _check(name == "vllm", f"engine 'vllm' does not serve this recipe's model ({why}): nothing to compare")


def prepare(cfg) -> tuple[dict, compression.CompressionJob | None]:
    """The test sets and, for a recipe, its compression job (methods and calibration checked); no model yet."""
    if cfg.recipe:
        job = compression.prepare(cfg)
        return job.test_sets, job
    return evaluation.load_test_sets(cfg), None


def load(cfg, job: compression.CompressionJob | None):
    """The model both engines decode: loaded, then compressed by the recipe (timed) where there is one."""
    model, tokenizer = compression.load(cfg)
    if job is not None:
        model = compression.compress(job, model, tokenizer)
    return model, tokenizer


def compression_block(job: compression.CompressionJob | None) -> dict | None:
    """What the recipe did, for the record (None for the model as it is)."""
    return None if job is None else compression.describe(job)


def identical_share(a: dict, b: dict) -> dict:
    """How many hypotheses two evaluations of the same test sets share, per direction and in all."""
    per, same, total = {}, 0, 0
    for direction, out in a.items():
        hyps_b = b[direction]["hyp"]
        k = sum(x == y for x, y in zip(out["hyp"], hyps_b, strict=True))
        per[direction] = k / len(hyps_b) if hyps_b else None
        same, total = same + k, total + len(hyps_b)
    return {"identical": same, "segments": total, "share": same / total if total else None, "per_direction": per}


def chrf_difference(a: dict, b: dict, n_samples: int = 1000, seed: int = 12345) -> dict:
    """Paired bootstrap of the mean over directions of chrF++: ``a`` minus ``b`` with its 95 % interval."""
    from studylib.core.languages import parse_direction
    from studylib.core.metrics import paired_bootstrap_mean

    items = [(a[d]["hyp"], b[d]["hyp"], a[d]["ref"], parse_direction(d)[1]) for d in a]
    r = paired_bootstrap_mean(items, metric="chrf++", n_samples=n_samples, seed=seed)
    return {k: r[k] for k in ("score_a", "score_b", "delta", "ci_low", "ci_high", "n_samples", "seed") if k in r}


def pass_entry(name: str, ev, start_seconds: float | None, pooled: bool) -> dict:
    segments = sum(len(o["hyp"]) for o in ev.outputs.values())
    return {"engine": name, "info": ev.engine, "pooled": pooled, "seconds": ev.seconds, "start_seconds": start_seconds,
            "segments": segments, "new_tokens": ev.new_tokens,
            "segments_per_s": segments / ev.seconds if ev.seconds else None,
            "gpu_processes": records.gpu_processes(),  # after the pass (this one included); > 1: the GPU was shared
            "metrics": ev.metrics, "averages": records.direction_averages(ev.metrics)}


def run(model, tokenizer, cfg, test_sets: dict, progress: bool = True) -> tuple[dict, dict]:
    """Every engine's pass over the pool, then the rerun of the last one: (the ``engines`` block of the record, the
    reference engine's outputs)."""
    passes, outputs = [], {}
    last = cfg.engines[-1]
    for name in cfg.engines:
        engine, start_s = None, None
        if name == "vllm":
            t0 = time.perf_counter()
            engine = evaluation.serve_with_vllm(model, cfg, gpu_memory_utilization=cfg.vllm_memory,
                                                max_model_len=2048)
            start_s = time.perf_counter() - t0
        run_cfg = _with_engine(cfg, name)
        try:
            ev = evaluation.evaluate(model, tokenizer, run_cfg, test_sets, progress=progress, engine=engine)
            passes.append(pass_entry(name, ev, start_s, pooled=True))
            outputs[name] = ev.outputs
            if cfg.repeat and name == last:
                same = evaluation.evaluate(model, tokenizer, run_cfg, test_sets, progress=progress, engine=engine)
                passes.append(pass_entry(name, same, None, pooled=True))
                outputs[f"{name}-repeat"] = same.outputs
            if cfg.rerun and name == last:
                again = evaluation.evaluate(model, tokenizer, run_cfg, test_sets, progress=progress, engine=engine,
                                            pooled=False)
                passes.append(pass_entry(name, again, None, pooled=False))
                outputs[f"{name}-rerun"] = again.outputs
        finally:
            if engine is not None:
                engine.close()
    reference = cfg.engines[0]
    block = {"reference": reference, "passes": passes,
             "what": "decoding seconds: prompts tokenized and decoded, scoring and the engine's start apart "
                     "(start_seconds; vLLM's includes saving the model for it); the repeat decodes the same pool "
                     "again, the rerun each direction as a pool of its own"}
    block["agreement"] = {name: {**identical_share(outputs[reference], outputs[name]),
                                 "chrf++": chrf_difference(outputs[name], outputs[reference])}
                          for name in cfg.engines[1:]}
    if cfg.repeat:
        block["repeat"] = {"engine": last, **identical_share(outputs[last], outputs[f"{last}-repeat"])}
    if cfg.rerun:
        block["rerun"] = {"engine": last, **identical_share(outputs[last], outputs[f"{last}-rerun"])}
    return block, outputs[reference]


def _with_engine(cfg, name: str):
    import copy

    other = copy.copy(cfg)
    other.engine = name
    return other


def check_record(record: dict, cfg, test_sets: dict) -> None:
    """What an engines record must hold; raises AssertionError naming what is wrong."""
    block = record["engines"]
    n = sum(len(v) for v in test_sets.values())
    expected = list(cfg.engines) + [cfg.engines[-1]] * (int(cfg.repeat) + int(cfg.rerun))
    assert [p["engine"] for p in block["passes"]] == expected, block["passes"]
    for p in block["passes"]:
        assert p["segments"] == n and p["seconds"] > 0, p
        assert p["info"]["engine"] == p["engine"], p["info"]
        assert set(p["metrics"]) == set(cfg.directions), p["engine"]
    for name, agree in block["agreement"].items():
        assert agree["segments"] == n and agree["chrf++"]["ci_low"] <= agree["chrf++"]["ci_high"], name
    for again in ("repeat", "rerun"):
        if getattr(cfg, again):
            assert block[again]["segments"] == n and 0 <= block[again]["share"] <= 1, again
    assert record["metrics"] == {}
