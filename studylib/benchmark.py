"""Efficiency at the real scale: every compressed format on a 7B architecture with random weights.

Speed and memory depend on shapes and kernels, not on the weights' values, so the benchmark builds the
architecture from its config (Llama-2-7B = ALMA-7B's) on the GPU with random weights -- no download -- and
measures, in one process, for each format: batch-1 decode time per token, decode at batch 16, prefill of
512 tokens, peak memory and the storage of the saved model. Every time is the median of repeated timed
runs after warm-up; the report gives ratios to the fp16 model and each format's batch-1 time per token
against its physical floor (weight bytes / measured copy bandwidth).
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass

# Architecture facts of the public configs (not measurements).
ARCHITECTURES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5),
    # the CPU smoke profile: same family, tiny
    "tiny-llama": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=512, max_position_embeddings=1024, rms_norm_eps=1e-5),
}


def llama_config(name: str):
    from transformers import LlamaConfig

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return LlamaConfig(**ARCHITECTURES[name], pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def build_random(name: str, dtype: str = "float16", device: str = "cuda", seed: int = 0, num_layers: int | None = None):
    """The architecture with random (normal, std 0.02) weights, allocated directly in ``dtype`` on ``device``."""
    import torch
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


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, *, warmup: int = 2, repeats: int = 5, device="cuda") -> float:
    """Median wall time of ``fn()`` over ``repeats`` synchronized runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device: str = "cuda", n_bytes: int = 2 * 1024**3, repeats: int = 10) -> float:
    """Device copy bandwidth in bytes/s, counting bytes read plus bytes written (METHOD.md's convention)."""
    import torch

    src = torch.empty(n_bytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), warmup=2, repeats=repeats, device=device)
    del src, dst
    return 2 * n_bytes / seconds


def weight_bytes(model) -> int:
    """Bytes of every parameter and buffer as held in memory (packed formats count packed)."""
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        total += t.numel() * t.element_size()
    return total


def decode_time_per_token(model, *, batch_size: int, prompt_tokens: int = 32, new_tokens: int = 64,
                          warmup: int = 2, repeats: int = 5) -> float:
    """Seconds per decoded token: (generate N tokens - generate 1 token) / (N - 1), medians, EOS ignored.

    Subtracting the one-token run removes prefill and set-up from the per-token figure.
    """
    import torch

    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch_size, prompt_tokens), device=device)
    mask = torch.ones_like(ids)

    def run(n):
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                           pad_token_id=0, temperature=None, top_p=None, top_k=None)

    full = median_seconds(lambda: run(new_tokens), warmup=warmup, repeats=repeats, device=device)
    one = median_seconds(lambda: run(1), warmup=warmup, repeats=repeats, device=device)
    return max(full - one, 0.0) / (new_tokens - 1)


def prefill_seconds(model, *, tokens: int = 512, batch_size: int = 1, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds of one forward pass over ``tokens`` tokens (no cache)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.randint(3, model.config.vocab_size, (batch_size, tokens), device=device)

    def run():
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    return median_seconds(run, warmup=warmup, repeats=repeats, device=device)


@dataclass
class Measurement:
    variant: str
    kernel: str
    decode_b1_ms: float
    decode_b16_ms_per_token: float
    prefill_ms: float
    peak_memory_bytes: int | None
    weight_bytes: int
    storage_bytes: int | None
    params: int
    layers: int
    floor_ms: float | None = None
    notes: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def measure(variant: str, model, *, kernel: str, bandwidth: float | None, new_tokens: int = 64, repeats: int = 5,
            prefill_tokens: int = 512, storage: bool = True, notes: str = "") -> Measurement:
    """All timings of one model, in one process; the floor is weight bytes over the measured bandwidth."""
    import torch

    from .efficiency import PeakMemory, count_params, saved_storage_bytes

    device = next(model.parameters()).device
    with PeakMemory(device) as peak:
        b1 = decode_time_per_token(model, batch_size=1, new_tokens=new_tokens, repeats=repeats)
        b16 = decode_time_per_token(model, batch_size=16, new_tokens=new_tokens, repeats=repeats)
        pre = prefill_seconds(model, tokens=prefill_tokens, repeats=repeats)
    wbytes = weight_bytes(model)
    stored = None
    if storage:
        try:
            stored = saved_storage_bytes(model)
        except Exception as err:  # noqa: BLE001 -- a format that cannot be saved is reported, not hidden
            notes = f"{notes}; not saved: {type(err).__name__}: {str(err)[:120]}".lstrip("; ")
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    return Measurement(
        variant=variant, kernel=kernel, decode_b1_ms=1000 * b1, decode_b16_ms_per_token=1000 * b16,
        prefill_ms=1000 * pre, peak_memory_bytes=peak.bytes, weight_bytes=wbytes, storage_bytes=stored,
        params=count_params(model), layers=model.config.num_hidden_layers,
        floor_ms=None if not bandwidth else 1000 * wbytes / bandwidth, notes=notes,
    )


def ratios(measurements: list[Measurement], reference: str = "fp16") -> list[dict]:
    """Each measurement with its ratios to the reference format (time: lower is faster; prefill speed-up)."""
    ref = next((m for m in measurements if m.variant == reference), None)
    rows = []
    for m in measurements:
        row = m.as_dict()
        if ref:
            row["decode_b1_ratio"] = m.decode_b1_ms / ref.decode_b1_ms
            row["decode_b16_ratio"] = m.decode_b16_ms_per_token / ref.decode_b16_ms_per_token
            row["prefill_speedup"] = ref.prefill_ms / m.prefill_ms
            row["memory_ratio"] = (m.peak_memory_bytes / ref.peak_memory_bytes
                                   if m.peak_memory_bytes and ref.peak_memory_bytes else None)
            row["storage_ratio"] = (m.storage_bytes / ref.storage_bytes
                                    if m.storage_bytes and ref.storage_bytes else None)
        row["floor_ratio"] = m.decode_b1_ms / m.floor_ms if m.floor_ms else None
        rows.append(row)
    return rows


def free(model) -> None:
    """Drop a model and give its memory back before the next variant is built."""
    import torch

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
