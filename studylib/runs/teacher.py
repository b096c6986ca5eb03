"""01_teacher: the reference teacher, fine-tuned from the base on ALMA's human-written train split."""

from __future__ import annotations

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
