"""01_teacher: the reference teacher, fine-tuned from the base on ALMA's human-written train split.

Git keeps a teacher's record, not its weights (a full fine-tuned 270M is 0.5 GB), so a session whose jobs read the
teacher trains it again. With the same seed, data and code on one kind of GPU the training repeats itself (the loss
at every logged step, hence the weights and the test hypotheses): :func:`remade` tells when a training has made the
committed record's teacher again, and the run then keeps that record instead of evaluating anew.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from studylib.core import records
from studylib.runs.params import (EvalParams, _check, _positive_int, check_dev_selection, check_training,
                                  normalize_directions)


@dataclass
class TeacherParams(EvalParams):
    """01_teacher: fine-tune the base on ALMA's human-written train split (full or LoRA), save it, evaluate it."""

    NOTEBOOK: ClassVar[str] = "01_teacher"
    FAMILY: ClassVar[str] = "teacher"
    GPU: ClassVar[str] = "exclusive"  # times decoding
    H200_MINUTES: ClassVar[float] = 15.0
    SMOKE_SWEEP: ClassVar[dict] = {"learning_rate": [1e-3]}  # a file's learning-rate axis: one rate on the CPU

    method: str = "full"
    train_per_direction: int | None = 8
    train_directions: list | str = "all"
    epochs: float = 2.0
    learning_rate: float = 1e-3
    train_batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 128
    warmup_ratio: float = 0.03
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    dev_per_direction: int | None = None  # early stopping on dev chrF++ (null: train to the end of the plan)
    dev_every: int | None = None
    dev_patience: int | None = None
    save_dir: str | None = None
    baseline_record: str | None = None

    def __post_init__(self):
        super().__post_init__()
        _check(self.baseline_record is None or (str(self.baseline_record).endswith(".json")
                                                and str(self.baseline_record).startswith("00_baseline/")),
               f"baseline_record must look like '00_baseline/<run>.json', got {self.baseline_record!r}")
        _check(self.method in ("full", "lora"), f"method must be 'full' or 'lora', got {self.method!r}")
        _check(self.prompt_style != "alma-fewshot", "a fine-tuned teacher is prompted zero-shot: use 'alma' or 'tower'")
        _positive_int("train_per_direction", self.train_per_direction, allow_none=True)
        self.train_directions = normalize_directions(self.train_directions)
        check_training(self)
        check_dev_selection(self)

    def teacher_dir(self) -> Path:
        """Where the teacher is saved: ``save_dir``, else ``<results>/artifacts/01_teacher/<run_name>``."""
        if self.save_dir:
            return records.in_results(self.save_dir, self.results_dir)
        return records.results_dir(self.results_dir) / "artifacts" / "01_teacher" / self.run_name

    def uses(self) -> list[str]:
        return super().uses() + ([f"results/runs/{self.baseline_record}"] if self.baseline_record else [])

    def makes(self) -> list[str]:
        return [self.save_dir or f"results/artifacts/01_teacher/{self.run_name}"]


TRAJECTORY = ("steps", "final_loss", "loss_log")  # the training's own account, compared to the last digit


def remade(cfg: TeacherParams, training: dict, digest: str) -> dict | None:
    """The committed record of this run when this training has made its teacher again, else None.

    It has when the record is of the current layout, every parameter both name agrees, and the weights are the same:
    by their digest where the record holds one (``weights_sha256``), else by the training's trajectory (steps, the
    loss at every logged step, the final loss) and the dev step kept, each equal to the last digit. Then the record
    stands (its evaluation, made from these weights, is not made again); otherwise the run evaluates and records.
    """
    path = records.record_path(cfg.NOTEBOOK, cfg.run_name, cfg.results_dir)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if records.is_stale(rec):
        return None
    saved, now = records.comparable_params(rec.get("params") or {}), records.comparable_params(cfg.as_dict())
    if any(saved[k] != now[k] for k in saved.keys() & now.keys()):
        return None
    if rec.get("weights_sha256"):
        return rec if rec["weights_sha256"] == digest else None
    old, new = rec.get("training") or {}, json.loads(json.dumps(training, default=str))
    if any(old.get(k) is None or old.get(k) != new.get(k) for k in TRAJECTORY):
        return None
    kept = [(t.get("dev_selection") or {}).get("best_step") for t in (old, new)]
    return rec if kept[0] == kept[1] else None
