"""Sweeps: one notebook runs several settings of one knob; each setting is a run with its own record.

The knob (``sweep``) is a parameter of the recipe (``bits``, ``alpha``, ``sparsity``, ...) or ``calib_per_direction``.
Setting ``v`` becomes the run ``f"{run_name}-{label}{v}"`` (e.g. ``teacher-bits4``, ``teacher-calib128``) whose
params are the sweep's with that one value filled in (and ``values: [v]``), so a record says exactly what it is.
A sweep resumes: a setting whose record already exists with identical params is skipped, so a killed sweep redoes
only what is missing and a longer ``values`` list adds only the new settings. Every setting is validated when the
parameters are (``bits: [2, 5]`` fails before any model loads).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field

from studylib.core import records
from studylib.core.params import CompressParams, ParamsError, _check

LABELS = {"calib_per_direction": "calib"}  # short names in run names; others are used as they are




@dataclass
class SweepParams(CompressParams):
    """A compression notebook over several values of one knob (see the module docstring)."""

    sweep: str = "bits"
    values: list = field(default_factory=lambda: [4, 8])
    SPLIT_AXES = ("values",)  # the pipeline may run one value a job (a setting's params hold ``values: [v]``)

    def __post_init__(self):
        super().__post_init__()
        _check(isinstance(self.sweep, str) and self.sweep, f"sweep must name a recipe parameter or "
                                                           f"'calib_per_direction', got {self.sweep!r}")
        _check(isinstance(self.values, list) and self.values, f"values must be a non-empty list, got {self.values!r}")
        _check(len({json.dumps(v, sort_keys=True) for v in self.values}) == len(self.values),
               f"values repeat: {self.values}")
        for value in self.values:
            self._changes(value)  # every setting checked now, before any model loads

    def _step_index(self) -> int:
        """The recipe step the knob belongs to: the last whose method declares it."""
        from studylib.methods import build

        for i in range(len(self.recipe) - 1, -1, -1):
            params = {k: v for k, v in self.recipe[i].items() if k != "method"}
            if self.sweep in build(self.recipe[i]["method"], **params).params:
                return i
        raise ParamsError(f"sweep {self.sweep!r} is neither 'calib_per_direction' nor a parameter of any recipe step "
                          f"({', '.join(s['method'] for s in self.recipe)})")

    def _changes(self, value) -> dict:
        """The fields a setting changes; raises ParamsError for a value the method or the data cannot take."""
        from studylib.methods import MethodError, build_recipe

        if self.sweep == "calib_per_direction":
            _check(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                   f"calib_per_direction values must be positive integers, got {value!r}")
            return {"calib_per_direction": value}
        recipe = copy.deepcopy(self.recipe)
        recipe[self._step_index()][self.sweep] = value
        try:
            build_recipe(recipe)
        except MethodError as err:
            raise ParamsError(f"sweep value {self.sweep}={value!r}: {err}") from err
        return {"recipe": recipe}

    def expected_records(self) -> list[tuple[str, dict]]:
        """(run name, params) of every record the sweep writes: the pipeline skips it when all exist."""
        return [(sub.run_name, sub.as_dict()) for sub in (self.setting(v) for v in self.values)]

    def label(self, value) -> str:
        return f"{LABELS.get(self.sweep, self.sweep)}{value}"

    def setting(self, value) -> "SweepParams":
        """The parameters of one setting: its own run name, the value filled in, ``values: [value]``."""
        if value not in self.values:
            raise ParamsError(f"{value!r} is not one of the sweep's values {self.values}")
        return dataclasses.replace(self, run_name=f"{self.run_name}-{self.label(value)}", values=[value],
                                   **self._changes(value))


@dataclass
class Setting:
    value: object
    cfg: SweepParams
    done: bool
    parent: str

    @property
    def run(self) -> str:
        return self.cfg.run_name

    @property
    def method(self) -> str:
        return self.cfg.recipe[-1]["method"]

    def describe(self) -> dict:
        return {"parent_run": self.parent, "key": self.cfg.sweep, "value": self.value}


def is_done(notebook: str, cfg: CompressParams) -> bool:
    """A record for ``cfg.run_name`` exists and holds exactly these params (where-keys aside)."""
    return records.record_matches(notebook, cfg.run_name, cfg.as_dict(), cfg.results_dir)


def plan(cfg: SweepParams, notebook: str) -> list[Setting]:
    """Every setting of the sweep, in order, each marked done when its record already matches (never under
    ``pipeline --force``: :func:`studylib.core.records.rerun_requested`)."""
    out = []
    for value in cfg.values:
        sub = cfg.setting(value)
        done = records.resumable(notebook, sub.run_name, sub.as_dict(), sub.results_dir)  # --force: runs again
        out.append(Setting(value=value, cfg=sub, done=done, parent=cfg.run_name))
    return out


def summary(settings: list[Setting], notebook: str):
    """One row per setting from the records on disk: averages and efficiency (missing records: empty rows)."""
    import pandas as pd

    rows = []
    for s in settings:
        path = records.record_path(notebook, s.run, s.cfg.results_dir)
        row = {"run": s.run, s.cfg.sweep: s.value}
        if path.is_file():
            rec = json.loads(path.read_text(encoding="utf-8"))
            for group, scores in rec.get("averages", {}).items():
                for metric in ("bleu", "chrf++", "comet"):
                    if metric in scores:
                        row[f"{group} {metric}"] = scores[metric]
            eff = rec.get("efficiency", {})
            row.update({k: eff.get(k) for k in ("storage_gb", "time_per_token_ms", "peak_memory_gb")})
            row["compress_s"] = (rec.get("compression") or {}).get("seconds")
        rows.append(row)
    return pd.DataFrame(rows)
