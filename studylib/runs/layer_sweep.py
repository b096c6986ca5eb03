"""The prune-depth ablation (27_prune_depth): depths x strategies x (before, after recovery), resumable.

Every setting writes its own record, ``27_prune_depth/<run_name>-<strategy>-d<depth>-<stage>.json``, whose params
are those of the equivalent single run of ``25_layer_pruning`` (a :class:`LayerPruneParams`; ``recovery`` is
``none`` for the ``before`` stage). A setting whose record exists with identical params is skipped, so a killed
sweep resumes where it stopped.

The greedy (iterative) order is computed once, to the largest depth, and each depth removes its prefix: greedy
removal is nested, so the first ``d`` steps of a depth-``D`` selection are exactly a depth-``d`` selection. The
selection (order, every candidate's dev score) is stored in every iterative record and reused on resume when its
selection parameters match.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

from studylib.runs import compression
from studylib.methods import pruning
from studylib.core import records
from studylib.methods import layers as layer_methods
from studylib.runs.pruning_params import LayerPruneParams, LayerSelectionParams

STAGES = ("before", "after")


@dataclass(frozen=True)
class Setting:
    strategy: str
    depth: int
    stage: str

    @property
    def name(self) -> str:
        return f"{self.strategy}-d{self.depth}-{self.stage}"


def settings(cfg) -> list[Setting]:
    return [Setting(s, d, stage) for s in cfg.strategies for d in sorted(cfg.depths) for stage in STAGES]


def setting_params(cfg, setting: Setting) -> LayerPruneParams:
    """The params of one setting: the sweep's shared values, this strategy and depth, recovery or none."""
    shared = {name: getattr(cfg, name) for name in LayerSelectionParams.names()}
    shared.update(run_name=f"{cfg.run_name}-{setting.name}", strategy=setting.strategy, depth=setting.depth,
                  recovery=cfg.recovery if setting.stage == "after" else "none")
    return LayerPruneParams(**shared)


def _same(a: dict, b: dict) -> bool:
    """Same params, where the run read and wrote aside (a record made on the GPU machine counts here)."""
    return records.comparable_params(a) == records.comparable_params(b)


def done_record(notebook: str, scfg) -> dict | None:
    """The existing record of a setting when its params are identical (else None: the setting runs)."""
    if not records.record_matches(notebook, scfg.run_name, scfg.as_dict(), scfg.results_dir):
        return None
    return records.load_record(notebook, scfg.run_name, scfg.results_dir)


def selection_params(cfg) -> dict:
    """What the greedy order depends on (the data folder's path excluded: it is where, not what)."""
    step = cfg.layer_method("iterative", max(cfg.depths))
    step.pop("data_dir", None)
    return {"model_id": cfg.model_id, "dtype": cfg.dtype, "step": step}


def greedy_selection(cfg, model, tokenizer, notebook: str) -> dict:
    """The greedy order to ``max(depths)``: reused from an existing record of this sweep (not under ``pipeline
    --force``), or computed on a copy."""
    wanted = selection_params(cfg)
    for s in settings(cfg):
        if s.strategy != "iterative" or records.rerun_requested():
            continue
        rec = done_record(notebook, setting_params(cfg, s))
        sel = (rec or {}).get("layer_selection")
        if sel and _same(sel.get("selection_params", {}), wanted):
            return {**sel, "reused_from": rec["run"]}
    from studylib.methods import build

    work = copy.deepcopy(model)
    step = cfg.layer_method("iterative", max(cfg.depths))
    method = build(step.pop("method"), **step)
    start = time.perf_counter()
    method.apply(work, tokenizer)
    del work
    sel = method.info["selection"]
    return {**sel, "selection_params": wanted, "seconds": time.perf_counter() - start,
            "dev": method.info["dev"]}


def run_sweep(cfg, model, tokenizer, test_sets: dict, *, notebook: str = "27_prune_depth", progress=print) -> list:
    """Run every setting not yet recorded; returns ``[(setting name, "done" | "ran", record path)]``."""
    n_layers = len(pruning.decoder_layers(model))
    too_deep = [d for d in cfg.depths if d >= n_layers]
    if too_deep:
        raise ValueError(f"depths {too_deep} leave no layer of the model's {n_layers}")
    status = []
    todo = {s: setting_params(cfg, s) for s in settings(cfg)}
    forced = records.rerun_requested()  # pipeline --force: every setting runs again, the greedy order is recomputed
    done = {s: None if forced else done_record(notebook, p) for s, p in todo.items()}
    selection = None
    if any(s.strategy == "iterative" and done[s] is None for s in todo):
        selection = greedy_selection(cfg, model, tokenizer, notebook)
    for strategy in cfg.strategies:
        for depth in sorted(cfg.depths):
            pair = [Setting(strategy, depth, stage) for stage in STAGES]
            if all(done[s] is not None for s in pair):
                status += [(s.name, "done", str(records.record_path(notebook, todo[s].run_name, cfg.results_dir)))
                           for s in pair]
                continue
            work = copy.deepcopy(model)
            start = time.perf_counter()
            remove = (selection["order"][:depth] if strategy == "iterative"
                      else layer_methods.middle_block(n_layers, depth))
            change = layer_methods.remove_layers(work, remove)
            seconds = time.perf_counter() - start
            step = cfg.layer_method(strategy, depth)
            described = [{"method": step["method"], "family": "pruning",
                          "params": {k: v for k, v in step.items() if k != "method"},
                          "removal_order": remove, "seconds": seconds, **change,
                          **({"note": f"first {depth} steps of the greedy order computed to depth "
                                      f"{max(cfg.depths)} (greedy removal is nested)"}
                             if strategy == "iterative" else {"strategy": "middle"})}]
            extra_sel = {"layer_selection": selection} if strategy == "iterative" else {}
            for s in pair:
                scfg = todo[s]
                if done[s] is not None:
                    status.append((s.name, "done", str(records.record_path(notebook, scfg.run_name, cfg.results_dir))))
                    continue
                recovery = None
                if s.stage == "after":
                    work, recovery = pruning.recover(work, tokenizer, scfg)
                job = compression.CompressionJob(cfg=scfg, recipe=[], test_sets=test_sets, calibration=None,
                                                 described=copy.deepcopy(described), compress_seconds=seconds)
                record = compression.evaluate_and_record(
                    job, work, tokenizer, notebook=notebook,
                    extra={"setting": {"strategy": strategy, "depth": depth, "stage": s.stage,
                                       "sweep_run": cfg.run_name},
                           "recovery": recovery, **extra_sel})
                _check_record(record, n_layers - depth)
                path = records.write_record(record, cfg.results_dir)
                status.append((s.name, "ran", str(path)))
                if progress:
                    progress(f"{s.name}: en-xx chrF++ {record['averages'].get('en-xx', {}).get('chrf++')}")
            del work
    return status


def _check_record(record: dict, layers_left: int):
    """What every setting's record must show before it is written."""
    step = record["compression"]["recipe"][0]
    assert step["num_hidden_layers_after"] == layers_left, step
    assert step["params_after"] < step["params_before"], step
    assert record["efficiency"]["params"] == step["params_after"], (record["efficiency"]["params"], step)
