"""The formats the benchmark measures, each built from the random architecture by the study's own code.

Every builder starts from :func:`studylib.bench.arch.build_random` in float16 (the reference format) on the
benchmark's device and returns a :class:`Built`: the model, the kernel that actually holds its linear layers, and
what the build did. Where a study method exists, its code path is the one used:

``fp16`` / ``bf16``   the dense model in that dtype (torch's dense matmul).
``bnb-int8``          ``studylib.methods.bnb`` (``bnb-int8``, threshold 6.0): saved and reloaded with a
                      ``BitsAndBytesConfig`` onto the same device, as the study's notebooks do.
``bnb-nf4``           ``bnb-nf4`` with double quantization; compute dtype float16 (the reference's dtype).
``gptq-w4/w8``        ``studylib.methods.gptq`` (GPTQModel): 4 or 8 bits, ``gptq_group_size``, the kernel asked for
                      in ``gptq_backend`` (Marlin by default; the method falls back to GPTQModel's ``auto`` and records
                      why). Calibration: random token ids (``gptq_calib_*`` for W4, whose build is the timed GPTQ
                      compression; ``gptq_w8_calib_*`` for W8, whose speed does not depend on it). GPTQModel wants a
                      tokenizer saved with the checkpoint: a three-token placeholder (unk, bos, eos) is saved; the ids
                      are given directly.
``sparse-2of4``       every decoder linear pruned to 2 of every 4 consecutive input weights by magnitude, then (CUDA)
                      converted with PyTorch's semi-structured sparse tensors: cuSPARSELt, else CUTLASS
                      (``sparse_kernel``); the first layer's output is checked against the dense product. On CPU
                      there is no such kernel: the masked weights stay dense, and the record says so. Storage: the
                      dense safetensors with zeros (the compressed format is not saved).
``layers-75/50``      the middle block of decoder layers removed (``studylib.methods.layers.keep_layers``: config and
                      KV-cache indices follow), keeping 75 % / 50 % of them.
``wanda-50``          Wanda at 50 % unstructured sparsity (:func:`studylib.bench.wanda.wanda_layerwise`) on
                      ``wanda_calib_*`` random token ids; its pruning is the timed Wanda compression. The zeros stay
                      in the dense weights (no kernel skips unstructured zeros), so it runs on the dense kernels.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from studylib.bench import arch
from studylib.bench.schema import ARCHITECTURES, HF_VARIANTS, LAYER_KEEP, NO_GRAPH_CAPTURE
from studylib.bench.wanda import wanda_layerwise

LAYER_FRACTIONS = {k: v for k, v in LAYER_KEEP.items() if k in HF_VARIANTS}
WANDA_SPARSITY = {"wanda-50": 0.5}
ZEROS_NOTE = "dense safetensors with the pruned weights as zeros (the sparse format is not saved compressed)"


@dataclass
class Built:
    model: object
    kernel: str
    info: dict = field(default_factory=dict)
    storage_bytes: int | None = None  # known from the build (a checkpoint it wrote); else measured by saving
    storage_note: str = ""
    compress_seconds: float | None = None  # the compression step alone (synchronized), where there is one


def _base(cfg, dtype: str = "float16"):
    return arch.build_random(cfg.architecture, dtype, cfg.device, seed=cfg.seed)


def _timed(device, fn):
    """``(fn(), seconds)``, the device synchronized before and after."""
    arch.sync(device)
    start = time.perf_counter()
    out = fn()
    arch.sync(device)
    return out, time.perf_counter() - start


def linear_classes(model) -> dict:
    """How many of the decoder layers' linear modules each class holds (nn.Linear, Linear8bitLt, MarlinLinear...)."""
    from studylib.methods.pruning import decoder_layers

    counts = Counter()
    for layer in decoder_layers(model):
        for module in layer.modules():
            if hasattr(module, "in_features") and hasattr(module, "out_features") and not list(module.children()):
                counts[type(module).__name__] += 1
    return dict(counts)


def _census(model) -> str:
    return ", ".join(f"{name} x{n}" for name, n in linear_classes(model).items())


def dense_kernel(model) -> str:
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    where = "CUDA (cuBLAS)" if next(model.parameters()).is_cuda else "CPU"
    return f"dense {dtype} matmul on {where}: {_census(model)}"


def random_token_ids(vocab_size: int, samples: int, tokens: int, seed: int):
    """``samples`` x ``tokens`` token ids, uniform in [3, vocab) (0-2 are pad/unk, bos, eos), on the CPU."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab_size, (samples, tokens), generator=g)


def placeholder_tokenizer():
    """A tokenizer of three special tokens (Llama's ids: unk 0, bos 1, eos 2): GPTQModel saves and loads one with
    the checkpoint; the benchmark gives it token ids, never text."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")


def decoder_linears(model) -> dict:
    from studylib.methods.pruning import decoder_layers, layer_linears

    return {f"{i}.{name}": lin for i, layer in enumerate(decoder_layers(model))
            for name, lin in layer_linears(layer).items()}


# ----------------------------------------------------------------------------------------------- builders


def _dense(dtype: str):
    def build(cfg) -> Built:
        model = _base(cfg, dtype)
        return Built(model, dense_kernel(model), {"dtype": dtype})
    return build


def _bnb(method_name: str, **params):
    def build(cfg) -> Built:
        from studylib import methods

        method = methods.build(method_name, **params)
        base = _base(cfg)
        model, seconds = _timed(cfg.device, lambda: method.apply(base, None))
        del base
        info = method.describe()
        return Built(model, f"{_census(model)}: {info.get('kernel')}", info, compress_seconds=seconds)
    return build


def _gptq(bits: int):
    def build(cfg) -> Built:
        from studylib import methods

        samples, tokens = ((cfg.gptq_calib_samples, cfg.gptq_calib_tokens) if bits == 4
                           else (cfg.gptq_w8_calib_samples, cfg.gptq_w8_calib_tokens))
        method = methods.build("gptq", bits=bits, group_size=cfg.gptq_group_size, backend=cfg.gptq_backend)
        ids = random_token_ids(ARCHITECTURES[cfg.architecture]["vocab_size"], samples, tokens, cfg.seed)
        calibration = [{"input_ids": row, "attention_mask": row.new_ones(row.shape)} for row in ids]
        base = _base(cfg)
        model, seconds = _timed(cfg.device, lambda: method.apply(base, placeholder_tokenizer(), calibration))
        del base
        info = method.describe()
        info["calibration"] = {"samples": samples, "tokens_per_sample": tokens, "what": "random token ids"}
        kernel = "; ".join(f"{name} x{k['modules']}: {k['what']}" for name, k in (info.get("kernel") or {}).items())
        if info.get("backend_fallback"):
            kernel += f" (asked for {cfg.gptq_backend}: not available, see info.backend_fallback)"
        return Built(model, kernel or _census(model), info, storage_bytes=info.get("checkpoint_bytes"),
                     storage_note="the GPTQ checkpoint as GPTQModel writes it (packed integer weights)",
                     compress_seconds=seconds)
    return build


def prune_2of4_magnitude(model) -> dict:
    """Zero the 2 smallest-magnitude weights of every 4 consecutive inputs of each decoder linear (in place)."""
    from studylib.methods.pruning import is_n_m, nm_prune_mask

    linears = decoder_linears(model)
    with torch.no_grad():
        for lin in linears.values():
            lin.weight[nm_prune_mask(lin.weight.detach().abs().float(), 2, 4)] = 0
    return {"linears": len(linears), "mask": "magnitude |W|, 2 kept of every 4 consecutive input weights per row",
            "pattern_holds": all(is_n_m(lin.weight, 2, 4) for lin in linears.values())}


def to_semi_structured(linears: dict, choice: str = "auto") -> tuple[str, dict]:
    """Swap each linear's weight for a semi-structured sparse tensor: cuSPARSELt, else CUTLASS (``auto``), or the one
    named. The first layer's product is checked against the dense one before all are converted. Returns (the
    subclass that holds the weights, what was tried); raises when none works."""
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    candidates = {"cusparselt": SparseSemiStructuredTensorCUSPARSELT, "cutlass": SparseSemiStructuredTensorCUTLASS}
    order = list(candidates) if choice == "auto" else [choice]
    tried = {}
    first = next(iter(linears.values()))
    for kernel in order:
        cls = candidates[kernel]
        if kernel == "cusparselt" and not torch.backends.cusparselt.is_available():
            tried[kernel] = "torch.backends.cusparselt.is_available() is False"
            continue
        try:
            dense = first.weight.detach()
            sparse = cls.from_dense(dense)
            x = torch.randn(16, dense.shape[1], device=dense.device, dtype=dense.dtype)
            with torch.no_grad():
                got = torch.nn.functional.linear(x, sparse)
            ref = x @ dense.t()
            err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
            if not err < 1e-2:
                raise RuntimeError(f"sparse product differs from the dense one (max rel. error {err:.3g})")
            for lin in linears.values():
                lin.weight = torch.nn.Parameter(cls.from_dense(lin.weight.detach()), requires_grad=False)
        except Exception as e:  # noqa: BLE001 -- a refused kernel is a result, recorded
            tried[kernel] = f"{type(e).__name__}: {str(e)[:300]}"
            continue
        tried[kernel] = "ran"
        info = {"tried": tried, "check_max_rel_err": err, "torch": torch.__version__}
        try:
            info["cusparselt_version"] = torch.backends.cusparselt.version()
        except Exception:  # noqa: BLE001 -- informational only
            info["cusparselt_version"] = None
        return type(first.weight).__name__, info
    raise RuntimeError(f"no semi-structured sparse kernel ran: {tried}")


def _sparse_2of4(cfg) -> Built:
    from studylib.core.efficiency import saved_storage_bytes

    model = _base(cfg)
    info, seconds = _timed(cfg.device, lambda: prune_2of4_magnitude(model))
    info["prune_seconds"] = seconds
    storage = saved_storage_bytes(model) if cfg.storage else None
    if not str(cfg.device).startswith("cuda"):
        info["sparse_kernel"] = "none on CPU"
        return Built(model, f"dense masked weights (no semi-structured sparse kernel on CPU): {_census(model)}", info,
                     storage_bytes=storage, storage_note=ZEROS_NOTE)
    holder, tried = to_semi_structured(decoder_linears(model), cfg.sparse_kernel)
    info.update(tried)
    return Built(model, f"{holder} x{info['linears']} (torch semi-structured sparse, {cfg.sparse_kernel})", info,
                 storage_bytes=storage, storage_note=ZEROS_NOTE)


def _layers(fraction: float):
    def build(cfg) -> Built:
        from studylib.core.efficiency import count_params
        from studylib.methods.layers import keep_layers, middle_block

        model = _base(cfg)
        n = model.config.num_hidden_layers
        removed = middle_block(n, n - round(n * fraction))
        keep = [i for i in range(n) if i not in set(removed)]
        before = count_params(model)
        keep_layers(model, keep)
        info = {"layers_before": n, "layers_after": len(keep), "removed": removed, "params_before": before,
                "params_after": count_params(model), "how": "studylib.methods.layers.keep_layers (middle block)"}
        return Built(model, dense_kernel(model), info)
    return build


def _wanda(sparsity: float):
    def build(cfg) -> Built:
        from studylib.methods.pruning import sparsity_report

        ids = random_token_ids(ARCHITECTURES[cfg.architecture]["vocab_size"], cfg.wanda_calib_samples,
                               cfg.wanda_calib_tokens, cfg.seed + 1)
        model = _base(cfg)
        done, seconds = _timed(cfg.device, lambda: wanda_layerwise(model, ids, sparsity=sparsity,
                                                                   batch_size=cfg.wanda_batch_size))
        info = {"sparsity": sparsity, "linear_sparsity": sparsity_report(model)["linear_sparsity"],
                "calibration": {"samples": cfg.wanda_calib_samples, "tokens_per_sample": cfg.wanda_calib_tokens,
                                "batch_size": cfg.wanda_batch_size, "what": "random token ids"},
                **done, "implementation": "studylib.bench.wanda.wanda_layerwise (Wanda's scores and per-row masks "
                                          "from studylib.methods.wanda / studylib.methods.pruning; one pass per layer)"}
        kernel = f"{dense_kernel(model)} (unstructured zeros kept in the dense weights)"
        return Built(model, kernel, info, storage_note=ZEROS_NOTE, compress_seconds=seconds)
    return build


BUILDERS = {
    "fp16": _dense("float16"),
    "bf16": _dense("bfloat16"),
    "bnb-int8": _bnb("bnb-int8"),
    "bnb-nf4": _bnb("bnb-nf4", compute_dtype="float16"),
    "gptq-w4": _gptq(4),
    "gptq-w8": _gptq(8),
    "sparse-2of4": _sparse_2of4,
    "layers-75": _layers(LAYER_FRACTIONS["layers-75"]),
    "layers-50": _layers(LAYER_FRACTIONS["layers-50"]),
    "wanda-50": _wanda(WANDA_SPARSITY["wanda-50"]),
}
assert set(BUILDERS) == set(HF_VARIANTS)
assert set(NO_GRAPH_CAPTURE) <= set(HF_VARIANTS)


def build_variant(name: str, cfg) -> Built:
    if name not in BUILDERS:
        raise ValueError(f"unknown benchmark variant {name!r}; known: {', '.join(HF_VARIANTS)}")
    return BUILDERS[name](cfg)
