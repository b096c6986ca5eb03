"""What a run is, read from its record: family, method, and the values of the study's sweep axes.

The summary table (:func:`studylib.core.records.summary_table`) carries these columns so that every table and figure is
drawn from the summary alone. The rules, in one place:

family
    from the notebook's number: ``00`` base, ``01`` teacher, ``10``-``19`` quantization, ``20``-``29`` pruning,
    ``30``-``39`` distillation (KD, QLoRA students, out-of-domain data), ``40``-``49`` efficiency (the 7B-architecture
    benchmark: no translation scores, so no summary rows), anything else ``other``.
steps
    the compression steps a run applied: ``params["prune_recipe"]`` then ``params["recipe"]`` (lists of
    ``{"method": name, **params}``). Where the record's ``compression.recipe`` describes the steps (with their
    defaults filled in), those parameters are used.
method
    the step names joined with ``+`` (a student adds ``qlora``); a teacher is ``teacher-full`` / ``teacher-lora``;
    the base is ``base`` (``base-3shot`` when prompted few-shot).
axes (one column each; empty where a run has no such value)
    ``bits``: a step's ``bits`` (or ``w_bits``, ``wbits``, ``weight_bits``), else 8 / 4 for bitsandbytes-style
    names (``int8``, ``8bit`` / ``nf4``, ``fp4``, ``4bit``);
    ``sparsity``: a step's ``sparsity`` (N:M as ``1 - n/m``);
    ``depth``: decoder layers removed (the ``depth`` of ``layer-prune-*`` steps, summed; else ``params["depth"]``
    of a layer-pruning run named by ``strategy`` and ``depth``);
    ``recovery``: ``params["recovery"]`` (``none``, ``full``, ``lora``) of pruning runs, ``qlora`` for students;
    ``calib_per_direction``: ``params["calib_per_direction"]`` when the run was calibrated (its record's
    ``compression.calibration`` is set);
    ``ood_total``: ``params["ood_total"]`` (out-of-domain training pairs) of students.
variant
    the method with every step's parameters *except* the axes, e.g. ``gptq(group_size=128)``: runs of one sweep
    share a variant and differ in one axis.
"""

from __future__ import annotations

import json
import math
import re

FAMILIES = (
    ((0, 0), "base"),
    ((1, 1), "teacher"),
    ((10, 19), "quantization"),
    ((20, 29), "pruning"),
    ((30, 39), "distillation"),
    ((40, 49), "efficiency"),
)
FAMILY_ORDER = ("base", "teacher", "quantization", "pruning", "distillation", "efficiency", "other")
AXES = ("bits", "sparsity", "depth", "recovery", "calib_per_direction", "ood_total")
BITS_KEYS = ("bits", "w_bits", "wbits", "weight_bits")
# step parameters that are sweep axes (left out of the variant)
_AXIS_STEP_KEYS = frozenset(BITS_KEYS) | {"sparsity", "depth"}
# step parameters that say nothing about the compressed model (left out of the variant)
_NOISE_STEP_KEYS = frozenset({"batch_size", "data_dir", "seed", "directions", "prompt_style", "max_new_tokens",
                              "max_length"})
COLUMNS = ("family", "method", "variant", *AXES, "kd")


def notebook_number(notebook: str) -> int | None:
    m = re.match(r"(\d+)", notebook or "")
    return int(m.group(1)) if m else None


def family(notebook: str) -> str:
    number = notebook_number(notebook)
    for (low, high), name in FAMILIES:
        if number is not None and low <= number <= high:
            return name
    return "other"


def steps(record: dict) -> list[dict]:
    """The run's compression steps as ``{"method": name, **params}``, defaults filled where the record says."""
    params = record.get("params") or {}
    declared = [s for s in (params.get("prune_recipe") or []) + (params.get("recipe") or []) if isinstance(s, dict)]
    described = ((record.get("compression") or {}).get("recipe")) or []
    described = [d for d in described if isinstance(d, dict) and "method" in d and isinstance(d.get("params"), dict)]
    if params.get("recipe") and len(described) == len(params["recipe"]):
        # the compression notebook's own description, in the recipe's order (prune_recipe steps precede it)
        n_prune = len(declared) - len(params["recipe"])
        return declared[:n_prune] + [{"method": d["method"], **d["params"]} for d in described]
    if not declared and described:
        # notebooks whose params name the method indirectly (25/27: strategy + depth) record the steps that ran
        return [{"method": d["method"], **d["params"]} for d in described]
    return declared


def _bits(step: dict) -> float | None:
    for key in BITS_KEYS:
        if isinstance(step.get(key), (int, float)) and not isinstance(step.get(key), bool):
            return float(step[key])
    name = str(step.get("method", "")).lower()
    if "int8" in name or "8bit" in name:
        return 8.0
    if any(tag in name for tag in ("nf4", "fp4", "4bit")):
        return 4.0
    return None


def _sparsity(step: dict) -> float | None:
    n, m = step.get("n"), step.get("m")
    if isinstance(n, int) and isinstance(m, int) and m > 0:
        return 1.0 - n / m
    s = step.get("sparsity")
    return float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None


def _value(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def step_variant(step: dict) -> str:
    rest = {k: v for k, v in sorted(step.items())
            if k != "method" and k not in _AXIS_STEP_KEYS and k not in _NOISE_STEP_KEYS and v is not None}
    inner = ",".join(f"{k}={_value(v)}" for k, v in rest.items())
    return f"{step.get('method')}({inner})" if inner else str(step.get("method"))


def describe(record: dict) -> dict:
    """The catalog columns of one record (see the module docstring); missing values are None."""
    params = record.get("params") or {}
    nb = record.get("notebook", "")
    fam = family(nb)
    run_steps = steps(record)
    names = [str(s.get("method")) for s in run_steps]
    variants = [step_variant(s) for s in run_steps]
    out = dict.fromkeys(COLUMNS)
    out["family"] = fam
    is_student = fam == "distillation" and "qlora_r" in params
    if fam == "base":
        shots = params.get("shots") or 0
        out["method"] = out["variant"] = f"base-{shots}shot" if shots else "base"
    elif fam == "teacher":
        out["method"] = out["variant"] = f"teacher-{params.get('method', 'full')}"
    else:
        if is_student:
            names.append("qlora")
            variants.append(f"qlora(r={params.get('qlora_r')})")
            if params.get("kd_data"):
                variants.append("kd")
        out["method"] = "+".join(names) or nb
        out["variant"] = "+".join(variants) or nb
    bits = [b for b in (_bits(s) for s in run_steps) if b is not None]
    out["bits"] = min(bits) if bits else None
    sparsity = [x for x in (_sparsity(s) for s in run_steps) if x is not None]
    out["sparsity"] = max(sparsity) if sparsity else None
    depth = [s["depth"] for s in run_steps if str(s.get("method", "")).startswith("layer-prune")
             and isinstance(s.get("depth"), int)]
    if not depth and isinstance(params.get("depth"), int) and "strategy" in params:
        depth = [params["depth"]]  # layer pruning named by strategy + depth in the params
    out["depth"] = float(sum(depth)) if depth else None
    if "recovery" in params:
        out["recovery"] = str(params["recovery"] or "none")
    elif is_student:
        out["recovery"] = "qlora"
    calibrated = (record.get("compression") or {}).get("calibration")
    if calibrated and isinstance(params.get("calib_per_direction"), int):
        out["calib_per_direction"] = float(params["calib_per_direction"])
    if isinstance(params.get("ood_total"), int) and not isinstance(params.get("ood_total"), bool):
        out["ood_total"] = float(params["ood_total"])
    if "kd_data" in params:
        out["kd"] = bool(params.get("kd_data"))
    return out


def testset(record: dict) -> str:
    """The name of the record's main test set: ``wmt22`` for ALMA's layout, else ``test_source`` itself."""
    source = (record.get("params") or {}).get("test_source", "alma")
    return "wmt22" if source == "alma" else str(source).rsplit("/", 1)[-1]


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
