"""Wanda (Sun et al., 2024, "A Simple and Effective Pruning Approach for Large Language Models").

Score of weight ``W[i, j]``: ``|W[i, j]| * ||X_j||_2``, where ``X_j`` is input feature ``j`` of the linear layer
over every calibration token. Weights are compared *within each output row*: row ``i`` loses its
``int(in_features * sparsity)`` lowest-scoring weights (unstructured), or, for N:M, the ``m - n`` lowest of every
``m`` consecutive input columns (``n`` kept of ``m``; 2:4 keeps 2 of every 4). No weight is updated.

Every ``nn.Linear`` inside the decoder layers is pruned (q/k/v/o, gate/up/down); the embeddings and the LM head
are not. Layers are pruned in order, each with activation norms measured after the earlier layers were pruned
(:func:`studylib.methods.pruning.sequential_calibration`), as the reference implementation does. Own code, written from
the paper's definition (llm-compressor also ships Wanda; ours keeps the statistics the tests check).
"""

from __future__ import annotations

from studylib.methods import pruning
from . import Method, MethodError, register


def wanda_scores(weight, norm):
    """``|W| * ||X||`` broadcast over output rows (float32)."""
    return weight.detach().abs().float() * norm.reshape(1, -1).float()


def _check_common(params):
    for key in ("batch_size", "max_length"):
        v = params[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise MethodError(f"{key} must be a positive integer, got {v!r}")


@register
class Wanda(Method):
    name = "wanda"
    family = "pruning"
    paper = "Sun et al. 2024, A Simple and Effective Pruning Approach for Large Language Models (Wanda)"
    needs_calibration = True
    defaults = {"sparsity": 0.5, "n": None, "m": None, "batch_size": 8, "max_length": 256}

    def axes(self):
        return {"sparsity": pruning.nominal_sparsity(self.params["sparsity"], self.params["n"], self.params["m"])}

    def check(self):
        pruning.check_sparsity_params(self.params["sparsity"], self.params["n"], self.params["m"], MethodError)
        _check_common(self.params)

    def apply(self, model, tokenizer, calibration=None):
        sparsity, n, m = pruning.check_sparsity_params(self.params["sparsity"], self.params["n"], self.params["m"],
                                                       MethodError)

        def prune_layer(index, layer, linears):
            for name, (lin, stats) in linears.items():
                mask = pruning.prune_mask(wanda_scores(lin.weight, stats.norm), sparsity, n, m)
                lin.weight.data[mask.to(lin.weight.device)] = 0

        tokens = pruning.sequential_calibration(model, tokenizer, calibration, prune_layer,
                                                batch_size=self.params["batch_size"],
                                                max_length=self.params["max_length"])
        self.info.update(implementation="studylib (own code, from the paper's definition)",
                         pattern=f"{n}:{m}" if n else "unstructured", target_sparsity=sparsity,
                         calibration_tokens_per_layer=tokens, **pruning.sparsity_report(model, n, m))
        return model
