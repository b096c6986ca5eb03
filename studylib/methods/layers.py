"""Layer pruning: decoder layers really removed (fewer parameters, smaller checkpoint, faster decoding).

``layer-prune-greedy`` (iterative layer pruning, as in Moslem et al., WMT 2025 "Iterative Layer Pruning for
Efficient Translation Inference"): at each of ``depth`` steps, every remaining layer is tried out -- the model
without it translates a small dev set (greedy, with the run's repetition penalty, as its test is decoded) -- and
the layer whose removal costs least chrF++ (or chrF) is removed for good. The dev set is ALMA's dev split,
``dev_per_direction`` pairs of each direction, with every pair sharing a sentence with any test set dropped and the
rest asserted disjoint (:func:`studylib.methods.devset.dev_examples`); the score is the mean over directions of the
corpus metric. The removal order, the dev score after each step and
every candidate's score are recorded. Greedy removal is nested: the first ``d`` steps of a depth-``D`` run are a
depth-``d`` run.

``layer-prune-listed``: remove the layers another run chose (its recorded removal order), so that the runs of a
sweep (students with seeds and learning rates) share one selection instead of each repeating it.

``layer-prune-middle``: remove the ``depth`` consecutive layers centred in the stack (layers
``(L - depth) // 2 .. (L - depth) // 2 + depth - 1``), no data needed -- the baseline for the greedy order.

Both rebuild ``model.model.layers`` without the removed layers and update the config (``num_hidden_layers``,
``layer_types`` -- each kept layer keeps its own attention type, sliding or full) and each kept layer's
``layer_idx`` (its slot in the KV cache), so the pruned model generates, saves and reloads with stock
transformers.
"""

from __future__ import annotations

import logging

from studylib.methods import devset, pruning
from . import Method, MethodError, register

log = logging.getLogger(__name__)
SELECTION_METRICS = ("chrf", "chrf++")


def keep_layers(model, keep: list[int], originals=None):
    """Make the model's decoder consist of ``originals[i] for i in keep`` (``originals``: the full list of layer
    modules to choose from; default: the current layers). Config and layer indices follow."""
    import torch.nn as nn

    inner = model.model
    current = list(inner.layers)
    originals = list(originals if originals is not None else current)
    # each layer's attention type (sliding / full) belongs to the layer: read it from the module, else from the
    # config while the config still describes the current layers
    types = [getattr(getattr(layer, "self_attn", None), "layer_type", None) for layer in originals]
    if any(t is None for t in types):
        config_types = getattr(model.config, "layer_types", None)
        types = None
        if config_types and originals == current and len(config_types) == len(current):
            types = list(config_types)
        elif config_types:
            raise ValueError("cannot tell the kept layers' attention types: layers carry no layer_type")
    new_layers = [originals[i] for i in keep]
    for new_idx, layer in enumerate(new_layers):
        layer.layer_idx = new_idx
        if hasattr(layer, "self_attn"):
            layer.self_attn.layer_idx = new_idx
    inner.layers = nn.ModuleList(new_layers)
    model.config.num_hidden_layers = len(new_layers)
    if types is not None:
        model.config.layer_types = [types[i] for i in keep]
    return model


def remove_layers(model, remove: list[int]) -> dict:
    """Remove the decoder layers at (current) indices ``remove``, for good. Returns what changed."""
    n = len(pruning.decoder_layers(model))
    bad = [i for i in remove if not 0 <= i < n]
    if bad or len(set(remove)) != len(remove):
        raise ValueError(f"cannot remove layers {remove} from a model of {n} layers")
    if len(remove) >= n:
        raise ValueError(f"removing {len(remove)} of {n} layers leaves none")
    before = sum(p.numel() for p in model.parameters())
    keep = [i for i in range(n) if i not in set(remove)]
    keep_layers(model, keep)
    after = sum(p.numel() for p in model.parameters())
    return {"num_hidden_layers_before": n, "num_hidden_layers_after": len(keep), "kept": keep,
            "params_before": before, "params_after": after,
            "layer_types_after": list(getattr(model.config, "layer_types", None) or [])}  # Llama: none


def middle_block(n_layers: int, depth: int) -> list[int]:
    start = (n_layers - depth) // 2
    return list(range(start, start + depth))


def greedy_order(model, tokenizer, dev, depth: int, *, metric: str, style: str, batch_size: int,
                 max_new_tokens: int, repetition_penalty: float = 1.0, progress: bool = True) -> dict:
    """The greedy removal order (original layer indices) to ``depth``, with the dev score of every candidate at
    every step. Leaves the model with those layers removed."""
    from tqdm.auto import tqdm

    originals = list(pruning.decoder_layers(model))
    n = len(originals)
    if not 0 < depth < n:
        raise ValueError(f"depth must be in 1..{n - 1} for a model of {n} layers, got {depth}")
    score = lambda: devset.dev_score(model, tokenizer, dev, metric=metric, style=style,  # noqa: E731
                                      batch_size=batch_size, max_new_tokens=max_new_tokens,
                                      repetition_penalty=repetition_penalty)
    base = score()
    remaining = list(range(n))
    steps = []
    bar = tqdm(total=sum(n - s for s in range(depth)), desc="greedy layer selection", disable=not progress)
    try:
        for _ in range(depth):
            candidates = {}
            for layer in remaining:
                keep_layers(model, [i for i in remaining if i != layer], originals)
                candidates[layer] = score()["score"]
                bar.update(1)
            best = max(remaining, key=lambda i: (candidates[i], -i))  # ties: the lower index
            remaining.remove(best)
            steps.append({"removed": best, "dev_score": candidates[best],
                          "candidates": {str(k): v for k, v in candidates.items()}})
            log.info("greedy step %d: removed layer %d (dev %s %.2f)", len(steps), best, metric, candidates[best])
    finally:
        bar.close()
        keep_layers(model, remaining, originals)
    return {"order": [s["removed"] for s in steps], "steps": steps, "dev_score_before": base["score"],
            "dev_per_direction_before": base["per_direction"], "remaining": remaining}


class _LayerPrune(Method):
    family = "pruning"
    defaults = {"depth": 2}

    def axes(self):
        return {"depth": self.params["depth"]}

    def check(self):
        d = self.params["depth"]
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise MethodError(f"depth (layers to remove) must be a positive integer, got {d!r}")

    def _finish(self, model, removed_original: list[int], n_before: int, params_before: int):
        self.info.update(removal_order=removed_original, num_hidden_layers_before=n_before,
                         num_hidden_layers_after=len(pruning.decoder_layers(model)),
                         params_before=params_before, params_after=sum(p.numel() for p in model.parameters()),
                         layer_types_after=list(getattr(model.config, "layer_types", []) or []))


@register
class LayerPruneMiddle(_LayerPrune):
    name = "layer-prune-middle"
    paper = "middle-block layer removal (baseline for iterative layer pruning, Moslem et al. 2025)"

    def apply(self, model, tokenizer, calibration=None):
        n = len(pruning.decoder_layers(model))
        if self.params["depth"] >= n:
            raise MethodError(f"depth {self.params['depth']} leaves no layer of {n}")
        block = middle_block(n, self.params["depth"])
        before = sum(p.numel() for p in model.parameters())
        remove_layers(model, block)
        self._finish(model, block, n, before)
        self.info["strategy"] = "middle"
        return model


@register
class LayerPruneGreedy(_LayerPrune):
    name = "layer-prune-greedy"
    paper = "Moslem et al. 2025 (WMT), Iterative Layer Pruning for Efficient Translation Inference"
    defaults = {"depth": 2, "metric": "chrf++", "dev_per_direction": 10, "directions": "all", "seed": 0,
                "prompt_style": "alma", "batch_size": 16, "max_new_tokens": 64, "repetition_penalty": 1.0,
                "data_dir": None}

    def check(self):
        super().check()
        from studylib.core.engines import check_repetition_penalty

        p = self.params
        if p["metric"] not in SELECTION_METRICS:
            raise MethodError(f"metric must be one of {SELECTION_METRICS}, got {p['metric']!r}")
        devset.check_dev_selection_params(p, ("dev_per_direction", "batch_size", "max_new_tokens"), MethodError)
        try:
            check_repetition_penalty(p["repetition_penalty"])
        except ValueError as err:
            raise MethodError(f"layer-prune-greedy: {err}") from None

    def apply(self, model, tokenizer, calibration=None):
        p = self.params
        n = len(pruning.decoder_layers(model))
        if p["depth"] >= n:
            raise MethodError(f"depth {p['depth']} leaves no layer of {n}")
        dev = devset.dev_examples(p["directions"], p["dev_per_direction"], seed=p["seed"], root=p["data_dir"])
        before = sum(x.numel() for x in model.parameters())
        selection = greedy_order(model, tokenizer, dev, p["depth"], metric=p["metric"], style=p["prompt_style"],
                                 batch_size=p["batch_size"], max_new_tokens=p["max_new_tokens"],
                                 repetition_penalty=p["repetition_penalty"])
        self._finish(model, selection["order"], n, before)
        self.info.update(strategy="iterative", selection=selection, dev=dev.describe())
        return model


@register
class LayerPruneListed(_LayerPrune):
    """The decoder layers at ``layers`` (indices in the model as given) removed: an order chosen elsewhere, e.g. by a
    ``layer-prune-greedy`` run on the same model, reused without selecting again. ``selected_by`` names where the
    order comes from (the record), for the record of this run."""

    name = "layer-prune-listed"
    paper = "a removal order chosen by iterative layer pruning (Moslem et al. 2025) in another run, reused"
    defaults = {"layers": None, "selected_by": None}

    def axes(self):
        return {"depth": len(self.params["layers"])}

    def check(self):
        layers = self.params["layers"]
        if not isinstance(layers, list) or not layers or len(set(layers)) != len(layers) \
                or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
            raise MethodError(f"layers must be a non-empty list of distinct layer indices >= 0, got {layers!r}")
        if self.params["selected_by"] is not None and not isinstance(self.params["selected_by"], str):
            raise MethodError(f"selected_by must name where the order comes from, got {self.params['selected_by']!r}")

    def apply(self, model, tokenizer, calibration=None):
        layers = self.params["layers"]
        n = len(pruning.decoder_layers(model))
        if max(layers) >= n or len(layers) >= n:
            raise MethodError(f"cannot remove layers {layers} from a model of {n} layers")
        before = sum(p.numel() for p in model.parameters())
        remove_layers(model, layers)
        self._finish(model, list(layers), n, before)
        self.info.update(strategy="listed", selected_by=self.params["selected_by"])
        return model
