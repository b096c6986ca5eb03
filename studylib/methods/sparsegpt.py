"""SparseGPT (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot").

Layer-wise optimal brain surgeon: for a linear layer with calibration inputs ``X`` and Hessian
``H = 2 X X^T / n`` (damped by ``damp * mean(diag H)``), columns are processed left to right in blocks; in each
block the weights with the lowest saliency ``w^2 / [H^-1]_jj^2`` are pruned (unstructured: ``sparsity`` of the
block; N:M: ``m - n`` of every ``m`` columns per row), and the remaining, not yet processed weights are updated to
compensate the error, using the Cholesky factor of ``H^-1``.

Two backends, same algorithm:

* ``llmcompressor`` (default): llm-compressor's ``SparseGPTModifier`` through ``oneshot`` (sequential pipeline over
  the decoder layers). It runs on Gemma-3 with the study's stack. When it cannot invert a layer's Hessian it
  silently falls back to the identity (= magnitude pruning) with a warning; that warning is caught here and
  turned into an error naming the layer(s), so a degraded result is never recorded as SparseGPT.
* ``studylib``: a compact own implementation on the study's sequential calibration
  (:func:`studylib.methods.pruning.sequential_calibration`); numerical trouble (a non positive-definite Hessian) raises
  the damping tenfold, up to ``max_damp``, and logs and records the layer and the damping that worked.

The tests check that both reconstruct a layer's output better than magnitude pruning at the same sparsity on
correlated inputs, and that they agree with each other on a layer.
"""

from __future__ import annotations

import logging

from studylib.methods import pruning
from . import Method, MethodError, register
from .llmc import calibration_dataset
from .wanda import _check_common

log = logging.getLogger(__name__)
BACKENDS = ("llmcompressor", "studylib")


def inverse_hessian_factor(H, damp: float, *, max_damp: float = 10.0, where: str = "layer"):
    """Upper Cholesky factor of ``(H + damp * mean(diag H) I)^-1``; ``(factor, damp used)``.

    Dead inputs (zero diagonal) get a unit diagonal. A failed factorization raises the damping tenfold (logged)
    until ``max_damp``; beyond it, a ``FloatingPointError`` names the layer.
    """
    import torch

    H = H.clone().float()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    mean_diag = torch.mean(torch.diag(H))
    eye = torch.eye(H.shape[0], device=H.device, dtype=H.dtype)
    d = damp
    while True:
        try:
            L = torch.linalg.cholesky(H + d * mean_diag * eye)
            Hinv = torch.cholesky_inverse(L)
            U = torch.linalg.cholesky(Hinv, upper=True)
            if d != damp:
                log.warning("%s: Hessian not positive definite at damp=%g; used damp=%g", where, damp, d)
            return U, d, dead
        except torch.linalg.LinAlgError:
            d *= 10
            if d > max_damp:
                raise FloatingPointError(f"{where}: cannot factor the damped Hessian even at damp={d / 10:g}; "
                                         "more calibration data or a larger damp is needed") from None


def sparsegpt_prune(weight, H, *, sparsity: float, n: int | None = None, m: int | None = None,
                    block_size: int = 128, damp: float = 0.01, max_damp: float = 10.0, where: str = "layer"):
    """Pruned (and compensated) copy of ``weight`` (out, in) given the layer Hessian ``H`` (in, in).

    Returns ``(new_weight in weight's dtype, info)`` with the damping used and the OBS loss estimate.
    """
    import torch

    W = weight.detach().clone().float()
    rows, cols = W.shape
    if n is not None and cols % m:
        raise ValueError(f"{where}: {cols} input columns are not a multiple of m={m}")
    U, used_damp, dead = inverse_hessian_factor(H, damp, max_damp=max_damp, where=where)
    W[:, dead] = 0
    loss = torch.zeros(rows, device=W.device)
    for b1 in range(0, cols, block_size):
        b2 = min(b1 + block_size, cols)
        Wb = W[:, b1:b2].clone()
        Ub = U[b1:b2, b1:b2]
        diag = torch.diag(Ub)
        errs = torch.zeros_like(Wb)
        if n is None:
            saliency = Wb.pow(2) / diag.reshape(1, -1).pow(2)
            k = int(saliency.numel() * sparsity)
            mask = torch.zeros_like(Wb, dtype=torch.bool)
            if k:
                flat = torch.sort(saliency.flatten(), stable=True).indices[:k]
                mask.view(-1)[flat] = True
        else:
            mask = torch.zeros_like(Wb, dtype=torch.bool)
        for j in range(b2 - b1):
            if n is not None and j % m == 0:
                sal = Wb[:, j:j + m].pow(2) / diag[j:j + m].reshape(1, -1).pow(2)
                low = torch.sort(sal, dim=1, stable=True).indices[:, : m - n]
                mask[:, j:j + m].scatter_(1, low, True)
            w = Wb[:, j]
            q = torch.where(mask[:, j], torch.zeros_like(w), w)
            err = (w - q) / Ub[j, j]
            loss += (w - q).pow(2) / Ub[j, j].pow(2) / 2
            Wb[:, j:] -= err.unsqueeze(1) @ Ub[j, j:].unsqueeze(0)
            Wb[:, j] = q
            errs[:, j] = err
        W[:, b1:b2] = Wb
        W[:, b2:] -= errs @ U[b1:b2, b2:]
    return W.to(weight.dtype), {"damp": used_damp, "loss": float(loss.sum())}


def _undo_oneshot_wrapping(model):
    """Make the model a plain transformers model again after ``oneshot``: it leaves every module wrapped in
    compressed-tensors offloading (parameters behind an ``OffloadCache``, a forward that moves its inputs) and
    replaces ``save_pretrained`` with its own saver (which wraps the modules again). Left in place, every forward
    pays that Python overhead, and the decode speed recorded for the pruned model would include it."""
    from compressed_tensors.offload import remove_dispatch

    remove_dispatch(model, onload_tensors=True)
    vars(model).pop("save_pretrained", None)  # the class's own method again


@register
class SparseGPT(Method):
    name = "sparsegpt"
    family = "pruning"
    paper = "Frantar & Alistarh 2023, SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot"
    needs_calibration = True
    defaults = {"sparsity": 0.5, "n": None, "m": None, "backend": "llmcompressor", "block_size": 128,
                "damp": 0.01, "batch_size": 8, "max_length": 256}

    def axes(self):
        return {"sparsity": pruning.nominal_sparsity(self.params["sparsity"], self.params["n"], self.params["m"])}

    def check(self):
        pruning.check_sparsity_params(self.params["sparsity"], self.params["n"], self.params["m"], MethodError)
        _check_common(self.params)
        if self.params["backend"] not in BACKENDS:
            raise MethodError(f"backend must be one of {BACKENDS}, got {self.params['backend']!r}")
        bs, damp = self.params["block_size"], self.params["damp"]
        if not isinstance(bs, int) or bs < 1:
            raise MethodError(f"block_size must be a positive integer, got {bs!r}")
        if self.params["m"] and bs % self.params["m"]:
            raise MethodError(f"block_size {bs} must be a multiple of m={self.params['m']}")
        if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 < damp < 10:
            raise MethodError(f"damp must be in (0, 10), got {damp!r}")

    def apply(self, model, tokenizer, calibration=None):
        sparsity, n, m = pruning.check_sparsity_params(self.params["sparsity"], self.params["n"], self.params["m"],
                                                       MethodError)
        if self.params["backend"] == "llmcompressor":
            self._apply_llmcompressor(model, tokenizer, calibration, sparsity, n, m)
        else:
            self._apply_own(model, tokenizer, calibration, sparsity, n, m)
        self.info.update(pattern=f"{n}:{m}" if n else "unstructured", target_sparsity=sparsity,
                         **pruning.sparsity_report(model, n, m))
        return model

    def _apply_own(self, model, tokenizer, calibration, sparsity, n, m):
        damped = {}

        def prune_layer(index, layer, linears):
            for name, (lin, stats) in linears.items():
                where = f"layers.{index}.{name}"
                new, info = sparsegpt_prune(lin.weight, stats.hessian_matrix(), sparsity=sparsity, n=n, m=m,
                                            block_size=self.params["block_size"], damp=self.params["damp"],
                                            where=where)
                lin.weight.data.copy_(new)
                if info["damp"] != self.params["damp"]:
                    damped[where] = info["damp"]

        tokens = pruning.sequential_calibration(model, tokenizer, calibration, prune_layer, hessian=True,
                                                batch_size=self.params["batch_size"],
                                                max_length=self.params["max_length"])
        self.info.update(implementation="studylib (own compact OBS implementation)",
                         calibration_tokens_per_layer=tokens, damping_raised=damped)

    def _apply_llmcompressor(self, model, tokenizer, calibration, sparsity, n, m):
        from llmcompressor import oneshot
        from llmcompressor.modifiers.pruning import SparseGPTModifier
        from loguru import logger

        max_length = self.params["max_length"]
        ds = calibration_dataset(tokenizer, calibration, max_length)
        structure = f"{m - n}:{m}" if n else "0:0"  # llm-compressor's N:M counts the *pruned* weights
        modifier = SparseGPTModifier(sparsity=sparsity, mask_structure=structure,
                                     block_size=self.params["block_size"], dampening_frac=self.params["damp"],
                                     targets=[r"re:.*layers\.\d+\..*_proj$"])
        seen = {"current": None, "failed": []}

        def sink(message):
            text = message.record["message"]
            if text.startswith("Sparsifying "):
                seen["current"] = text.split()[1].rstrip(".")
            elif "Failed to invert hessian" in text:
                seen["failed"].append(seen["current"])

        handler = logger.add(sink, level="INFO")
        try:
            oneshot(model=model, dataset=ds, recipe=modifier, num_calibration_samples=len(ds),
                    max_seq_length=max_length, pipeline="sequential")
        finally:
            logger.remove(handler)
        _undo_oneshot_wrapping(model)
        if seen["failed"]:
            raise MethodError(f"llm-compressor could not invert the Hessian of {', '.join(map(str, seen['failed']))} "
                              f"and fell back to magnitude pruning there; raise damp (now {self.params['damp']}) "
                              "or use backend='studylib', which raises damping per layer")
        import llmcompressor

        self.info.update(implementation=f"llm-compressor {llmcompressor.__version__} SparseGPTModifier "
                                        f"(mask_structure {structure!r})",
                         calibration_samples=len(ds))
