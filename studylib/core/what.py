"""What a run is, stated in its record when it is made: family, method, variant, the study's sweep axes, its sweep.

Every table and figure groups runs by these fields (``record["what"]``), so they are declared, never read back from
names:

family
    declared by the run's parameter class (``FAMILY``): ``base``, ``teacher``, ``quantization``, ``pruning``,
    ``distillation``, ``efficiency``.
steps
    the compression steps the run applied, ``params["prune_recipe"]`` then ``params["recipe"]``; where the record's
    ``compression.recipe`` describes the steps (defaults filled in), those parameters are used.
method
    the step names joined with ``+`` (a student adds ``qlora``, after ``full-ft`` when it was fully fine-tuned); a
    teacher is ``teacher-<full|lora>``; the base is ``base`` (``base-<k>shot`` when prompted few-shot).
axes
    ``bits``, ``sparsity``, ``depth``: what the steps' methods declare (:meth:`studylib.methods.Method.axes`; the
    lowest bit width, the highest sparsity, the layers removed summed); ``recovery``: ``params["recovery"]`` of
    pruning runs, ``qlora`` for students (``full+qlora`` after a full fine-tuning); ``calib_per_direction``: when
    the run was calibrated; ``ood_total``: out-of-domain training pairs of students; ``kd``: whether a student
    learned from the teacher's translations.
variant
    the method with every step's parameters except the axes, e.g. ``gptq(group_size=128)``: the settings of one
    sweep share a variant and differ in their axes.
sweep
    ``{"parent": <the params file's run_name>, "axes": {name: value}}`` for one setting of a declared sweep, else
    None.
testset
    the name of the main test set (``wmt22`` for ALMA's layout, else the ``test_source``).
testsets
    ``{direction: true name}`` of the test set of each evaluated direction (:func:`studylib.core.data.testset_name`:
    ``wmt21`` for ALMA's is-en and en-is, ``wmt22`` for its other eight, ``wmt24``), None for a run with no test
    source and directions in its parameters. Records made before this field existed are read, never rewritten:
    :func:`testsets_of` derives their names from their parameters with the same function.
"""

from __future__ import annotations

import json

from studylib.core import data, languages

FAMILY_ORDER = ("base", "teacher", "quantization", "pruning", "distillation", "efficiency", "other")
AXES = ("bits", "sparsity", "depth", "recovery", "calib_per_direction", "ood_total")
COLUMNS = ("family", "method", "variant", *AXES, "kd")
# step parameters that say nothing about the compressed model (left out of the variant)
_NOISE_STEP_KEYS = frozenset({"batch_size", "data_dir", "seed", "directions", "prompt_style", "max_new_tokens",
                              "max_length"})


def steps(params: dict, compression: dict | None = None) -> list[dict]:
    """The run's compression steps as ``{"method": name, **params}``, defaults filled where the record says."""
    declared = [s for s in (params.get("prune_recipe") or []) + (params.get("recipe") or []) if isinstance(s, dict)]
    described = (compression or {}).get("recipe") or []
    described = [d for d in described if isinstance(d, dict) and "method" in d and isinstance(d.get("params"), dict)]
    if params.get("recipe") and len(described) == len(params["recipe"]):
        n_prune = len(declared) - len(params["recipe"])
        return declared[:n_prune] + [{"method": d["method"], **d["params"]} for d in described]
    if not declared and described:  # layer pruning named by strategy and depth: the steps that ran
        return [{"method": d["method"], **d["params"]} for d in described]
    return declared


def _step_axes(step: dict) -> dict:
    from studylib.methods import build

    return build(step["method"], **{k: v for k, v in step.items() if k != "method"}).axes()


def _value(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def _step_variant(step: dict, axis_keys) -> str:
    rest = {k: v for k, v in sorted(step.items())
            if k != "method" and k not in axis_keys and k not in _NOISE_STEP_KEYS and v is not None}
    inner = ",".join(f"{k}={_value(v)}" for k, v in rest.items())
    return f"{step.get('method')}({inner})" if inner else str(step.get("method"))


def testset(params: dict) -> str:
    """The main test set's name: ``wmt22`` for ALMA's layout (eight of its ten directions), else the source's."""
    return data.testset_name(params.get("test_source") or "alma")


def testsets(params: dict) -> dict | None:
    """``{direction: true test-set name}`` for the run's ``directions`` of its ``test_source``; None where the
    parameters name neither (a run that evaluates nothing)."""
    if "test_source" not in params and "directions" not in params:
        return None
    directions = languages.normalize_directions(params.get("directions") or "all")
    return data.testset_names(params.get("test_source") or "alma", directions)


def testsets_of(record: dict) -> dict:
    """A record's ``{direction: true test-set name}``: its ``what["testsets"]``, or, for a record made before that
    field, :func:`testsets` of its parameters (the function new records are labelled with); ``{}`` for none."""
    stated = record.get("what") or {}
    names = stated["testsets"] if "testsets" in stated else testsets(record.get("params") or {})
    return dict(names or {})


def describe(family: str, params: dict, compression: dict | None = None, sweep: dict | None = None,
             method: str | None = None) -> dict:
    """The ``what`` block of a record (see the module docstring); values a run does not have are None. ``method``
    names a run that applies no compression step and is neither base nor teacher (e.g. ``kd-data``)."""
    if family not in FAMILY_ORDER:
        raise ValueError(f"family {family!r} is not one of {FAMILY_ORDER}")
    run_steps = steps(params, compression)
    axes = [_step_axes(s) for s in run_steps]
    names = [str(s["method"]) for s in run_steps]
    variants = [_step_variant(s, {"bits", "w_bits", "wbits", "weight_bits", "sparsity", "depth"}) for s in run_steps]
    out = dict.fromkeys(COLUMNS)
    out["family"] = family
    is_student = family == "distillation" and "qlora_r" in params
    if family == "base":
        shots = params.get("shots") or 0
        out["method"] = out["variant"] = f"base-{shots}shot" if shots else "base"
    elif family == "teacher":
        out["method"] = out["variant"] = f"teacher-{params.get('method', 'full')}"
    elif family == "efficiency":
        out["method"] = out["variant"] = str(params.get("variant") or method or "benchmark")
    else:
        if is_student:
            if params.get("full_ft_epochs"):  # Model B as Moslem's: the pruned student fully fine-tuned first
                names.append("full-ft")
                variants.append(f"full-ft(epochs={_value(params['full_ft_epochs'])},"
                                f"lr={_value(params.get('full_ft_learning_rate'))})")
            names.append("qlora")
            variants.append(f"qlora(r={params.get('qlora_r')})")
            if params.get("kd_data"):
                variants.append("kd")
        out["method"] = "+".join(names) or method or family
        out["variant"] = "+".join(variants) or method or family
    bits = [float(a["bits"]) for a in axes if a.get("bits") is not None]
    out["bits"] = min(bits) if bits else None
    sparsity = [float(a["sparsity"]) for a in axes if a.get("sparsity") is not None]
    out["sparsity"] = max(sparsity) if sparsity else None
    depth = [a["depth"] for a in axes if a.get("depth") is not None]
    out["depth"] = float(sum(depth)) if depth else None
    if "recovery" in params:
        out["recovery"] = str(params["recovery"] or "none")
    elif is_student:
        out["recovery"] = "full+qlora" if params.get("full_ft_epochs") else "qlora"
    if (compression or {}).get("calibration") and isinstance(params.get("calib_per_direction"), int):
        out["calib_per_direction"] = float(params["calib_per_direction"])
    if isinstance(params.get("ood_total"), int) and not isinstance(params.get("ood_total"), bool):
        out["ood_total"] = float(params["ood_total"])
    if "kd_data" in params:
        out["kd"] = bool(params.get("kd_data"))
    out["sweep"] = sweep
    out["testset"] = testset(params)
    out["testsets"] = testsets(params)
    if method == "decoding":  # 02_decoding reads the dev split alone, never a test set
        out["testset"], out["testsets"] = "alma-dev", None
    return out
