"""Compression methods behind one registry; recipes compose them in order (e.g. Wanda then GPTQ).

Each method is a small class with one lifecycle, in the spirit of llm-compressor's modifiers:

    method = build("gptq", bits=4, group_size=128)   # parameters checked here, before any model loads
    model = method.apply(model, tokenizer, calibration)  # compress (calibration: list of texts, or None)
    method.describe()                                 # what ran, for the record (kernel, timings, ...)

One file per method family registers its classes with :func:`register`. A recipe is a list of
``{"method": name, **params}`` steps applied in order by :func:`apply_recipe`.
"""

from __future__ import annotations

import time
from typing import ClassVar


class MethodError(ValueError):
    """A method name or parameter the study cannot run with."""


class Method:
    """Base class: subclasses set the class attributes and implement ``check`` and ``apply``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""  # "quantization" | "pruning" | ...
    paper: ClassVar[str] = ""  # the method's reference, for the record and the docs
    needs_calibration: ClassVar[bool] = False
    needs_cuda: ClassVar[bool] = False
    defaults: ClassVar[dict] = {}

    def __init__(self, **params):
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise MethodError(f"{self.name} has no parameter {', '.join(unknown)}; it takes {', '.join(self.defaults) or 'none'}")
        self.params = {**self.defaults, **params}
        self.info: dict = {}
        self.check()

    def check(self) -> None:
        """Raise MethodError for bad parameter values (called at construction, before any model loads)."""

    def apply(self, model, tokenizer, calibration: list[str] | None = None):
        raise NotImplementedError

    def describe(self) -> dict:
        return {"method": self.name, "family": self.family, "paper": self.paper, "params": dict(self.params), **self.info}

    def axes(self) -> dict:
        """The study's sweep axes this step sets (``bits``, ``sparsity``, ``depth``), declared by each method: what
        a record says the compressed model is, so that no report reads it back from parameter names."""
        return {}


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"method name {cls.name!r} missing or registered twice")
    REGISTRY[cls.name] = cls
    return cls


def _load_families() -> None:
    """Import every family module so that its methods register themselves."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def available() -> list[str]:
    _load_families()
    return sorted(REGISTRY)


def build(name: str, **params) -> Method:
    _load_families()
    if name not in REGISTRY:
        raise MethodError(f"unknown method {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**params)


def build_recipe(steps: list[dict]) -> list[Method]:
    """``[{"method": "wanda", "sparsity": 0.5}, {"method": "gptq", "bits": 4}]`` -> methods, all checked."""
    if not isinstance(steps, list) or not steps:
        raise MethodError("a recipe is a non-empty list of {'method': name, ...} steps")
    methods = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or "method" not in step:
            raise MethodError(f"recipe step {i} must be a mapping with a 'method' key, got {step!r}")
        params = {k: v for k, v in step.items() if k != "method"}
        methods.append(build(step["method"], **params))
    return methods


def apply_recipe(model, tokenizer, recipe: list[Method], calibration: list[str] | None = None):
    """Apply each method in order; returns (model, [descriptions with seconds]). A checkpoint a method kept for vLLM
    (:func:`studylib.core.engines.keep_checkpoint`) stops standing for the model once a later method changes it."""
    from studylib.core.engines import CHECKPOINT

    described = []
    for method in recipe:
        if method.needs_calibration and not calibration:
            raise MethodError(f"{method.name} needs calibration texts")
        if hasattr(model, CHECKPOINT):
            delattr(model, CHECKPOINT)
        start = time.perf_counter()
        model = method.apply(model, tokenizer, calibration)
        described.append({**method.describe(), "seconds": time.perf_counter() - start})
    return model, described
