"""Notebook parameters: one dataclass per notebook, validated before any model loads.

Each notebook's ``parameters`` cell declares the same names with the same defaults (the CPU smoke
profile); ``tests/test_notebooks.py`` checks that the two agree. A params YAML overrides some of them;
:func:`check_overrides` turns an unknown key or a bad value into one clear :class:`ParamsError`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from studylib.core.languages import DIRECTIONS
from studylib.core.records import PROFILES

PROMPT_STYLES = ("alma", "alma-fewshot", "tower")
TEST_SOURCES = ("alma", "wmt24")
ALLOWED_METRICS = ("bleu", "chrf", "chrf++", "comet")


class ParamsError(ValueError):
    """A parameter file or value the notebook cannot run with."""


def _check(cond: bool, msg: str):
    if not cond:
        raise ParamsError(msg)


def _positive_int(name, value, allow_none=False):
    if allow_none and value is None:
        return
    _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
           f"{name} must be a positive integer{' or null' if allow_none else ''}, got {value!r}")


def check_training(p, prefix: str = "", batch: str = "train_batch_size", lora: str | None = "lora_") -> None:
    """The fine-tuning hyperparameters every training notebook shares, under ``prefix`` (e.g. 'recovery_')."""
    epochs, lr = getattr(p, f"{prefix}epochs"), getattr(p, f"{prefix}learning_rate")
    _check(isinstance(epochs, (int, float)) and 0 < epochs <= 20, f"{prefix}epochs must be in (0, 20], got {epochs!r}")
    _check(isinstance(lr, float) and 0 < lr < 1, f"{prefix}learning_rate must be a float in (0, 1), got {lr!r}")
    for name in (batch, f"{prefix}grad_accum", f"{prefix}max_length"):
        _positive_int(name, getattr(p, name))
    warmup = getattr(p, f"{prefix}warmup_ratio", 0.0)
    _check(0 <= warmup < 1, f"{prefix}warmup_ratio must be in [0, 1), got {warmup!r}")
    if lora is not None:
        _positive_int(f"{lora}r", getattr(p, f"{lora}r"))
        _positive_int(f"{lora}alpha", getattr(p, f"{lora}alpha"))
        dropout = getattr(p, f"{lora}dropout")
        _check(0 <= dropout < 1, f"{lora}dropout must be in [0, 1), got {dropout!r}")


def normalize_directions(value) -> list[str]:
    if value == "all":
        return list(DIRECTIONS)
    if isinstance(value, str):
        value = [value]
    _check(isinstance(value, (list, tuple)) and len(value) > 0, f"directions must be 'all' or a list, got {value!r}")
    bad = [d for d in value if d not in DIRECTIONS]
    _check(not bad, f"unknown directions {bad}; the study covers {', '.join(DIRECTIONS)}")
    _check(len(set(value)) == len(value), f"directions repeat: {value}")
    return list(value)


class NotebookParams:
    """What every notebook's parameter dataclass shares: its field names, building it from a notebook's globals,
    and its values as a plain dict (what a record stores)."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_namespace(cls, namespace: dict):
        """Build from a notebook's globals (the names its parameters cell declared)."""
        return cls(**{name: namespace[name] for name in cls.names() if name in namespace})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EvalParams(NotebookParams):
    """What every evaluating notebook shares: the run, the model, the test data, decoding and metrics."""

    profile: str = "smoke"
    run_name: str = "smoke"
    model_id: str = "tiny-gemma3"
    dtype: str = "float32"
    device: str = "auto"
    data_dir: str | None = None
    test_source: str = "alma"
    directions: list | str = "all"
    n_test: int | None = 4
    seed: int = 0
    prompt_style: str = "alma"
    shots: int = 0
    batch_size: int = 8
    max_new_tokens: int = 32
    metrics: list = field(default_factory=lambda: ["bleu", "chrf", "chrf++"])
    comet_checkpoint: str | None = None
    speed_new_tokens: int = 8
    speed_batch_sizes: list = field(default_factory=lambda: [1])
    keep_outputs: bool = True
    results_dir: str | None = None

    def __post_init__(self):
        from studylib.core.models import ModelSpec

        _check(self.profile in PROFILES, f"profile must be one of {PROFILES}, got {self.profile!r}")
        _check(isinstance(self.run_name, str) and self.run_name and "/" not in self.run_name
               and not self.run_name.startswith("."), f"run_name must be a plain file name, got {self.run_name!r}")
        self.directions = normalize_directions(self.directions)
        _check(self.test_source in TEST_SOURCES or str(self.test_source).endswith(".jsonl"),
               f"test_source must be one of {TEST_SOURCES} or a .jsonl path, got {self.test_source!r}")
        _positive_int("n_test", self.n_test, allow_none=True)
        _check(isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}")
        _check(self.prompt_style in PROMPT_STYLES, f"prompt_style must be one of {PROMPT_STYLES}, got {self.prompt_style!r}")
        _check(isinstance(self.shots, int) and 0 <= self.shots <= 5, f"shots must be 0..5, got {self.shots!r}")
        _check(self.prompt_style != "alma-fewshot" or self.shots > 0, "prompt_style 'alma-fewshot' needs shots >= 1")
        _positive_int("batch_size", self.batch_size)
        _positive_int("max_new_tokens", self.max_new_tokens)
        _positive_int("speed_new_tokens", self.speed_new_tokens)
        _check(isinstance(self.metrics, list) and self.metrics and all(m in ALLOWED_METRICS for m in self.metrics),
               f"metrics must be a non-empty list from {ALLOWED_METRICS}, got {self.metrics!r}")
        _check("comet" not in self.metrics or self.comet_checkpoint,
               "metric 'comet' needs comet_checkpoint: a local COMET checkpoint path (no hub here)")
        _check(isinstance(self.speed_batch_sizes, list) and self.speed_batch_sizes
               and all(isinstance(b, int) and b > 0 for b in self.speed_batch_sizes),
               f"speed_batch_sizes must be a non-empty list of positive integers, got {self.speed_batch_sizes!r}")
        try:
            ModelSpec(self.model_id, self.dtype, self.device)
        except (ValueError, RuntimeError) as err:
            raise ParamsError(str(err)) from err



@dataclass
class BaselineParams(EvalParams):
    """00_baseline: evaluate a model as it is."""


@dataclass
class TeacherParams(EvalParams):
    """01_teacher: fine-tune the base on ALMA's human-written train split (full or LoRA), save it, evaluate it."""

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


@dataclass
class CompressParams(EvalParams):
    """A compression notebook: load a model, apply a recipe of registered methods, evaluate, record.

    ``recipe`` is a list of ``{"method": name, **params}`` steps (see :mod:`studylib.methods`); the
    calibration texts come from ALMA's train split, ``calib_per_direction`` for each of ``calib_directions``.
    """

    recipe: list = field(default_factory=lambda: [{"method": "bnb-int8"}])
    calib_per_direction: int = 2
    calib_directions: list | str = "all"
    calib_seed: int = 0
    save_compressed: bool = True

    def __post_init__(self):
        super().__post_init__()
        from studylib.methods import MethodError, build_recipe

        _positive_int("calib_per_direction", self.calib_per_direction)
        self.calib_directions = normalize_directions(self.calib_directions)
        try:
            build_recipe(self.recipe)
        except MethodError as err:
            raise ParamsError(str(err)) from err


@dataclass
class KDParams(EvalParams):
    """30_kd_data: the teacher translates ALMA's train sources (sequence-level knowledge distillation)."""

    kd_per_direction: int | None = 4
    kd_directions: list | str = "all"
    kd_out: str | None = None

    def kd_path(self) -> Path:
        """Where the KD pairs go: ``kd_out``, else ``<results>/artifacts/30_kd_data/<run_name>.jsonl.gz``."""
        from studylib.core.records import in_results, results_dir

        if self.kd_out:
            return in_results(self.kd_out, self.results_dir)
        return results_dir(self.results_dir) / "artifacts" / "30_kd_data" / f"{self.run_name}.jsonl.gz"

    def required_outputs(self) -> list[Path]:
        """Files the run makes for other runs: without them its record alone does not make it done."""
        return [self.kd_path()]

    def __post_init__(self):
        super().__post_init__()
        _positive_int("kd_per_direction", self.kd_per_direction, allow_none=True)
        self.kd_directions = normalize_directions(self.kd_directions)
        _check(self.prompt_style != "alma-fewshot", "the teacher is prompted zero-shot: use 'alma' or 'tower'")


@dataclass
class StudentParams(EvalParams):
    """31/32: a (pruned) student recovered with QLoRA on human + KD (+ out-of-domain) data."""

    prune_recipe: list = field(default_factory=list)
    train_directions: list | str = "all"
    human_per_direction: int | None = 4
    kd_data: str | None = None
    ood_total: int = 0
    ood_test_per_direction: int = 2
    qlora_r: int = 64
    qlora_alpha: int = 128
    qlora_dropout: float = 0.0
    rslora: bool = True
    double_quant: bool = True
    compute_dtype: str = "bfloat16"
    epochs: float = 1.0
    learning_rate: float = 2e-4
    train_batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 128
    warmup_ratio: float = 0.03
    teacher_record: str | None = None
    save_dir: str | None = None

    def __post_init__(self):
        super().__post_init__()
        from studylib.methods import MethodError, build_recipe

        _check(self.prompt_style != "alma-fewshot", "students are prompted zero-shot: use 'alma' or 'tower'")
        self.train_directions = normalize_directions(self.train_directions)
        _positive_int("human_per_direction", self.human_per_direction, allow_none=True)
        _check(isinstance(self.ood_total, int) and self.ood_total >= 0, f"ood_total must be >= 0, got {self.ood_total!r}")
        _positive_int("ood_test_per_direction", self.ood_test_per_direction)
        _check(self.compute_dtype in ("bfloat16", "float16", "float32"), f"compute_dtype {self.compute_dtype!r}?")
        check_training(self, lora="qlora_")
        _check(self.teacher_record is None or str(self.teacher_record).endswith(".json"),
               f"teacher_record must look like '01_teacher/<run>.json', got {self.teacher_record!r}")
        _check(self.kd_data is None or str(self.kd_data).endswith((".jsonl", ".jsonl.gz")),
               f"kd_data must be a .jsonl(.gz) file from 30_kd_data, got {self.kd_data!r}")
        if self.prune_recipe:
            try:
                build_recipe(self.prune_recipe)
            except MethodError as err:
                raise ParamsError(str(err)) from err


@dataclass
class ModelBParams(StudentParams):
    """32_model_b: the student is the teacher with decoder layers removed before QLoRA."""

    prune_recipe: list = field(default_factory=lambda: [{"method": "layer-prune-middle", "depth": 1}])

    def __post_init__(self):
        super().__post_init__()
        _check(bool(self.prune_recipe), "Model B is a pruned student: prune_recipe must not be empty")


@dataclass
class OODSweepParams(ModelBParams):
    """33_ood_size: Model B recovered with 0, 1k, 5k, ... out-of-domain pairs added; one record per size."""

    ood_sizes: list = field(default_factory=lambda: [0, 4])
    SPLIT_AXES = ("ood_sizes",)  # the pipeline may run one setting a job (``--jobs``): each record is the same

    def __post_init__(self):
        super().__post_init__()
        _check(isinstance(self.ood_sizes, list) and self.ood_sizes
               and all(isinstance(n, int) and n >= 0 for n in self.ood_sizes),
               f"ood_sizes must be a non-empty list of integers >= 0, got {self.ood_sizes!r}")

    def settings(self) -> list:
        """One Model B run per size: ``<run_name>-ood<size>``, with the sweep's other values."""
        fields = {k: v for k, v in self.as_dict().items() if k in ModelBParams.names()}
        return [ModelBParams(**{**fields, "ood_total": size, "run_name": f"{self.run_name}-ood{size}"})
                for size in self.ood_sizes]

    def expected_records(self) -> list[tuple[str, dict]]:
        """(run name, params) of every record the sweep writes: the pipeline skips it when all exist."""
        return [(r.run_name, r.as_dict()) for r in self.settings()]


NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def params_class(notebook: str, notebooks: Path = NOTEBOOK_DIR):
    """The dataclass a notebook's parameters follow, named in its metadata as ``studylib.core.params``
    (``"ClassName"`` from this module, or ``"module:ClassName"`` from another studylib module)."""
    path = notebooks / f"{notebook}.ipynb"
    if not path.is_file():
        raise ParamsError(f"unknown notebook {notebook!r}: {path} does not exist")
    spec = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("studylib", {}).get("params")
    if not spec:
        raise ParamsError(f"{path} names no parameter class in its metadata (studylib.core.params)")
    module, _, name = spec.rpartition(":")
    target = importlib.import_module(module or __name__)
    try:
        return getattr(target, name)
    except AttributeError:
        raise ParamsError(f"{path}: parameter class {spec!r} not found") from None


def check_overrides(notebook: str, overrides: dict, notebooks: Path = NOTEBOOK_DIR):
    """Validate a params file's overrides for a notebook: unknown keys and bad values are one error."""
    cls = params_class(notebook, notebooks)
    if not isinstance(overrides, dict):
        raise ParamsError(f"parameters for {notebook} must be a mapping, got {type(overrides).__name__}")
    unknown = sorted(set(overrides) - set(cls.names()))
    if unknown:
        raise ParamsError(
            f"{notebook} does not declare {', '.join(unknown)}; it declares: {', '.join(cls.names())}"
        )
    return cls(**overrides)
