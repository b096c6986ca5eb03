"""What the pruning methods share: decoder layers and their linears, calibration statistics gathered layer by
layer, masks (per-row unstructured, N:M), sparsity accounting, recovery fine-tuning, and the 2:4 semi-structured kernel check.

Sequential calibration (:func:`sequential_calibration`)
    Weight pruning (Wanda, SparseGPT, DSnoT) prunes decoder layer ``i`` with statistics of the inputs its linears
    see *after* layers ``0..i-1`` were pruned, as the reference implementations do. Instead of caching every
    layer's inputs and replaying a layer with hand-made attention masks and rotary embeddings, the whole model is
    run on the calibration batches and stopped right after layer ``i`` (an exception raised by a forward hook);
    hooks on layer ``i``'s linears record their inputs on the way. Cost: about L/2 forward passes of the
    decoder stack (the LM head, the expensive part of a 262k-vocabulary model, never runs); memory: the
    statistics of one layer at a time. Padding positions are left out of every statistic.

Sparsity and storage
    Pruned weights are zeros in dense tensors: unstructured sparsity saves no memory, storage or time unless the
    model is stored (and run) in a sparse format, which this study does not do; records say so
    (:data:`STORAGE_NOTE`). 2:4 models can run with semi-structured kernels on CUDA (:func:`semi_structured_speed`,
    measured against dense, reported as measured).

Dev data for layer and head selection: :mod:`studylib.methods.devset`.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass

from studylib.core import data, leakage

log = logging.getLogger(__name__)

STORAGE_NOTE = (
    "pruned weights are stored as zeros in dense tensors: unstructured sparsity saves no memory, storage or "
    "decode time unless the model is stored and run in a sparse format (not done here); storage_bytes is the "
    "dense safetensors size"
)
CPU_KERNEL = "dense (no semi-structured kernel on CPU)"


# ----------------------------------------------------------------------------------------- model structure


def decoder_layers(model):
    """The decoder layers (a ``ModuleList``) of a causal LM such as ``Gemma3ForCausalLM``."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__} has no .model.layers: not a decoder-only causal LM this study prunes")
    return layers


def layer_linears(layer) -> dict:
    """``{"self_attn.q_proj": Linear, ...}``: every ``nn.Linear`` of one decoder layer (embeddings and the LM head
    live outside the layers and are never pruned)."""
    import torch.nn as nn

    return {name: mod for name, mod in layer.named_modules() if isinstance(mod, nn.Linear)}


# ----------------------------------------------------------------------------------------- statistics


@dataclass
class InputStats:
    """Running statistics of one linear layer's inputs over calibration tokens (float32, padding excluded)."""

    columns: int
    hessian: bool = False
    tokens: int = 0
    sum: object = None  # (in,)  sum of x
    sumsq: object = None  # (in,)  sum of x^2
    xtx: object = None  # (in, in)  sum of x x^T, when hessian

    def add(self, x):
        import torch

        x = x.detach().to(torch.float32)
        if self.sum is None:
            self.sum = torch.zeros(self.columns, dtype=torch.float32, device=x.device)
            self.sumsq = torch.zeros_like(self.sum)
            if self.hessian:
                self.xtx = torch.zeros(self.columns, self.columns, dtype=torch.float32, device=x.device)
        self.tokens += x.shape[0]
        self.sum += x.sum(0)
        self.sumsq += x.pow(2).sum(0)
        if self.hessian:
            self.xtx += x.t() @ x

    def _need(self):
        if not self.tokens:
            raise RuntimeError("no calibration tokens reached this layer")

    @property
    def norm(self):
        """``||X_j||_2`` over all calibration tokens, per input column (Wanda's activation norm)."""
        self._need()
        return self.sumsq.sqrt()

    @property
    def mean(self):
        self._need()
        return self.sum / self.tokens

    @property
    def var(self):
        """Population variance per input column."""
        self._need()
        return (self.sumsq / self.tokens - self.mean.pow(2)).clamp_min(0)

    def hessian_matrix(self):
        """``H = 2 X X^T / n`` (SparseGPT's layer-wise Hessian of the squared reconstruction error)."""
        self._need()
        if self.xtx is None:
            raise RuntimeError("statistics were gathered without the Hessian")
        return 2.0 * self.xtx / self.tokens


class _StopForward(Exception):
    pass


def tokenize_batches(tokenizer, texts: list[str], batch_size: int, max_length: int, device):
    """Left-padded batches ``(input_ids, attention_mask)`` of the calibration texts, truncated to ``max_length``."""
    if not texts:
        raise ValueError("no calibration texts")
    batches = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
    for start in range(0, len(order), batch_size):
        chunk = [texts[i] for i in order[start:start + batch_size]]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        batches.append((enc["input_ids"].to(device), enc["attention_mask"].to(device)))
    return batches


def sequential_calibration(model, tokenizer, texts: list[str], on_layer, *, batch_size: int = 8,
                           max_length: int = 256, hessian: bool = False, progress: bool = False):
    """For each decoder layer in order: gather :class:`InputStats` of its linears' inputs (with all earlier layers
    already processed), then call ``on_layer(index, layer, {name: (linear, stats)})``, which prunes in place.

    Returns the number of calibration tokens (non-padding) seen per layer.
    """
    import torch
    from tqdm.auto import tqdm

    layers = decoder_layers(model)
    device = next(model.parameters()).device
    batches = tokenize_batches(tokenizer, texts, batch_size, max_length, device)
    current = {"keep": None}
    was_training, use_cache = model.training, getattr(model.config, "use_cache", None)
    model.eval()
    if use_cache is not None:
        model.config.use_cache = False
    tokens = 0
    try:
        for index in tqdm(range(len(layers)), desc="layers", disable=not progress):
            layer = layers[index]
            linears = layer_linears(layer)
            stats = {name: InputStats(lin.in_features, hessian=hessian) for name, lin in linears.items()}
            handles = []

            def hook_for(name):
                def hook(_module, args):
                    x = args[0]
                    x = x.reshape(-1, x.shape[-1])[current["keep"]]
                    stats[name].add(x)
                return hook

            for name, lin in linears.items():
                handles.append(lin.register_forward_pre_hook(hook_for(name)))

            def stop(_module, _args, _output):
                raise _StopForward

            handles.append(layer.register_forward_hook(stop))
            try:
                with torch.no_grad():
                    for ids, mask in batches:
                        current["keep"] = mask.reshape(-1).bool()
                        try:
                            model(input_ids=ids, attention_mask=mask, use_cache=False)
                        except _StopForward:
                            pass
            finally:
                for h in handles:
                    h.remove()
            tokens = next(iter(stats.values())).tokens
            with torch.no_grad():
                on_layer(index, layer, {name: (linears[name], stats[name]) for name in linears})
            del stats
    finally:
        if use_cache is not None:
            model.config.use_cache = use_cache
        model.train(was_training)
    return tokens


# ----------------------------------------------------------------------------------------- masks


def check_sparsity_params(sparsity, n, m, error=ValueError) -> tuple[float, int | None, int | None]:
    """Validate ``sparsity`` (unstructured, in (0, 1)) or ``n``/``m`` (N:M: n weights kept in every m
    consecutive input columns, 0 < n < m). With N:M the sparsity is 1 - n/m; a ``sparsity`` that says otherwise is
    an error. Returns ``(sparsity, n, m)``."""
    if (n is None) != (m is None):
        raise error("N:M sparsity needs both n and m (n kept of every m consecutive weights), e.g. n=2, m=4")
    if n is not None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)) or not 0 < n < m:
            raise error(f"N:M sparsity needs integers 0 < n < m (n kept of every m), got n={n!r}, m={m!r}")
        implied = 1 - n / m
        if sparsity is not None and not math.isclose(float(sparsity), implied):
            raise error(f"{n}:{m} sparsity removes {implied:g} of the weights; sparsity={sparsity!r} contradicts it "
                        f"(leave sparsity at {implied:g})")
        return implied, n, m
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise error(f"sparsity must be a fraction in (0, 1), got {sparsity!r}")
    return float(sparsity), None, None


def nominal_sparsity(sparsity, n: int | None, m: int | None) -> float:
    """The share of weights a pruning step removes: ``1 - n/m`` for an N:M pattern, else ``sparsity``."""
    return 1.0 - n / m if n and m else float(sparsity)


def row_prune_mask(scores, sparsity: float):
    """Boolean mask (True = pruned) removing, in every output row, the ``int(columns * sparsity)`` entries of
    lowest score (ties broken by column index: a stable sort)."""
    import torch

    k = int(scores.shape[1] * sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        order = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, order, True)
    return mask


def nm_prune_mask(scores, n: int, m: int):
    """Boolean mask (True = pruned) keeping the ``n`` highest scores of every ``m`` consecutive input columns."""
    import torch

    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"{cols} input columns are not a multiple of m={m}: N:M sparsity does not fit this layer")
    blocks = scores.reshape(rows, cols // m, m)
    order = torch.sort(blocks, dim=2, stable=True).indices[:, :, : m - n]
    mask = torch.zeros_like(blocks, dtype=torch.bool)
    mask.scatter_(2, order, True)
    return mask.reshape(rows, cols)


def prune_mask(scores, sparsity: float, n: int | None = None, m: int | None = None):
    return nm_prune_mask(scores, n, m) if n is not None else row_prune_mask(scores, sparsity)


def is_n_m(weight, n: int, m: int) -> bool:
    """True when every m consecutive input columns of every row hold at most n non-zeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    return bool(((weight.reshape(rows, cols // m, m) != 0).sum(-1) <= n).all())


def sparsity_report(model, n: int | None = None, m: int | None = None) -> dict:
    """Zeros in the decoder layers' linears (what weight pruning touches), per layer and in total."""
    import torch

    per_layer, zeros, total, nm_ok = [], 0, 0, True
    with torch.no_grad():
        for layer in decoder_layers(model):
            lz = lt = 0
            for lin in layer_linears(layer).values():
                w = lin.weight
                lz += int((w == 0).sum())
                lt += w.numel()
                if n is not None:
                    nm_ok = nm_ok and is_n_m(w, n, m)
            per_layer.append(lz / max(lt, 1))
            zeros += lz
            total += lt
    out = {"linear_sparsity": zeros / max(total, 1), "linear_params": total, "linear_zeros": zeros,
           "per_layer_sparsity": per_layer, "storage_note": STORAGE_NOTE}
    if n is not None:
        out["pattern_holds"] = nm_ok
    return out


def dequantized_sparsity(model) -> dict | None:
    """Zeros in the dequantized weights of quantized linears (e.g. GPTQModel's) inside the decoder layers: how much
    of a sparsity mask survives a later quantization step (GPTQ's error compensation updates pruned weights too;
    those that round back to zero stay zero). None when no layer can be dequantized."""
    import torch

    zeros = total = modules = 0
    with torch.no_grad():
        for layer in decoder_layers(model):
            for mod in layer.modules():
                if hasattr(mod, "dequantize_weight") and not isinstance(mod, torch.nn.Linear):
                    w = mod.dequantize_weight()
                    zeros += int((w == 0).sum())
                    total += w.numel()
                    modules += 1
    return zero_fraction_report(zeros, total, modules, "after quantization")


def zero_fraction_report(zeros: int, total: int, modules: int, where: str) -> dict | None:
    """How many dequantized weights are zero (``where`` they were read), as records keep it; None without modules."""
    if not modules:
        return None
    return {"modules": modules, "zero_fraction_dequantized": zeros / total,
            "note": f"zeros of the dequantized weights {where}; GPTQ does not keep a pruning mask exactly (its error "
                    "compensation moves pruned weights, most round back to zero), and the packed low-bit storage "
                    "holds zeros like any other value: sparsity saves nothing more here"}


# ----------------------------------------------------------------------------------------- recovery


def recovery_pairs(tokenizer, directions, per_direction: int | None, *, style: str = "alma", seed: int = 0,
                   root=None):
    """(prompt, target) pairs from ALMA's train split for recovery fine-tuning; test overlap dropped and asserted."""
    from studylib.core import prompts
    from studylib.core.languages import normalize_directions

    root = data.resolve_data_dir(root)
    pool = leakage.every_test_sentence(root)
    train = [ex for d in normalize_directions(directions)
             for ex in data.load_split("alma", d, "train", n=per_direction, seed=seed, root=root)]
    train, dropped = leakage.drop_test_overlap(train, pool)
    leakage.assert_no_test_overlap(train, pool, purpose="recovery fine-tuning")
    return [prompts.training_text(ex, style, tokenizer=tokenizer) for ex in train], dropped


def recover(model, tokenizer, cfg, *, dtype: str | None = None):
    """Recovery fine-tuning of a pruned model on ALMA train data, as ``cfg`` (a params object with the
    ``recovery_*`` fields) says: ``full`` fine-tuning, or ``lora`` (adapters merged back afterwards, so the
    recovered model has the pruned model's shape and size). Trained in float32 (bf16 autocast on CUDA), then cast
    to ``dtype``. Returns (model, summary)."""
    import torch

    from studylib.core import models, training

    if cfg.recovery == "none":
        return model, None
    pairs, dropped = recovery_pairs(tokenizer, cfg.recovery_directions, cfg.recovery_train_per_direction,
                                    style=cfg.prompt_style, seed=cfg.seed, root=cfg.data_dir)
    model = model.float()
    if cfg.recovery == "lora":
        model = training.add_lora(model, r=cfg.recovery_lora_r, alpha=cfg.recovery_lora_alpha,
                                  dropout=cfg.recovery_lora_dropout)
    result = training.finetune(model, tokenizer, pairs, epochs=cfg.recovery_epochs,
                               learning_rate=cfg.recovery_learning_rate, batch_size=cfg.recovery_batch_size,
                               grad_accum=cfg.recovery_grad_accum, max_length=cfg.recovery_max_length,
                               warmup_ratio=cfg.recovery_warmup_ratio, seed=cfg.seed)
    model = result.model
    if cfg.recovery == "lora":
        model = model.merge_and_unload()
    device = next(model.parameters()).device
    model = model.to(models.resolve_dtype(dtype or cfg.dtype, str(device)))
    model.eval()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    summary = {"method": cfg.recovery, **result.summary(), "train_dropped_test_overlap": dropped,
               "data": "ALMA human-written train split (test overlap dropped and asserted)"}
    return model, summary


# ----------------------------------------------------------------------------------------- 2:4 kernels


@contextmanager
def _swapped_weights(linears: dict, make):
    """Temporarily replace each linear's weight by ``make(weight)``; the dense weights come back afterwards."""
    import torch

    originals = {}
    try:
        for name, lin in linears.items():
            originals[name] = lin.weight
            lin.weight = torch.nn.Parameter(make(lin.weight.detach()), requires_grad=False)
        yield
    finally:
        for name, w in originals.items():
            linears[name].weight = w


def semi_structured_speed(model, tokenizer, prompt: str, *, batch_sizes=(1,), new_tokens: int = 64,
                          repeats: int = 3) -> dict:
    """Decode speed of a 2:4-pruned model with PyTorch's semi-structured sparse kernels against the same model
    dense, back to back. Tries cuSPARSELt, then CUTLASS; records which kernel ran, or why none did. The model is
    left dense (the sparse weights are swapped in only for the measurement). On CPU: no kernel, nothing timed.

    Measured on the lent H200 (torch 2.11+cu130, a random-weight model of Gemma-3-270M's shape, bf16): cuSPARSELt
    runs (max rel. error 1e-4) but costs ~1.4-1.6 ms per matmul whatever the shape (dense: 12-240 us), so decoding
    ran at 0.18x (batch 1) to 0.11x (batch 64) of dense; CUTLASS is refused on sm_90 ("compute capability 8.x
    only"). The record carries the speed-up as measured, never assumed."""
    import torch

    from studylib.core.efficiency import decode_speed

    device = next(model.parameters()).device
    linears = {f"{i}.{name}": lin for i, layer in enumerate(decoder_layers(model))
               for name, lin in layer_linears(layer).items()}
    out = {"pattern": "2:4", "linears": len(linears), "kernel": None, "tried": {}}
    if device.type != "cuda":
        out["kernel"] = CPU_KERNEL
        return out
    not_24 = [name for name, lin in linears.items() if not is_n_m(lin.weight, 2, 4)]
    if not_24:
        out["kernel"] = "dense (weights are not 2:4)"
        out["not_2of4"] = not_24[:5]
        return out
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float16, torch.bfloat16):
        out["kernel"] = f"dense (semi-structured kernels take fp16/bf16, model is {dtype})"
        return out
    out["device_capability"] = list(torch.cuda.get_device_capability(device))
    out["torch"] = torch.__version__
    try:
        out["cusparselt_version"] = torch.backends.cusparselt.version()
    except Exception:  # noqa: BLE001 -- informational only
        out["cusparselt_version"] = None
    out["dense"] = {f"batch{bs}": decode_speed(model, tokenizer, prompt, batch_size=bs, new_tokens=new_tokens,
                                               repeats=repeats) for bs in batch_sizes}
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    candidates = [("cusparselt", SparseSemiStructuredTensorCUSPARSELT), ("cutlass", SparseSemiStructuredTensorCUTLASS)]
    for kernel, cls in candidates:
        if kernel == "cusparselt" and not torch.backends.cusparselt.is_available():
            out["tried"][kernel] = "torch.backends.cusparselt.is_available() is False"
            continue
        try:
            with _swapped_weights(linears, cls.from_dense):
                lin = next(iter(linears.values()))
                x = torch.randn(32, lin.in_features, device=device, dtype=dtype)
                with torch.no_grad():
                    sparse_y = lin(x)
                dense_w = lin.weight.to_dense()
                ref = x @ dense_w.t()
                out["check_max_rel_err"] = float((sparse_y - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
                sparse = {f"batch{bs}": decode_speed(model, tokenizer, prompt, batch_size=bs, new_tokens=new_tokens,
                                                     repeats=repeats) for bs in batch_sizes}
        except Exception as err:  # noqa: BLE001 -- a refused kernel is a result, recorded
            out["tried"][kernel] = f"{type(err).__name__}: {str(err)[:300]}"
            continue
        out["kernel"] = kernel
        out["sparse"] = sparse
        out["speedup"] = {k: out["dense"][k]["seconds_median"] / sparse[k]["seconds_median"] for k in sparse}
        out["faster_than_dense"] = {k: v > 1 for k, v in out["speedup"].items()}
        out["tried"][kernel] = "ran"
        return out
    out["kernel"] = "dense (no semi-structured kernel ran: see tried)"
    return out
