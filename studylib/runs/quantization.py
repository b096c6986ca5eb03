"""The quantization notebooks (10-16): their parameter classes and the checks every record passes before it is written.

Methods live in :mod:`studylib.methods` (``bnb.py``, ``gptq.py``, ``smoothquant.py``, ``gguf_grid.py``); the notebooks share
:mod:`studylib.runs.compression`. Each notebook runs one method, so its parameter class fixes the recipe's method and
gives the smoke defaults (tiny model, CPU); ``params/1*.yaml`` set the real runs.

=====================  ==========================  =============================================================
notebook               class                       recipe (smoke default)
=====================  ==========================  =============================================================
10_bnb_int8            ``BnbInt8Params``           ``bnb-int8`` (threshold 6.0)
11_bnb_nf4             ``BnbNF4Params``            ``bnb-nf4`` (double quant, bf16 compute)
12_gptq                ``GPTQParams``              ``gptq`` 4-bit, group 32 (128 in the real runs)
13_smoothquant         ``SmoothQuantParams``       ``smoothquant`` α 0.5, W8A8
14_smoothquant_nf4     ``SmoothQuantNF4Params``    ``smoothquant-nf4`` α 0.5
15_gptq_bits           ``GPTQBitsParams``          ``gptq``, sweep ``bits`` over 2, 3, 4, 8
16_calibration_size    ``CalibrationSizeParams``   ``gptq`` or ``smoothquant``, sweep ``calib_per_direction``
17_gguf_grid           ``GGUFGridParams``          ``gguf-grid`` on the tiny model's own GGUF (the control)
=====================  ==========================  =============================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from studylib.runs.params import CompressParams, ParamsError


def _require_method(recipe, allowed: tuple[str, ...], notebook: str):
    if not (isinstance(recipe, list) and len(recipe) == 1 and isinstance(recipe[0], dict)
            and recipe[0].get("method") in allowed):
        raise ParamsError(f"{notebook} runs {' or '.join(map(repr, allowed))}: recipe must be "
                          f"[{{'method': {allowed[0]!r}, ...}}], got {recipe!r}")


@dataclass
class BnbInt8Params(CompressParams):
    """10_bnb_int8: LLM.int8() through bitsandbytes."""

    NOTEBOOK: ClassVar[str] = "10_bnb_int8"
    FAMILY: ClassVar[str] = "quantization"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 5.0

    recipe: list = field(default_factory=lambda: [{"method": "bnb-int8", "threshold": 6.0}])

    def __post_init__(self):
        super().__post_init__()
        _require_method(self.recipe, ("bnb-int8",), "10_bnb_int8")


@dataclass
class BnbNF4Params(CompressParams):
    """11_bnb_nf4: NF4 with double quantization, bf16 compute, through bitsandbytes."""

    NOTEBOOK: ClassVar[str] = "11_bnb_nf4"
    FAMILY: ClassVar[str] = "quantization"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 5.0

    recipe: list = field(default_factory=lambda: [{"method": "bnb-nf4", "double_quant": True,
                                                   "compute_dtype": "bfloat16"}])

    def __post_init__(self):
        super().__post_init__()
        _require_method(self.recipe, ("bnb-nf4",), "11_bnb_nf4")


@dataclass
class GPTQParams(CompressParams):
    """12_gptq: GPTQ through GPTQModel, kernels chosen at load (recorded)."""

    NOTEBOOK: ClassVar[str] = "12_gptq"
    FAMILY: ClassVar[str] = "quantization"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 5.0

    recipe: list = field(default_factory=lambda: [{"method": "gptq", "bits": 4, "group_size": 32, "act_order": False,
                                                   "damp": 0.01}])

    def __post_init__(self):
        super().__post_init__()
        _require_method(self.recipe, ("gptq",), "12_gptq")


@dataclass
class SmoothQuantParams(CompressParams):
    """13_smoothquant: smoothing + W8A8 (int8 per-channel weights, int8 per-token activations)."""

    NOTEBOOK: ClassVar[str] = "13_smoothquant"
    FAMILY: ClassVar[str] = "quantization"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 5.0

    recipe: list = field(default_factory=lambda: [{"method": "smoothquant", "alpha": 0.5}])

    def __post_init__(self):
        super().__post_init__()
        _require_method(self.recipe, ("smoothquant",), "13_smoothquant")


@dataclass
class SmoothQuantNF4Params(CompressParams):
    """14_smoothquant_nf4: smoothing, then NF4 weights."""

    NOTEBOOK: ClassVar[str] = "14_smoothquant_nf4"
    FAMILY: ClassVar[str] = "quantization"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 5.0

    recipe: list = field(default_factory=lambda: [{"method": "smoothquant-nf4", "alpha": 0.5}])

    def __post_init__(self):
        super().__post_init__()
        _require_method(self.recipe, ("smoothquant-nf4",), "14_smoothquant_nf4")


@dataclass
class GPTQBitsParams(GPTQParams):
    """15_gptq_bits: GPTQ at one bit width, everything else fixed; the params file sweeps ``bits``."""

    NOTEBOOK: ClassVar[str] = "15_gptq_bits"
    SMOKE_SWEEP: ClassVar[dict] = {"bits": [2, 4]}

    def __post_init__(self):
        CompressParams.__post_init__(self)
        _require_method(self.recipe, ("gptq",), "15_gptq_bits")


@dataclass
class CalibrationSizeParams(CompressParams):
    """16_calibration_size: GPTQ or SmoothQuant with ``calib_per_direction`` texts; the params file sweeps it."""

    recipe: list = field(default_factory=lambda: [{"method": "gptq", "bits": 4, "group_size": 32, "act_order": False,
                                                   "damp": 0.01}])

    NOTEBOOK: ClassVar[str] = "16_calibration_size"
    FAMILY: ClassVar[str] = "quantization"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 5.0
    SMOKE_SWEEP: ClassVar[dict] = {"calib_per_direction": [1, 2]}

    def __post_init__(self):
        super().__post_init__()
        _require_method(self.recipe, ("gptq", "smoothquant", "smoothquant-nf4"), "16_calibration_size")


@dataclass
class FP8Params(CompressParams):
    """18_fp8: FP8 W8A8 (llm-compressor's FP8_DYNAMIC), served by vLLM from its compressed-tensors checkpoint."""

    NOTEBOOK: ClassVar[str] = "18_fp8"
    FAMILY: ClassVar[str] = "quantization"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 4.0

    recipe: list = field(default_factory=lambda: [{"method": "fp8"}])

    def __post_init__(self):
        super().__post_init__()
        _require_method(self.recipe, ("fp8",), "18_fp8")


@dataclass
class AWQParams(CompressParams):
    """19_awq: AWQ W4A16 (llm-compressor's AWQModifier) on calibration texts, served by vLLM's Marlin kernel."""

    NOTEBOOK: ClassVar[str] = "19_awq"
    FAMILY: ClassVar[str] = "quantization"
    GPU: ClassVar[str] = "exclusive"  # times compression and decoding
    H200_MINUTES: ClassVar[float] = 6.0

    recipe: list = field(default_factory=lambda: [{"method": "awq", "bits": 4, "group_size": 32}])

    def __post_init__(self):
        super().__post_init__()
        _require_method(self.recipe, ("awq",), "19_awq")


# --------------------------------------------------------------------------------------------- checks

def _fail(msg):
    raise AssertionError(msg)


def calibration_sentences(texts) -> set[str]:
    """The sentences inside calibration texts (each line without its ``Language:`` prefix)."""
    out = set()
    for text in texts:
        for line in text.split("\n"):
            out.add(line.split(": ", 1)[-1].strip())
    return out


@dataclass
class GGUFGridParams(CompressParams):
    """17_gguf_grid: the control for the base model's origin -- the model's weights rounded back onto the base GGUF's
    own block grids (:mod:`studylib.methods.gguf_grid`), evaluated like any compressed model."""

    NOTEBOOK: ClassVar[str] = "17_gguf_grid"
    FAMILY: ClassVar[str] = "quantization"
    GPU: ClassVar[str] = "exclusive"  # times decoding
    H200_MINUTES: ClassVar[float] = 4.0

    recipe: list = field(default_factory=lambda: [{"method": "gguf-grid", "base": "tiny-gemma3"}])

    def __post_init__(self):
        super().__post_init__()
        _require_method(self.recipe, ("gguf-grid",), "17_gguf_grid")


def check_record(record: dict, job, method: str) -> None:
    """What every quantization record must satisfy before it is written (AssertionError naming what failed)."""
    cfg = job.cfg
    if set(record["metrics"]) != set(cfg.directions):
        _fail(f"directions scored {sorted(record['metrics'])} != asked {cfg.directions}")
    for d, s in record["metrics"].items():
        if s["n"] != len(job.test_sets[d]):
            _fail(f"{d}: {s['n']} segments scored of {len(job.test_sets[d])}")
        for m in ("bleu", "chrf", "chrf++"):
            if m in s and not 0 <= s[m] <= 100:
                _fail(f"{d}: {m} = {s[m]} outside [0, 100]")
    eff = record["efficiency"]
    if not eff.get("time_per_token_ms", 0) > 0:
        _fail(f"no decode timing in the record: {eff.get('time_per_token_ms')!r}")
    comp = record["compression"]
    steps = comp["recipe"]
    if [s["method"] for s in steps] != [method]:
        _fail(f"recipe ran {[s['method'] for s in steps]}, expected [{method!r}]")
    if not (isinstance(comp["seconds"], float) and comp["seconds"] > 0):
        _fail(f"compression time missing: {comp['seconds']!r}")
    step = steps[-1]
    if not step.get("kernel") and not (step.get("nf4") or {}).get("kernel"):
        _fail(f"{method}: the record does not say which kernel runs")
    if job.calibration is not None:
        calib = comp["calibration"]
        expected = {d: cfg.calib_per_direction for d in cfg.calib_directions}
        if calib["per_direction"] != expected:
            _fail(f"calibration not balanced as asked: {calib['per_direction']} != {expected}")
        # independent of the loader's own guard: no evaluated sentence is inside the calibration texts
        inside = calibration_sentences(job.calibration.texts)
        leaked = [ex.src for exs in job.test_sets.values() for ex in exs if ex.src.strip() in inside or ex.tgt.strip() in inside]
        if leaked:
            _fail(f"test sentences found in the calibration texts: {leaked[:3]}")
    if cfg.choose_on_dev:
        choice = comp.get("dev_choice") or {}
        (key, values), = cfg.choose_on_dev.items()
        if [t["value"] for t in choice.get("tried", [])] != values or step["params"].get(key) != choice.get("chosen"):
            _fail(f"choose_on_dev {key}: the record does not show every value tried on dev and the one applied")
        dev = {(ex.src, ex.tgt) for ex in job.dev.examples}
        if any((ex.src, ex.tgt) in dev for exs in job.test_sets.values() for ex in exs):
            _fail("a dev pair used for choose_on_dev is in a test set")
    if method in ("smoothquant", "smoothquant-nf4") and "smoothing_check" not in step:
        _fail("smoothquant: the smoothing identity check is missing from the record")
    if method == "gptq" and step.get("modules", 0) < 1:
        _fail("gptq: no module was quantized")
