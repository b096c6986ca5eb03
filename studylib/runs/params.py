"""Run parameters: one dataclass per notebook (its defaults are the CPU smoke profile), a params file over them.

A params file (``params/*.yaml``) names its notebook, sets some of the class's parameters, and may declare a sweep::

    notebook: 15_gptq_bits
    parameters: {run_name: teacher-lora-gptq-g128, recipe: [{method: gptq, bits: 4, group_size: 128}], ...}
    sweep: {bits: [2, 3, 4, 8]}

One run is one setting of it (the file itself when it declares no sweep): :meth:`NotebookParams.load` reads the
file, applies the setting (a parameter of the class, or of the recipe step that declares it) and names the run
``<run_name>-bits2``. Every check happens there, before any model loads, as one :class:`ParamsError` that names the
file and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from studylib.core import data, languages, records
from studylib.core.generation import DECODING_KNOBS
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


def check_dev_selection(p) -> None:
    """Early stopping on dev, all or nothing: ``dev_per_direction`` dev pairs a direction, scored every ``dev_every``
    optimizer steps, training stopped after ``dev_patience`` scorings without a gain (null: never)."""
    _positive_int("dev_per_direction", p.dev_per_direction, allow_none=True)
    if p.dev_per_direction is None:
        _check(p.dev_every is None and p.dev_patience is None,
               "dev_every and dev_patience need dev_per_direction (the dev pairs a direction to score on)")
        return
    _positive_int("dev_every", p.dev_every)
    _positive_int("dev_patience", p.dev_patience, allow_none=True)


def normalize_directions(value) -> list[str]:
    """:func:`studylib.core.languages.normalize_directions`, its error a ParamsError."""
    try:
        return languages.normalize_directions(value)
    except languages.UnknownDirectionError as err:
        raise ParamsError(str(err)) from None


class NotebookParams:
    """What every notebook's parameter dataclass shares: how a run is loaded and what it says about itself.

    Class attributes (not parameters): ``NOTEBOOK`` runs it; ``FAMILY`` (and ``METHOD`` for a run with no
    compression step) say what its records are (:mod:`studylib.core.what`); ``GPU`` is ``exclusive`` for a run
    that times decoding or compression (it holds the whole GPU) and ``shared`` for one that only translates or
    trains; ``H200_MINUTES`` is a rough duration on one H200, for the plan a machine without a GPU prints;
    ``SMOKE_SWEEP`` gives the values a declared sweep takes in the smoke profile (the tiny model).
    """

    NOTEBOOK: ClassVar[str] = ""
    FAMILY: ClassVar[str] = "other"
    METHOD: ClassVar[str | None] = None
    GPU: ClassVar[str] = "shared"
    H200_MINUTES: ClassVar[float] = 5.0
    SMOKE_SWEEP: ClassVar[dict] = {}
    sweep = None  # set by load(): {"parent": run_name, "axes": {...}} for one setting of a sweep

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, parameters: dict, where: str):
        """An instance from ``parameters``; an unknown name or a bad value is one ParamsError naming ``where``."""
        if not isinstance(parameters, dict):
            raise ParamsError(f"{where}: parameters must be a mapping, got {type(parameters).__name__}")
        for key in parameters:
            if key not in cls.names():
                close = difflib.get_close_matches(key, cls.names(), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ParamsError(f"{where}: {key!r} is not a parameter of {cls.NOTEBOOK or cls.__name__}{hint}")
        try:
            return cls(**parameters)
        except ParamsError as err:
            raise ParamsError(f"{where}: {err}") from None

    @classmethod
    def load(cls, params_file=None, setting: dict | None = None, *, profile: str | None = None,
             results_dir: str | None = None):
        """The parameters of one run: the class defaults, a params file's values over them, one setting of its
        sweep. Without a file: the defaults (the smoke profile), with ``setting`` as values over them."""
        if params_file is None:
            parameters = {"profile": profile} if profile else {}
            parent = cls.__dataclass_fields__["run_name"].default
            cfg = cls._setting(parameters, dict(setting or {}), parent, cls.NOTEBOOK or cls.__name__, results_dir)
        else:
            cfg = cls.from_spec(read_spec(params_file), setting, profile=profile, results_dir=results_dir)
        cfg.resolve()
        return cfg

    @classmethod
    def from_spec(cls, spec: "Spec", setting: dict | None = None, *, profile: str | None = None,
                  results_dir: str | None = None):
        """:meth:`load` for a params file already read."""
        if spec.params_class() is not cls:
            raise ParamsError(f"{spec.path}: the file is for notebook {spec.notebook}, whose runs are not {cls.__name__}")
        setting = dict(setting or {})
        spec.check_setting(setting, profile or "full")
        return cls._setting(spec.parameters_for(profile or "full"), setting, spec.run_name, spec.path, results_dir)

    @classmethod
    def _setting(cls, parameters: dict, setting: dict, parent: str, where: str, results_dir):
        if setting:
            parameters = apply_setting(cls, parameters, setting, where)
            parameters["run_name"] = setting_name(parent, setting)
        both = [k for k in DECODING_KNOBS if k in parameters] if parameters.get("decoding_record") else []
        if both:
            raise ParamsError(f"{where}: set decoding_record or {', '.join(both)}, not both: the record's dev choice "
                              f"sets {', '.join(DECODING_KNOBS)}")
        if results_dir is not None:
            parameters["results_dir"] = str(results_dir)
        cfg = cls.build(parameters, where)
        if setting:
            cfg.sweep = {"parent": parent, "axes": setting}
        return cfg

    def identity(self) -> dict:
        """What the run's record says it is (``records.make_record``'s ``family``, ``sweep``, ``method``)."""
        return {"family": self.FAMILY, "sweep": self.sweep, "method": self.METHOD}

    def preflight(self) -> None:
        """What a run needs beyond its values (a data folder, a model that can be had), checked before it starts:
        a ParamsError of one line."""

    def resolve(self) -> None:
        """Values read from another run's record when the run starts (:meth:`load`; the workflow's plan, made before
        that run may have run, leaves them as the file sets them): a ParamsError of one line when it cannot."""

    def uses(self) -> list[str]:
        """Files of other runs this run reads, as params name them (``results/...``): the workflow's edges."""
        return []

    def makes(self) -> list[str]:
        """Files this run makes for other runs besides its record (``results/...``)."""
        return []

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
    test_seed: int = 0  # draws the n_test subsample: apart from seed, so that a run's seeds share their test segments
    prompt_style: str = "alma"
    shots: int = 0
    batch_size: int = 8
    max_new_tokens: int = 32
    repetition_penalty: float = 1.0  # on tokens already in the prompt or output (1.0: none), the same in both engines
    metrics: list = field(default_factory=lambda: ["bleu", "chrf", "chrf++"])
    comet_checkpoint: str | None = None
    speed_new_tokens: int = 8
    speed_batch_sizes: list = field(default_factory=lambda: [1])
    keep_outputs: bool = True
    engine: str = "hf"
    vllm_memory: float = 0.4  # the share of GPU memory a vLLM engine takes (weights, activations, KV cache)
    vllm_eager: bool = False  # vLLM without torch.compile and CUDA graphs: no compiling at start, a slower decode
    vllm_autotune: bool = True  # FlashInfer's kernel autotuning at vLLM's start (40-60 s on a fresh machine)
    decoding_record: str | None = None  # "02_decoding/<run>.json": decode with the knobs that run chose on dev
    # other test sets the run also decodes, in the same pool, each on the directions it holds (e.g. [wmt24]: WMT24,
    # en->xx only), scored into the record's ``also_tests``: a second test set to check the methods' ranking on
    also_test: list = field(default_factory=list)
    results_dir: str | None = None

    def __post_init__(self):
        from studylib.core.engines import ENGINES, check_repetition_penalty
        from studylib.core.models import ModelNotAvailable, ModelSpec

        _check(self.profile in PROFILES, f"profile must be one of {PROFILES}, got {self.profile!r}")
        _check(isinstance(self.run_name, str) and self.run_name and "/" not in self.run_name
               and not self.run_name.startswith("."), f"run_name must be a plain file name, got {self.run_name!r}")
        self.directions = normalize_directions(self.directions)
        _check(self.test_source in TEST_SOURCES or str(self.test_source).endswith(".jsonl"),
               f"test_source must be one of {TEST_SOURCES} or a .jsonl path, got {self.test_source!r}")
        lacking = [d for d in self.directions if d not in data.WMT24_DIRECTIONS]
        _check(self.test_source != "wmt24" or not lacking,
               f"test_source wmt24 holds {', '.join(data.WMT24_DIRECTIONS)} only (en->xx), not {', '.join(lacking)}: "
               f"set directions to those")
        _check(isinstance(self.also_test, list) and all(t in TEST_SOURCES and t != self.test_source
                                                        for t in self.also_test)
               and len(set(self.also_test)) == len(self.also_test),
               f"also_test must list test sets from {TEST_SOURCES} other than test_source, got {self.also_test!r}")
        _check("wmt24" not in self.also_test or any(d in data.WMT24_DIRECTIONS for d in self.directions),
               f"also_test wmt24 holds {', '.join(data.WMT24_DIRECTIONS)} only (en->xx): none of the run's directions")
        _positive_int("n_test", self.n_test, allow_none=True)
        _check(isinstance(self.seed, int), f"seed must be an integer, got {self.seed!r}")
        _check(isinstance(self.test_seed, int), f"test_seed must be an integer, got {self.test_seed!r}")
        _check(self.prompt_style in PROMPT_STYLES, f"prompt_style must be one of {PROMPT_STYLES}, got {self.prompt_style!r}")
        _check(isinstance(self.shots, int) and 0 <= self.shots <= 5, f"shots must be 0..5, got {self.shots!r}")
        _check(self.prompt_style != "alma-fewshot" or self.shots > 0, "prompt_style 'alma-fewshot' needs shots >= 1")
        _positive_int("batch_size", self.batch_size)
        _positive_int("max_new_tokens", self.max_new_tokens)
        try:
            check_repetition_penalty(self.repetition_penalty)
        except ValueError as err:
            raise ParamsError(str(err)) from None
        _positive_int("speed_new_tokens", self.speed_new_tokens)
        _check(isinstance(self.metrics, list) and self.metrics and all(m in ALLOWED_METRICS for m in self.metrics),
               f"metrics must be a non-empty list from {ALLOWED_METRICS}, got {self.metrics!r}")
        _check(self.engine in ENGINES, f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        _check(self.engine != "vllm" or self.dtype in ("bfloat16", "float16"),
               f"engine 'vllm' decodes in bfloat16 or float16, got dtype {self.dtype!r}")
        _check(isinstance(self.vllm_memory, float) and 0 < self.vllm_memory < 1,
               f"vllm_memory must be a float in (0, 1), got {self.vllm_memory!r}")
        _check(isinstance(self.vllm_eager, bool), f"vllm_eager must be true or false, got {self.vllm_eager!r}")
        _check(isinstance(self.vllm_autotune, bool), f"vllm_autotune must be true or false, got {self.vllm_autotune!r}")
        _check(self.decoding_record is None or (str(self.decoding_record).startswith("02_decoding/")
                                                and str(self.decoding_record).endswith(".json")),
               f"decoding_record must look like '02_decoding/<run>.json', got {self.decoding_record!r}")
        _check("comet" not in self.metrics or self.comet_checkpoint,
               "metric 'comet' needs comet_checkpoint: a local COMET checkpoint path (no hub here)")
        _check(isinstance(self.speed_batch_sizes, list) and self.speed_batch_sizes
               and all(isinstance(b, int) and b > 0 for b in self.speed_batch_sizes),
               f"speed_batch_sizes must be a non-empty list of positive integers, got {self.speed_batch_sizes!r}")
        try:
            ModelSpec(self.model_id, self.dtype, self.device)
        except ModelNotAvailable as err:
            if not self.model_from_a_run():  # another run's artifact is made before this run, or it fails loading
                raise ParamsError(str(err)) from err
        except (ValueError, RuntimeError) as err:
            raise ParamsError(str(err)) from err

    def model_from_a_run(self) -> bool:
        """Whether the model is another run's artifact, named as params name it (``results/artifacts/...``)."""
        return str(self.model_id).startswith("results/")

    def uses(self) -> list[str]:
        return (([self.model_id] if self.model_from_a_run() else [])
                + ([f"results/runs/{self.decoding_record}"] if self.decoding_record else []))

    def run_record(self, param: str) -> dict:
        """The record the parameter ``param`` names (``"<notebook>/<run>.json"`` under the results' runs), read when
        the run starts; a ParamsError of one line when that run has not made it yet."""
        name = getattr(self, param)
        path = records.results_dir(self.results_dir) / "runs" / name
        if not path.is_file():
            raise ParamsError(f"{param} {name}: no such record under {path.parent.parent}: "
                              f"run its {str(name).split('/')[0]} params first")
        return json.loads(path.read_text(encoding="utf-8"))

    def resolve(self) -> None:
        """With ``decoding_record``: the decoding knobs (:data:`DECODING_KNOBS`) that 02_decoding run chose on dev
        replace this run's, so every run decodes as the dev choice says and none sets it by hand."""
        super().resolve()
        if not self.decoding_record:
            return
        chosen = (self.run_record("decoding_record").get("decoding") or {}).get("chosen")
        if not isinstance(chosen, dict) or not chosen or set(chosen) - set(DECODING_KNOBS):
            raise ParamsError(f"decoding_record {self.decoding_record}: no decoding chosen on dev in it")
        for knob, value in chosen.items():
            setattr(self, knob, value)
        from studylib.core.engines import check_repetition_penalty

        try:
            check_repetition_penalty(self.repetition_penalty)
        except ValueError as err:
            raise ParamsError(f"decoding_record {self.decoding_record}: {err}") from None
        _positive_int("max_new_tokens", self.max_new_tokens)

    def preflight(self) -> None:
        from studylib.core import data, models

        try:
            data.resolve_data_dir(self.data_dir)
            models.check_available(self.model_id)
        except (data.DataError, models.ModelNotAvailable) as err:
            raise ParamsError(str(err)) from None



@dataclass
class CompressParams(EvalParams):
    """A compression notebook: load a model, apply a recipe of registered methods, evaluate, record.

    ``recipe`` is a list of ``{"method": name, **params}`` steps (see :mod:`studylib.methods`); the
    calibration texts come from ALMA's train split, ``calib_per_direction`` for each of ``calib_directions``.
    """

    RECIPE_OPTIONAL: ClassVar[bool] = False  # True: an empty recipe is the model as it is

    recipe: list = field(default_factory=lambda: [{"method": "bnb-int8"}])
    calib_per_direction: int = 2
    calib_directions: list | str = "all"
    calib_seed: int = 0
    save_compressed: bool = True
    choose_on_dev: dict | None = None  # {param: [values]} of the recipe's one step, the best on dev kept
    dev_per_direction: int = 2  # dev pairs a direction for choose_on_dev

    def __post_init__(self):
        super().__post_init__()
        from studylib.methods import MethodError, build_recipe

        _positive_int("calib_per_direction", self.calib_per_direction)
        self.calib_directions = normalize_directions(self.calib_directions)
        if self.recipe or not self.RECIPE_OPTIONAL:
            try:
                build_recipe(self.recipe)
            except MethodError as err:
                raise ParamsError(str(err)) from err
        _positive_int("dev_per_direction", self.dev_per_direction)
        if self.choose_on_dev is not None:
            self._check_choose_on_dev()

    def _check_choose_on_dev(self) -> None:
        """``choose_on_dev`` names one parameter of the recipe's one step, left out of the step, and at least two
        distinct values for it, each a valid step (the method's own checks)."""
        from studylib.methods import MethodError, build_recipe

        c = self.choose_on_dev
        _check(isinstance(c, dict) and len(c) == 1,
               f"choose_on_dev must be one {{param: [values]}}, e.g. {{alpha: [0.3, 0.5, 0.7]}}; got {c!r}")
        (key, values), = c.items()
        _check(isinstance(values, list) and len(values) >= 2 and len({json.dumps(v) for v in values}) == len(values),
               f"choose_on_dev {key}: at least two distinct values, got {values!r}")
        _check(isinstance(self.recipe, list) and len(self.recipe) == 1,
               "choose_on_dev chooses a parameter of a one-step recipe")
        _check(key not in self.recipe[0], f"choose_on_dev chooses {key}: leave it out of the recipe's step")
        for v in values:
            try:
                build_recipe([{**self.recipe[0], key: v}])
            except MethodError as err:
                raise ParamsError(f"choose_on_dev {key}={v!r}: {err}") from err



# ------------------------------------------------------------------------------------------ params files and sweeps

# Which parameter class each notebook's runs take: a module of studylib.runs (or a full module path) and a class.
NOTEBOOKS = {
    "00_baseline": "baseline:BaselineParams",
    "01_teacher": "teacher:TeacherParams",
    "02_decoding": "decoding:DecodingParams",
    "10_bnb_int8": "quantization:BnbInt8Params",
    "11_bnb_nf4": "quantization:BnbNF4Params",
    "12_gptq": "quantization:GPTQParams",
    "13_smoothquant": "quantization:SmoothQuantParams",
    "14_smoothquant_nf4": "quantization:SmoothQuantNF4Params",
    "15_gptq_bits": "quantization:GPTQBitsParams",
    "16_calibration_size": "quantization:CalibrationSizeParams",
    "17_gguf_grid": "quantization:GGUFGridParams",
    "18_fp8": "quantization:FP8Params",
    "19_awq": "quantization:AWQParams",
    "20_wanda": "pruning:WandaParams",
    "21_wanda_2of4": "pruning:Wanda24Params",
    "22_sparsegpt": "pruning:SparseGPTParams",
    "23_dsnot": "pruning:DSnoTParams",
    "24_wanda_gptq": "pruning:WandaGPTQParams",
    "25_layer_pruning": "pruning:LayerPruneParams",
    "26_head_pruning": "pruning:HeadPruneParams",
    "27_prune_depth": "pruning:PruneDepthParams",
    "30_kd_data": "distillation:KDParams",
    "31_model_a": "students:StudentParams",
    "32_model_b": "students:ModelBParams",
    "33_ood_size": "students:OODSizeParams",
    "40_efficiency_7b": "studylib.bench.params:BenchmarkParams",
    "41_engines": "engines:EngineParams",
    "42_speed": "speed:SpeedParams",
}


def params_class(notebook: str):
    """The parameter class of a notebook's runs."""
    if notebook not in NOTEBOOKS:
        raise ParamsError(f"unknown notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")
    module, _, name = NOTEBOOKS[notebook].partition(":")
    return getattr(importlib.import_module(module if "." in module else f"studylib.runs.{module}"), name)


SPEC_KEYS = ("notebook", "parameters", "sweep")
# short names in run names
RUN_LABELS = {"calib_per_direction": "calib", "ood_total": "ood", "depth": "d", "learning_rate": "lr"}


def _label(axis: str, value) -> str:
    if isinstance(value, str):
        return value
    return f"{RUN_LABELS.get(axis, axis)}{json.dumps(value, separators=(',', ':'))}"


def setting_name(run_name: str, setting: dict) -> str:
    """``<run_name>-bits2``, ``<run_name>-iterative-d4-after``: a string value as itself, a number after its
    axis' short name."""
    return "-".join([run_name, *(_label(axis, value) for axis, value in setting.items())])


def apply_setting(cls, parameters: dict, setting: dict, where: str) -> dict:
    """``parameters`` with a sweep setting applied: an axis is a parameter of ``cls``, or a parameter of the last
    recipe step whose method declares it (``bits`` of a ``gptq`` step)."""
    out = copy.deepcopy(parameters)
    for axis, value in setting.items():
        if axis in cls.names():
            out[axis] = value
            continue
        recipe = out.get("recipe") if "recipe" in out else copy.deepcopy(_default(cls, "recipe"))
        step = _recipe_step(recipe, axis) if recipe else None
        if step is None:
            raise ParamsError(f"{where}: sweep axis {axis!r} is neither a parameter of {cls.NOTEBOOK or cls.__name__} "
                              f"nor of a step of its recipe")
        recipe[step][axis] = value
        out["recipe"] = recipe
    return out


def _default(cls, name: str):
    f = cls.__dataclass_fields__.get(name)
    if f is None:
        return None
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _recipe_step(recipe, axis: str) -> int | None:
    from studylib.methods import MethodError, build

    for i in range(len(recipe) - 1, -1, -1):
        step = recipe[i]
        try:
            declared = build(step["method"], **{k: v for k, v in step.items() if k != "method"}).params
        except (MethodError, KeyError, TypeError):
            continue
        if axis in declared:
            return i
    return None


@dataclass(frozen=True)
class Spec:
    """One params file: its notebook, the parameters it sets, the sweep it declares (``{}`` for none)."""

    path: str
    notebook: str
    parameters: dict
    sweep: dict

    @property
    def run_name(self) -> str:
        return self.parameters["run_name"]

    def params_class(self):
        return params_class(self.notebook)

    def sweep_values(self, profile: str) -> dict:
        """The sweep's axes and values; in the smoke profile the class's ``SMOKE_SWEEP`` values where it has them."""
        smoke = self.params_class().SMOKE_SWEEP if profile == "smoke" else {}
        return {axis: list(smoke.get(axis, values)) for axis, values in self.sweep.items()}

    def settings(self, profile: str) -> list[dict]:
        """Every setting of the sweep, in order (one empty setting for a file without a sweep)."""
        values = self.sweep_values(profile)
        return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]

    def check_setting(self, setting: dict, profile: str) -> None:
        if not self.sweep:
            return
        values = self.sweep_values(profile)
        if set(setting) != set(values):
            example = {axis: vals[0] for axis, vals in values.items()}
            raise ParamsError(f"{self.path} declares a sweep over {', '.join(values)}: give one setting of it, "
                              f"e.g. setting = {example!r}")

    def parameters_for(self, profile: str) -> dict:
        """The values the run takes: the file's in the full profile; in the smoke profile the class defaults (the
        tiny model) under the file's run name."""
        if profile == "smoke":
            return {"run_name": self.run_name, "profile": "smoke"}
        return {**self.parameters, "profile": self.parameters.get("profile", profile)}


def read_spec(path) -> Spec:
    """Read and check a params file without building anything: unknown keys, a missing ``run_name``, an unknown
    notebook or parameter, a malformed sweep and every setting's values are one ParamsError naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if raw is None:
        raise ParamsError(f"{path} is empty: it needs 'notebook' and 'parameters'")
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping with the keys {', '.join(SPEC_KEYS)}")
    unknown = [k for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise ParamsError(f"{path}: unknown top-level key {unknown[0]!r} (a params file has {', '.join(SPEC_KEYS)})")
    if "notebook" not in raw:
        raise ParamsError(f"{path}: 'notebook' is missing")
    if raw["notebook"] not in NOTEBOOKS:
        raise ParamsError(f"{path}: unknown notebook {raw['notebook']!r}; known: {', '.join(NOTEBOOKS)}")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict) or not parameters.get("run_name"):
        raise ParamsError(f"{path}: parameters must be a mapping that sets run_name")
    sweep = raw.get("sweep") or {}
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ParamsError(f"{path}: sweep must map each axis to a non-empty list of values, got {sweep!r}")
    for axis, values in sweep.items():
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ParamsError(f"{path}: sweep.{axis} repeats a value: {values}")
    spec = Spec(str(path), raw["notebook"], parameters, sweep)
    cls = spec.params_class()
    for profile in ("full", "smoke"):
        for setting in spec.settings(profile):
            cls.from_spec(spec, setting, profile=profile)
    return spec
