"""02_decoding: the decoding a teacher's evaluations use (repetition penalty, token cap), chosen on dev.

Each candidate decodes the same ALMA dev pairs (disjoint from every test set, asserted; the pairs a teacher trained with
early stopping held out of its training when ``dev_per_direction`` and ``test_seed`` are its own) with the engine the
evaluations use, and is scored as a test set is: chrF++ per direction and the failure rates
(:mod:`studylib.core.failures`). The candidate with the best chrF++ (mean over the directions) is chosen; a tie goes to
the lower runaway rate. No test segment is read: a run that evaluates or translates takes the chosen values by naming
this run's record as its ``decoding_record`` (read when it starts), and its record says which.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from typing import ClassVar

from studylib.core import records
from studylib.runs.params import DECODING_KNOBS, EvalParams, ParamsError, _check, _positive_int

KNOBS = DECODING_KNOBS  # what a candidate may set


@dataclass
class DecodingParams(EvalParams):
    """02_decoding: decode the dev set once per candidate decoding; keep the one with the best dev chrF++."""

    NOTEBOOK: ClassVar[str] = "02_decoding"
    FAMILY: ClassVar[str] = "other"
    METHOD: ClassVar[str] = "decoding"
    GPU: ClassVar[str] = "shared"  # translates only
    H200_MINUTES: ClassVar[float] = 5.0

    dev_per_direction: int = 2
    candidates: list = field(default_factory=lambda: [{"repetition_penalty": 1.0}, {"repetition_penalty": 1.3}])
    teacher_record: str | None = None  # e.g. 01_teacher/<run>.json: its dev set must be the one decoded here

    def __post_init__(self):
        from studylib.core.engines import check_repetition_penalty

        super().__post_init__()
        _positive_int("dev_per_direction", self.dev_per_direction)
        _check(isinstance(self.candidates, list) and self.candidates
               and all(isinstance(c, dict) and c and set(c) <= set(KNOBS) for c in self.candidates),
               f"candidates must be a non-empty list of mappings of {', '.join(KNOBS)}, got {self.candidates!r}")
        for c in self.candidates:
            try:
                check_repetition_penalty(c.get("repetition_penalty", 1.0))
            except ValueError as err:
                raise ParamsError(f"candidate {c}: {err}") from None
            _positive_int("max_new_tokens", c.get("max_new_tokens", 1))
        _check(len({json.dumps(self.setting_of(c), sort_keys=True) for c in self.candidates}) == len(self.candidates),
               f"candidates must differ from each other, got {self.candidates!r}")
        _check(self.decoding_record is None, "a decoding run chooses its decoding: leave decoding_record out")
        _check(self.teacher_record is None or (str(self.teacher_record).startswith("01_teacher/")
                                               and str(self.teacher_record).endswith(".json")),
               f"teacher_record must look like '01_teacher/<run>.json', got {self.teacher_record!r}")

    def setting_of(self, candidate: dict) -> dict:
        """Every knob of ``candidate``, the run's own value where it sets none."""
        return {k: candidate.get(k, getattr(self, k)) for k in KNOBS}

    def uses(self) -> list[str]:
        return super().uses() + ([f"results/runs/{self.teacher_record}"] if self.teacher_record else [])


def check_teacher_dev(cfg: DecodingParams) -> dict | None:
    """The teacher record's dev selection, checked to use this run's dev pairs (same count a direction, same seed), so
    that the pairs decoded here are the ones held out of its training; None without a teacher record or early stopping.
    Raises ParamsError (one line) before any model loads."""
    if not cfg.teacher_record:
        return None
    path = records.results_dir(cfg.results_dir) / "runs" / cfg.teacher_record
    if not path.is_file():
        raise ParamsError(f"teacher_record {cfg.teacher_record}: no such record under {path.parent.parent}")
    selection = (json.loads(path.read_text(encoding="utf-8")).get("training") or {}).get("dev_selection")
    if not selection:
        return None
    dev = selection.get("dev") or {}
    counts = set((dev.get("per_direction") or {}).values())
    if counts != {cfg.dev_per_direction} or dev.get("seed") != cfg.test_seed:
        raise ParamsError(f"the teacher held out {sorted(counts)} dev pairs a direction drawn with seed {dev.get('seed')}; "
                          f"decode the same: dev_per_direction {cfg.dev_per_direction} and test_seed {cfg.test_seed} "
                          f"here")
    return selection


def compare(model, tokenizer, cfg: DecodingParams, dev_sets: dict, *, progress: bool = True) -> dict:
    """Decode ``dev_sets`` (direction -> examples) once per candidate through ``cfg.engine`` (one vLLM engine for
    every candidate); per candidate its knobs, per-direction scores and failure rates, and the mean chrF++. Returns
    ``{"candidates": [...], "chosen": index, "engine": ...}``."""
    from studylib.core import evaluation

    engine, engine_info, out = None, None, []
    if cfg.engine == "vllm":
        engine = evaluation.serve_with_vllm(model, cfg)
    try:
        for candidate in cfg.candidates:
            run_cfg = dataclasses.replace(cfg, **candidate)
            ev = evaluation.evaluate(model, tokenizer, run_cfg, dev_sets, progress=progress, engine=engine)
            engine_info = engine_info or ev.engine
            per = {d: {k: v for k, v in m.items() if isinstance(v, (int, float))} for d, m in ev.metrics.items()}
            mean = {k: statistics.fmean(m[k] for m in per.values() if k in m)
                    for k in ("chrf++", "chrf", "bleu", "runaway_rate", "empty_rate", "off_target_rate")
                    if any(k in m for m in per.values())}
            out.append({"knobs": cfg.setting_of(candidate), "mean": mean, "per_direction": per,
                        "seconds": ev.seconds})
    finally:
        if engine is not None:
            engine.close()
    chosen = max(range(len(out)), key=lambda i: (out[i]["mean"]["chrf++"], -out[i]["mean"].get("runaway_rate", 0.0)))
    return {"candidates": out, "chosen": chosen, "engine": engine_info}
