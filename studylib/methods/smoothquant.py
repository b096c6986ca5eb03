"""SmoothQuant: migrate activation outliers into the weights, then W8A8 (``smoothquant``) or NF4 (``smoothquant-nf4``).

Paper: G. Xiao, J. Lin, M. Seznec, H. Wu, J. Demouth, S. Han. *SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models*. ICML 2023, arXiv:2211.10438.

Smoothing (written here, checked by a test and at run time): for a normalization layer feeding linear layers
``Y = norm(x) Wᵀ``, each input channel ``j`` gets the scale ``s_j = max|X_j|^α / max|W_j|^(1-α)`` (``max|X_j|``
over the calibration tokens, ``max|W_j|`` over the rows of all the linears the norm feeds; α = ``alpha``, the
migration strength). The norm's output is divided by ``s`` and the linears' input columns multiplied by it, so the
model computes the same function while its activations lose their outlier channels. Pairs, as in the paper for
Llama-style blocks: ``input_layernorm -> q/k/v_proj`` and the MLP's input norm ``-> gate/up_proj``; the inputs of
``o_proj`` and ``down_proj`` are not smoothed. The MLP's input norm is ``pre_feedforward_layernorm`` in Gemma-2/3
and ``post_attention_layernorm`` in Llama/Mistral/Qwen. Gemma's RMSNorm multiplies by ``(1 + weight)``, so there
the folded weight is ``(1 + w) / s - 1``; the convention is detected per norm by probing it (``x·w`` or
``x·(1+w)``), not assumed from the class name. In bf16, ``(1 + w)/s - 1`` lies near -1 where bf16 is coarse, so in
a low-precision model the smoothed offset-norm weights are kept in float32 (a few KB; the norm computes in float32
anyway). After smoothing, the logits of a calibration batch are compared with those before
(``smoothing_check``): in float32 a change above 1e-3 of the logits' range stops the run with the architecture
named; in bf16 it is recorded.

Why not llm-compressor's ``SmoothQuantModifier`` (0.14): its registered mapping for ``Gemma3ForCausalLM`` smooths
``post_attention_layernorm`` -- which in Gemma-3 normalizes the attention *output* before the residual add -- into
``gate/up_proj``. That is not an identity: measured on the tiny random Gemma-3 with non-zero norm weights, the
logits moved by 1.09 (their range 0.77); with the mapping corrected it was 8e-7. It also uses the range
``max - min`` instead of the paper's ``max|X|``, and its W8A8 scheme runs in transformers as fake quantization
(real int8 GEMMs only in vLLM). So smoothing is done here, by the paper's formula.

W8A8 (``smoothquant``), as in the paper's per-channel/per-token setting: every linear layer of the decoder blocks
(q, k, v, o, gate, up, down; not ``lm_head`` or embeddings; attention BMMs stay in the model's dtype) is replaced by
:class:`W8A8Linear`: weights int8 symmetric per output channel (``absmax / 127``), activations int8 symmetric per
token, computed at run time (dynamic). The product is a **real int8 GEMM** with int32 accumulation through
``torch._int_mm`` (cuBLASLt on CUDA, where 16 or fewer token rows are padded to 32; the CPU kernel otherwise)
wherever the device takes the layer's shape *and* computes random int8 products exactly (probed once per shape at
apply time); elsewhere the same integers are multiplied in float32 (``simulated``: identical numbers up to float
rounding, no speed-up). Which ran is recorded (``kernel``: modules per path; ``int_mm_shapes``: the probe).

For vLLM the W8A8 model is also written as a compressed-tensors checkpoint (``int-quantized``: the same int8
weights and per-channel scales, per-token int8 activations), which vLLM's own int8 kernels serve
(:func:`export_w8a8`). vLLM holds norm weights in the serving dtype, so a smoothed Gemma norm kept in float32 here is
rounded there; the record says by how much (``vllm_export.norm_scale_rounding``).

NF4 (``smoothquant-nf4``): the same smoothing, then bitsandbytes NF4 of the (smoothed) weights, as ``bnb-nf4``.
Activations are not quantized there: the ablation asks whether migrating outliers into the weights helps or hurts
a 4-bit weight-only format.
"""

from __future__ import annotations

import time

from . import Method, MethodError, register

KERNELS = ("auto", "int_mm", "simulated")


def _check_alpha(name, alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise MethodError(f"{name} alpha (migration strength) must be a number in (0, 1), e.g. 0.5; got {alpha!r}")


def _check_max_length(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 8:
        raise MethodError(f"{name} max_length must be an integer >= 8 (tokens per calibration text), got {value!r}")


# --------------------------------------------------------------------------------------------- smoothing

def decoder_layers(model):
    """The decoder blocks: the first ModuleList whose items have ``self_attn`` and ``mlp``."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and all(
                hasattr(b, "self_attn") and hasattr(b, "mlp") for b in module):
            return module
    raise MethodError(f"smoothquant: no decoder blocks with self_attn and mlp found in {type(model).__name__}")


def smoothing_groups(model) -> list[tuple[str, object, list[tuple[str, object]]]]:
    """``[(norm name, norm, [(linear name, linear), ...]), ...]``: each norm and the linears it feeds."""
    groups = []
    arch = type(model).__name__
    for i, block in enumerate(decoder_layers(model)):
        attn, mlp = block.self_attn, block.mlp
        mlp_norm = "pre_feedforward_layernorm" if hasattr(block, "pre_feedforward_layernorm") else "post_attention_layernorm"
        pairs = (("input_layernorm", attn, "self_attn", ("q_proj", "k_proj", "v_proj")),
                 (mlp_norm, mlp, "mlp", ("gate_proj", "up_proj")))
        for norm_name, parent, parent_name, linear_names in pairs:
            norm = getattr(block, norm_name, None)
            linears = [(f"layers.{i}.{parent_name}.{n}", getattr(parent, n, None)) for n in linear_names]
            if norm is None or any(lin is None for _, lin in linears):
                raise MethodError(f"smoothquant knows Llama/Gemma-style blocks (input_layernorm -> self_attn.q/k/v_proj, "
                                  f"{mlp_norm} -> mlp.gate/up_proj); {arch} block {i} does not have them")
            groups.append((f"layers.{i}.{norm_name}", norm, linears))
    return groups


def norm_offset(norm) -> float:
    """0.0 for an RMSNorm computing ``x̂·w``, 1.0 for Gemma's ``x̂·(1+w)``; decided by probing the module."""
    import torch

    weight = norm.weight
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, weight.shape[0], generator=gen).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        y = norm(x).float()
        xf = x.float()
        base = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        w = weight.float()
        errs = {0.0: (y - base * w).abs().max().item(), 1.0: (y - base * (1 + w)).abs().max().item()}
    best = min(errs, key=errs.get)
    scale = max(y.abs().max().item(), 1e-6)
    if errs[best] > 0.05 * scale or errs[1.0 - best] < 4 * errs[best] + 1e-6 * scale:
        raise MethodError(f"smoothquant: cannot tell how {type(norm).__name__} applies its weight "
                          f"(x·w error {errs[0.0]:.3g}, x·(1+w) error {errs[1.0]:.3g}); it is not an RMSNorm this code knows")
    return best


def _batches(tokenizer, texts, max_length, batch_size):
    for i in range(0, len(texts), batch_size):
        yield tokenizer(list(texts[i:i + batch_size]), return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length)


def activation_absmax(model, tokenizer, texts, linears: dict, *, max_length: int = 512, batch_size: int = 8) -> dict:
    """``max|X_j|`` per input channel of each named linear over the calibration tokens (padding excluded)."""
    import torch

    device = next(model.parameters()).device
    stats, current = {}, {}

    def hook(name):
        def fn(module, args):
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1])
            mask = current.get("mask")
            if mask is not None and mask.numel() == x.shape[0]:
                x = x[mask]
            if x.numel():
                m = x.abs().amax(dim=0).float()
                stats[name] = m if name not in stats else torch.maximum(stats[name], m)
        return fn

    handles = [lin.register_forward_pre_hook(hook(name)) for name, lin in linears.items()]
    try:
        with torch.no_grad():
            for enc in _batches(tokenizer, texts, max_length, batch_size):
                enc = enc.to(device)
                current["mask"] = enc["attention_mask"].reshape(-1).bool()
                model(**enc, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    missing = sorted(set(linears) - set(stats))
    if missing:
        raise MethodError(f"smoothquant: calibration never reached {missing[:3]}")
    return stats


def smoothing_scales(act_absmax, weights, alpha: float):
    """``s_j = max|X_j|^α / max_i|W_ij|^(1-α)`` over all ``weights`` (each (out, in)), as in the paper (clamped >= 1e-5)."""
    import torch

    w_absmax = torch.stack([w.detach().abs().float().amax(dim=0) for w in weights]).amax(dim=0)
    a = act_absmax.float().to(w_absmax.device).clamp(min=1e-5)
    return (a.pow(alpha) / w_absmax.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)


def fold_scales(norm, linears, scales, offset: float, keep_fp32: bool) -> None:
    """Divide the norm's output by ``scales`` and multiply the linears' input columns by them (exactly, in fp32)."""
    import torch

    with torch.no_grad():
        s = scales.to(norm.weight.device, torch.float32)
        w = norm.weight.float()
        new = (offset + w) / s - offset
        if keep_fp32 and norm.weight.dtype != torch.float32:
            norm.weight = torch.nn.Parameter(new, requires_grad=False)
        else:
            norm.weight.copy_(new.to(norm.weight.dtype))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_((norm.bias.float() / s).to(norm.bias.dtype))
        for lin in linears:
            lin.weight.copy_((lin.weight.float() * s.to(lin.weight.device)[None, :]).to(lin.weight.dtype))


def _logits(model, enc):
    import torch

    with torch.no_grad():
        return model(**enc, use_cache=False).logits.float()


def smooth_model(model, tokenizer, texts, *, alpha: float, max_length: int = 512, batch_size: int = 8) -> dict:
    """Apply SmoothQuant's smoothing in place; returns what was done (for the record)."""
    import torch

    start = time.perf_counter()
    model.eval()
    groups = smoothing_groups(model)
    device = next(model.parameters()).device
    low_precision = model.dtype != torch.float32
    probe = next(_batches(tokenizer, texts[:4], max_length, 4)).to(device)
    before = _logits(model, probe)
    firsts = {linears[0][0]: linears[0][1] for _, _, linears in groups}  # the members of a group share their input
    stats = activation_absmax(model, tokenizer, texts, firsts, max_length=max_length, batch_size=batch_size)
    offsets, s_min, s_max, fp32_norms = {}, float("inf"), 0.0, 0
    for norm_name, norm, linears in groups:
        offset = norm_offset(norm)
        offsets[offset] = offsets.get(offset, 0) + 1
        s = smoothing_scales(stats[linears[0][0]], [lin.weight for _, lin in linears], alpha)
        keep = low_precision and offset != 0.0
        fold_scales(norm, [lin for _, lin in linears], s, offset, keep)
        fp32_norms += int(keep)
        s_min, s_max = min(s_min, s.min().item()), max(s_max, s.max().item())
    after = _logits(model, probe)
    change = (after - before).abs().max().item()
    spread = max((before.max() - before.min()).item(), 1e-6)
    check = {"max_logit_change": change, "relative_to_logit_range": change / spread,
             "probe_texts": int(probe["input_ids"].shape[0]), "dtype": str(model.dtype).replace("torch.", "")}
    if not low_precision and change > 1e-3 * spread:
        raise MethodError(f"smoothquant: smoothing changed the outputs of {type(model).__name__} (max logit change "
                          f"{change:.3g}, logit range {spread:.3g}): the norm -> linear pairs do not fit this architecture")
    return {"alpha": alpha, "groups": len(groups), "pairs": "input_layernorm->q/k/v_proj; "
            + ("pre_feedforward_layernorm" if "pre_feedforward" in groups[1][0] else "post_attention_layernorm")
            + "->gate/up_proj", "norm_offsets": {str(k): v for k, v in offsets.items()},
            "norms_kept_float32": fp32_norms, "scale_min": s_min, "scale_max": s_max,
            "smoothing_check": check, "smoothing_seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------------------------- W8A8

def quantize_w8a8(model, kernel: str = "auto") -> dict:
    """Replace every linear layer of the decoder blocks by a :class:`W8A8Linear`; returns the kernel census."""
    import torch

    from ._w8a8 import W8A8Linear as cls
    from ._w8a8 import int_mm_mode

    modes = {}
    device = next(model.parameters()).device
    replaced = []
    for block in decoder_layers(model):
        for name, module in list(block.named_modules()):
            if type(module) is not torch.nn.Linear:
                continue
            shape = (module.in_features, module.out_features)
            if kernel == "simulated":
                mode = None
            else:
                if shape not in modes:
                    modes[shape] = int_mm_mode(device, *shape)
                mode = modes[shape]
                if mode is None and kernel == "int_mm":
                    raise MethodError(f"smoothquant kernel 'int_mm': torch._int_mm does not take a {shape[0]}x{shape[1]} "
                                      f"layer on {device}; use kernel 'auto' or 'simulated'")
            block.set_submodule(name, cls(module, mode))
            replaced.append(name)
    census = {}
    for m in model.modules():
        if isinstance(m, cls):
            census[m.kernel] = census.get(m.kernel, 0) + 1
    return {"quantized_modules": len(replaced), "kernel": census,
            "int_mm_shapes": {f"{k}x{n}": (mode or "unsupported") for (k, n), mode in modes.items()},
            "weights": "int8 symmetric per output channel (absmax/127)",
            "activations": "int8 symmetric per token, dynamic (absmax/127)",
            "not_quantized": "lm_head, embeddings, norms, attention BMMs"}


# --------------------------------------------------------------------------------------------- vLLM export

def w8a8_quantization_config() -> dict:
    """The compressed-tensors description of :func:`quantize_w8a8`'s format (what vLLM's ``W8A8Int8`` scheme reads):
    int8 weights symmetric per output channel, int8 activations symmetric per token at run time, ``lm_head`` left
    out. Built with the compressed-tensors library, so its field names are the library's own."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    weights = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel")
    acts = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)
    config = QuantizationConfig(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights,
                                                                             input_activations=acts)},
                                ignore=["lm_head"], format="int-quantized", quantization_status="compressed")
    return {"quant_method": "compressed-tensors", **config.model_dump(exclude_none=True)}


def export_w8a8(model, folder, serve_dtype: str = "bfloat16") -> dict:
    """Write the W8A8 model (after :func:`quantize_w8a8`) as a compressed-tensors checkpoint vLLM loads as it is:
    each quantized linear's int8 ``weight`` and its float32 ``weight_scale`` of shape (out, 1), every other tensor
    as it is. vLLM holds the norms in ``serve_dtype``, so a smoothed Gemma norm kept in float32 here is rounded
    there: the largest and median relative change of the scale it applies (``offset + w``) are returned, for the
    record."""
    import json
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from ._w8a8 import W8A8Linear

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    quantized = {name for name, m in model.named_modules() if isinstance(m, W8A8Linear)}
    if not quantized:
        raise MethodError("smoothquant export: the model has no W8A8 layers (run quantize_w8a8 first)")
    tensors, seen = {}, {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen and name.endswith("lm_head.weight"):
            continue  # tied to the embeddings: the config says so
        seen[tensor.data_ptr()] = name
        owner = name.rsplit(".", 1)[0]
        if owner in quantized and name.endswith(".weight_scale"):
            tensor = tensor.float().reshape(-1, 1)
        tensors[name] = tensor.detach().contiguous().cpu().clone()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["quantization_config"] = w8a8_quantization_config()
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
    changes = []
    dtype = getattr(torch, serve_dtype)
    for _, norm, _ in smoothing_groups(model):
        offset = norm_offset(norm)
        if offset and norm.weight.dtype == torch.float32:
            exact = offset + norm.weight.detach().float()
            served = offset + norm.weight.detach().to(dtype).float()
            changes.append(((served - exact).abs() / exact.abs().clamp(min=1e-12)).cpu())
    change = torch.cat(changes) if changes else torch.zeros(1)
    return {"format": "compressed-tensors int-quantized (W8A8 int8, per channel x per token)",
            "quantized_linears": len(quantized), "serve_dtype": serve_dtype,
            "norm_scale_rounding": {"max": change.max().item(), "median": change.median().item(),
                                    "norms": len(changes)}}


# --------------------------------------------------------------------------------------------- methods

@register
class SmoothQuant(Method):
    name = "smoothquant"
    family = "quantization"
    paper = "Xiao et al. 2023, SmoothQuant: Accurate and Efficient Post-Training Quantization for LLMs, arXiv:2211.10438"
    needs_calibration = True
    defaults = {"alpha": 0.5, "kernel": "auto", "max_length": 512}

    def axes(self):
        return {"bits": 8}  # W8A8

    def check(self):
        _check_alpha(self.name, self.params["alpha"])
        _check_max_length(self.name, self.params["max_length"])
        if self.params["kernel"] not in KERNELS:
            raise MethodError(f"smoothquant kernel must be one of {', '.join(KERNELS)}, got {self.params['kernel']!r}")

    def apply(self, model, tokenizer, calibration=None):
        if not calibration:
            raise MethodError("smoothquant needs calibration texts")
        self.info.update(smooth_model(model, tokenizer, calibration, alpha=float(self.params["alpha"]),
                                      max_length=self.params["max_length"]))
        self.info.update(quantize_w8a8(model, self.params["kernel"]))
        self.info["device"] = str(next(model.parameters()).device)
        self._keep_for_vllm(model)
        return model

    def _keep_for_vllm(self, model) -> None:
        """The W8A8 model as a compressed-tensors checkpoint, kept so that vLLM decodes it with its own int8 kernels
        (:mod:`studylib.core.engines`)."""
        import tempfile

        from studylib.core import engines

        with tempfile.TemporaryDirectory(prefix="studylib-w8a8-") as tmp:
            self.info["vllm_export"] = export_w8a8(model, tmp, str(model.dtype).replace("torch.", ""))
            engines.keep_checkpoint(model, tmp, "compressed-tensors-w8a8", move=False)


@register
class SmoothQuantNF4(Method):
    name = "smoothquant-nf4"
    family = "quantization"
    paper = ("Xiao et al. 2023, SmoothQuant, arXiv:2211.10438 (smoothing); Dettmers et al. 2023, QLoRA, "
             "arXiv:2305.14314 (NF4)")
    needs_calibration = True
    defaults = {"alpha": 0.5, "max_length": 512, "double_quant": True, "compute_dtype": "bfloat16"}

    def axes(self):
        return {"bits": 4}

    def check(self):
        from .bnb import COMPUTE_DTYPES

        _check_alpha(self.name, self.params["alpha"])
        _check_max_length(self.name, self.params["max_length"])
        if not isinstance(self.params["double_quant"], bool):
            raise MethodError(f"{self.name} double_quant must be true or false, got {self.params['double_quant']!r}")
        if self.params["compute_dtype"] not in COMPUTE_DTYPES:
            raise MethodError(f"{self.name} compute_dtype must be one of {COMPUTE_DTYPES}, got {self.params['compute_dtype']!r}")

    def apply(self, model, tokenizer, calibration=None):
        from .bnb import nf4_quantize

        if not calibration:
            raise MethodError("smoothquant-nf4 needs calibration texts")
        self.info.update(smooth_model(model, tokenizer, calibration, alpha=float(self.params["alpha"]),
                                      max_length=self.params["max_length"]))
        model, nf4 = nf4_quantize(model, tokenizer, double_quant=self.params["double_quant"],
                                  compute_dtype=self.params["compute_dtype"])
        self.info["nf4"] = nf4
        return model
