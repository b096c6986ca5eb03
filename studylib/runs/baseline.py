"""00_baseline: a model evaluated as it is (the base, prompted few-shot, or any checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from studylib.runs.params import EvalParams


@dataclass
class BaselineParams(EvalParams):
    """00_baseline: evaluate a model as it is."""

    NOTEBOOK: ClassVar[str] = "00_baseline"
    FAMILY: ClassVar[str] = "base"
    GPU: ClassVar[str] = "exclusive"  # times decoding
    H200_MINUTES: ClassVar[float] = 3.0
