"""Parameters of the pruning notebooks (20-27), validated before any model loads.

* 20-24 (weight pruning) are :class:`~studylib.runs.params.CompressParams` with a default recipe of their own.
* 25 (layer pruning), 26 (head pruning) and 27 (the prune-depth sweep) carry their selection parameters and an
  optional recovery fine-tuning (``recovery``: ``none``, ``full`` or ``lora``) on ALMA's train split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from studylib.runs.params import CompressParams, EvalParams, ParamsError, _check, _positive_int, check_training, normalize_directions

RECOVERY = ("none", "full", "lora")
STRATEGIES = ("iterative", "middle")
SELECTION_METRICS = ("chrf", "chrf++")
HEAD_SCOPES = ("per-layer", "global")
STAGES = ("before", "after")


def _recipe_uses(recipe, method: str) -> bool:
    return isinstance(recipe, list) and any(isinstance(s, dict) and s.get("method") == method for s in recipe)


@dataclass
class WandaParams(CompressParams):
    """20_wanda: Wanda, unstructured (50 % by default)."""

    NOTEBOOK: ClassVar[str] = "20_wanda"
    FAMILY: ClassVar[str] = "pruning"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 5.0

    recipe: list = field(default_factory=lambda: [{"method": "wanda", "sparsity": 0.5}])

    def __post_init__(self):
        super().__post_init__()
        _check(_recipe_uses(self.recipe, "wanda"), f"20_wanda runs a recipe with 'wanda', got {self.recipe!r}")


@dataclass
class Wanda24Params(CompressParams):
    """21_wanda_2of4: Wanda with a 2:4 pattern; its speed with semi-structured sparse kernels where CUDA has one."""

    NOTEBOOK: ClassVar[str] = "21_wanda_2of4"
    FAMILY: ClassVar[str] = "pruning"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 5.0

    recipe: list = field(default_factory=lambda: [{"method": "wanda", "n": 2, "m": 4}])
    sparse_kernel_speed: bool = True

    def __post_init__(self):
        super().__post_init__()
        _check(any(isinstance(s, dict) and s.get("n") == 2 and s.get("m") == 4 for s in self.recipe),
               f"21_wanda_2of4 needs a 2:4 step (n: 2, m: 4) in its recipe, got {self.recipe!r}")


@dataclass
class SparseGPTParams(CompressParams):
    """22_sparsegpt: SparseGPT, unstructured 50 % by default (llm-compressor backend)."""

    NOTEBOOK: ClassVar[str] = "22_sparsegpt"
    FAMILY: ClassVar[str] = "pruning"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 5.0

    recipe: list = field(default_factory=lambda: [{"method": "sparsegpt", "sparsity": 0.5}])

    def __post_init__(self):
        super().__post_init__()
        _check(_recipe_uses(self.recipe, "sparsegpt"), f"22_sparsegpt runs a recipe with 'sparsegpt', got {self.recipe!r}")


@dataclass
class DSnoTParams(CompressParams):
    """23_dsnot: DSnoT prune-and-grow on a Wanda (or SparseGPT) mask."""

    NOTEBOOK: ClassVar[str] = "23_dsnot"
    FAMILY: ClassVar[str] = "pruning"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 8.0

    recipe: list = field(default_factory=lambda: [{"method": "dsnot", "init": "wanda", "sparsity": 0.5}])

    def __post_init__(self):
        super().__post_init__()
        _check(_recipe_uses(self.recipe, "dsnot"), f"23_dsnot runs a recipe with 'dsnot', got {self.recipe!r}")


@dataclass
class WandaGPTQParams(CompressParams):
    """24_wanda_gptq: Wanda 50 % then GPTQ 4-bit (the Wanda+GPTQ combination of Vincenti et al. on ALMA)."""

    NOTEBOOK: ClassVar[str] = "24_wanda_gptq"
    FAMILY: ClassVar[str] = "pruning"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 8.0

    # smoke: group size 32 (the tiny model's 64 input columns; the full run uses 128)
    recipe: list = field(default_factory=lambda: [{"method": "wanda", "sparsity": 0.5},
                                                  {"method": "gptq", "bits": 4, "group_size": 32}])

    def __post_init__(self):
        super().__post_init__()
        _check(_recipe_uses(self.recipe, "wanda") and _recipe_uses(self.recipe, "gptq"),
               f"24_wanda_gptq runs a recipe with 'wanda' then 'gptq', got {self.recipe!r}")


@dataclass
class RecoveryParams(EvalParams):
    """Recovery fine-tuning of a structurally pruned model on ALMA's train split (test overlap dropped)."""

    recovery: str = "none"
    recovery_train_per_direction: int | None = 8
    recovery_directions: list | str = "all"
    recovery_epochs: float = 1.0
    recovery_learning_rate: float = 1e-4
    recovery_batch_size: int = 4
    recovery_grad_accum: int = 1
    recovery_max_length: int = 128
    recovery_warmup_ratio: float = 0.03
    recovery_lora_r: int = 16
    recovery_lora_alpha: int = 32
    recovery_lora_dropout: float = 0.05
    save_compressed: bool = True

    def __post_init__(self):
        super().__post_init__()
        _check(self.recovery in RECOVERY, f"recovery must be one of {RECOVERY}, got {self.recovery!r}")
        _check(self.prompt_style != "alma-fewshot", "pruned students are prompted zero-shot: use 'alma' or 'tower'")
        _positive_int("recovery_train_per_direction", self.recovery_train_per_direction, allow_none=True)
        self.recovery_directions = normalize_directions(self.recovery_directions)
        check_training(self, prefix="recovery_", batch="recovery_batch_size", lora="recovery_lora_")
        _check(isinstance(self.save_compressed, bool), f"save_compressed must be true or false, got {self.save_compressed!r}")


@dataclass
class LayerSelectionParams(RecoveryParams):
    """How the iterative (greedy) layer order is chosen: chrF/chrF++ on a small ALMA dev split."""

    selection_metric: str = "chrf++"
    dev_per_direction: int = 2
    dev_directions: list | str = "all"
    selection_batch_size: int = 16
    selection_max_new_tokens: int = 32

    def __post_init__(self):
        super().__post_init__()
        _check(self.selection_metric in SELECTION_METRICS,
               f"selection_metric must be one of {SELECTION_METRICS}, got {self.selection_metric!r}")
        _positive_int("dev_per_direction", self.dev_per_direction)
        self.dev_directions = normalize_directions(self.dev_directions)
        _positive_int("selection_batch_size", self.selection_batch_size)
        _positive_int("selection_max_new_tokens", self.selection_max_new_tokens)

    def layer_method(self, strategy: str, depth: int) -> dict:
        """The registry step for one strategy and depth (what 25 runs and 27 records)."""
        if strategy == "middle":
            return {"method": "layer-prune-middle", "depth": depth}
        return {"method": "layer-prune-greedy", "depth": depth, "metric": self.selection_metric,
                "dev_per_direction": self.dev_per_direction, "directions": list(self.dev_directions),
                "seed": self.seed, "prompt_style": self.prompt_style, "batch_size": self.selection_batch_size,
                "max_new_tokens": self.selection_max_new_tokens, "repetition_penalty": self.repetition_penalty,
                "data_dir": self.data_dir}


@dataclass
class LayerPruneParams(LayerSelectionParams):
    """25_layer_pruning: remove ``depth`` decoder layers, iteratively by dev chrF++ or the middle block; optional
    recovery fine-tuning."""

    NOTEBOOK: ClassVar[str] = "25_layer_pruning"
    FAMILY: ClassVar[str] = "pruning"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 15.0

    strategy: str = "iterative"
    depth: int = 1
    recovery: str = "lora"

    def __post_init__(self):
        super().__post_init__()
        _check(self.strategy in STRATEGIES, f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        _positive_int("depth", self.depth)


@dataclass
class PruneDepthParams(LayerPruneParams):
    """27_prune_depth: one setting of the prune-depth ablation: ``strategy`` and ``depth`` as in 25, measured
    ``before`` recovery (recovery ``none``) or ``after`` it; the params file sweeps strategy x depth x stage.

    The smoke default removes 1 layer: the tiny model has only 2. The full run removes 2, 4, 6, 8 of 18.
    """

    NOTEBOOK: ClassVar[str] = "27_prune_depth"
    SMOKE_SWEEP: ClassVar[dict] = {"depth": [1]}
    stage: str = "after"
    recovery: str = "full"

    def __post_init__(self):
        _check(self.stage in STAGES, f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.stage == "before":
            self.recovery = "none"
        super().__post_init__()
        _check(self.stage == "before" or self.recovery != "none",
               "27_prune_depth after recovery needs recovery 'full' or 'lora'")


@dataclass
class HeadPruneParams(RecoveryParams):
    """26_head_pruning: remove the query heads of lowest gradient importance (Michel et al. 2019) on ALMA dev."""

    NOTEBOOK: ClassVar[str] = "26_head_pruning"
    FAMILY: ClassVar[str] = "pruning"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 10.0

    head_fraction: float = 0.25
    head_scope: str = "per-layer"
    dev_per_direction: int = 2
    dev_directions: list | str = "all"
    importance_batch_size: int = 8
    importance_max_length: int = 256

    def __post_init__(self):
        super().__post_init__()
        _check(isinstance(self.head_fraction, float) and 0 < self.head_fraction < 1,
               f"head_fraction must be a float in (0, 1), got {self.head_fraction!r}")
        _check(self.head_scope in HEAD_SCOPES, f"head_scope must be one of {HEAD_SCOPES}, got {self.head_scope!r}")
        _positive_int("dev_per_direction", self.dev_per_direction)
        self.dev_directions = normalize_directions(self.dev_directions)
        _positive_int("importance_batch_size", self.importance_batch_size)
        _positive_int("importance_max_length", self.importance_max_length)

    def head_method(self) -> dict:
        return {"method": "head-prune", "fraction": self.head_fraction, "scope": self.head_scope,
                "dev_per_direction": self.dev_per_direction, "directions": list(self.dev_directions),
                "seed": self.seed, "prompt_style": self.prompt_style, "batch_size": self.importance_batch_size,
                "max_length": self.importance_max_length, "data_dir": self.data_dir}


__all__ = ["WandaParams", "Wanda24Params", "SparseGPTParams", "DSnoTParams", "WandaGPTQParams", "RecoveryParams",
           "LayerSelectionParams", "LayerPruneParams", "PruneDepthParams", "HeadPruneParams", "ParamsError"]
