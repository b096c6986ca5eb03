"""The benchmark's models: an architecture built from its config with random weights, its bytes, and freeing it.

Speed and memory depend on shapes and kernels, not on the weights' values, so every format starts from
:func:`build_random` (no download). :func:`floor_bytes` is what one decoding step must read at least: the numerator
of the physical floor a format's batch-1 time is compared with.
"""

from __future__ import annotations

import gc

import torch

from studylib.bench.schema import ARCHITECTURES


def llama_config(name: str):
    from transformers import LlamaConfig

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return LlamaConfig(**ARCHITECTURES[name], pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def build_random(name: str, dtype: str = "float16", device: str = "cuda", seed: int = 0, num_layers: int | None = None):
    """The architecture with random (normal, std 0.02) weights, allocated directly in ``dtype`` on ``device``."""
    from transformers import LlamaForCausalLM

    config = llama_config(name)
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def sync(device) -> None:
    """Wait for the device's queued work (CUDA), so that a wall-clock time covers it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def free() -> None:
    """Give the memory of dropped models back before the next one is built (the caller drops its references)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def tensor_bytes(t) -> int:
    """Bytes of a tensor as its kernels read it: a semi-structured sparse weight counts its packed values and
    metadata (not the transposed copy CUTLASS keeps for backward passes)."""
    from torch.sparse import SparseSemiStructuredTensor

    if isinstance(t, SparseSemiStructuredTensor):
        parts = [t.packed, t.meta] if t.packed is not None else [t.packed_t, t.meta_t]
        return sum(p.numel() * p.element_size() for p in parts if p is not None)
    return t.numel() * t.element_size()


def weight_bytes(model) -> int:
    """Bytes of every parameter and buffer as held in memory (packed formats count packed: bitsandbytes' 4-bit
    and GPTQ's integer buffers, 2:4 sparse values + metadata). Quantization scales kept as plain attributes
    (bitsandbytes' absmax) are not parameters and are not counted."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total


def floor_bytes(model) -> int:
    """Bytes one decoding step must read at least: every weight except the input embedding table, of which a step
    reads one row per sequence (the KV cache, small at these lengths, is left out)."""
    emb = model.get_input_embeddings().weight
    return weight_bytes(model) - tensor_bytes(emb) + emb.shape[1] * emb.element_size()
