"""What a compressed model costs to keep and to run: parameters, sparsity, storage, memory, speed.

Conventions: storage in decimal GB (1e9 bytes) of the safetensors files as saved; time per token from
synchronized wall-clock timings after a warm-up run; peak memory from the CUDA allocator (``None`` on CPU,
where it is not measured) as the model's own footprint: the bytes of its tensors on the device plus the most its
decoding allocated beyond what was already allocated (:func:`footprint`), so that whatever else the process holds
(another copy of the model, leftovers of compression) does not count.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from studylib.core.records import gpu_processes


def _logical_numel(p) -> int:
    """Elements of the weight a parameter stands for: bitsandbytes' 4-bit parameters pack two per byte."""
    state = getattr(p, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        import math

        return math.prod(state.shape)
    return p.numel()


def _packed_modules(model) -> list:
    """Layers holding their weight as a packed integer tensor (GPTQ-style ``qweight``). Depending on the kernel it
    is a buffer (GPTQModel's torch/Triton layers) or a parameter (Marlin, repacked): either way ``numel`` counts
    int32 words, not weights."""
    import torch

    return [m for m in model.modules()
            if isinstance(getattr(m, "qweight", None), torch.Tensor) and hasattr(m, "in_features")]


def _weights(model):
    """(parameter, logical weight count) pairs plus the packed layers' in x out, every tensor once."""
    packed = _packed_modules(model)
    skip = {id(t) for m in packed for name, t in m.named_parameters(recurse=False) if name != "bias"}
    params = [p for p in model.parameters() if id(p) not in skip]
    return params, sum(int(m.in_features) * int(m.out_features) for m in packed)


def count_params(model) -> int:
    """Parameters of the model's weights (tied embeddings counted once; 4-bit and GPTQ packed weights unpacked)."""
    params, packed = _weights(model)
    return sum(_logical_numel(p) for p in params) + packed


def count_nonzero_params(model) -> int:
    """Parameters that are not exactly zero -- what unstructured pruning removes (4-bit weights dequantized).

    GPTQ-packed integer weights are counted as non-zero (their zeros are not visible without dequantizing;
    ``pruning.dequantized_sparsity`` measures them)."""
    import torch

    params, packed = _weights(model)
    total = 0
    with torch.no_grad():
        for p in params:
            state = getattr(p, "quant_state", None)
            if state is not None and getattr(state, "shape", None) is not None:
                import bitsandbytes.functional as bnbf

                total += int(torch.count_nonzero(bnbf.dequantize_4bit(p.data, state)).item())
            elif p.dtype.itemsize == 1 and p.dtype.is_floating_point:  # FP8: +0 and -0 are the bytes 0x00 and 0x80
                total += int(torch.count_nonzero(p.data.view(torch.uint8) & 0x7F).item())
            else:
                total += int(torch.count_nonzero(p).item())
    return total + packed


def storage_bytes(path: str | Path) -> int:
    """Bytes of the ``*.safetensors`` files under a saved model directory (adapters included)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files under {path}")
    return sum(f.stat().st_size for f in files)


def saved_storage_bytes(model) -> int:
    """Bytes the model takes when saved as it is now (its dtype, its quantization), measured by saving it."""
    with tempfile.TemporaryDirectory(prefix="studylib-storage-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        return storage_bytes(tmp)


def gb(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else n_bytes / 1e9


def _is_cuda(device) -> bool:
    return str(device).startswith("cuda")


def _sync(device):
    import torch

    if _is_cuda(device):
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak CUDA memory allocated inside a ``with`` block (``bytes``; ``before``: allocated when it began; both None
    on CPU)."""

    def __init__(self, device):
        self.device = device
        self.bytes: int | None = None
        self.before: int | None = None

    def __enter__(self):
        import torch

        if _is_cuda(self.device):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = int(torch.cuda.memory_allocated(self.device))
        return self

    def __exit__(self, *exc):
        import torch

        if _is_cuda(self.device):
            torch.cuda.synchronize(self.device)
            self.bytes = int(torch.cuda.max_memory_allocated(self.device))
        return False


def _storage_key_and_bytes(t) -> tuple:
    try:
        storage = t.untyped_storage()
        return (storage.data_ptr(), storage.nbytes())
    except (RuntimeError, NotImplementedError, TypeError):  # tensor subclasses without one storage (2:4 sparse)
        return (id(t), t.numel() * t.element_size())


def resident_bytes(model, device=None) -> int:
    """Bytes of the model's own tensors on ``device`` (default: its first parameter's): parameters, buffers, tensors
    kept as module attributes (kernel workspaces) and those that quantized weights carry (bitsandbytes' absmax and
    quantization state, LLM.int8's scales). Each storage once (tied embeddings, views)."""
    import torch

    device = torch.device(device) if device is not None else next(model.parameters()).device
    seen, total = set(), 0

    def add(value, depth=0):
        nonlocal total
        if isinstance(value, torch.Tensor):
            if value.device.type == device.type and (device.index is None or value.device.index == device.index):
                key, nbytes = _storage_key_and_bytes(value)
                if key not in seen:
                    seen.add(key)
                    total += nbytes
            if depth == 0:  # what a parameter carries (quant_state, SCB ...)
                for extra in list(vars(value).values()):
                    add(extra, depth + 1)
        elif depth and depth < 3 and hasattr(value, "__dict__") and not isinstance(value, type):
            for extra in list(vars(value).values()):  # a quantization state object (and its nested state2)
                add(extra, depth + 1)

    for module in model.modules():
        for t in list(module._parameters.values()) + list(module._buffers.values()):
            if t is not None:
                add(t)
        for value in list(vars(module).values()):
            if isinstance(value, torch.Tensor):
                add(value, 1)
    return total


def footprint(resident: int | None, before: int | None, peak: int | None) -> dict:
    """The model's peak memory: its resident bytes plus the most its decoding allocated beyond what the process held
    when it began (``before``; ``peak`` is the allocator's maximum meanwhile). What else the process held is reported
    beside it, not counted."""
    if resident is None or before is None or peak is None:
        return {"peak_memory_bytes": None, "memory": None}
    extra = max(peak - before, 0)
    return {"peak_memory_bytes": resident + extra,
            "memory": {"model_resident_bytes": resident, "decode_extra_bytes": extra, "process_peak_bytes": peak,
                       "other_allocated_bytes": max(before - resident, 0),
                       "definition": "model_resident_bytes + decode_extra_bytes: the model's tensors on the device "
                                     "plus what decoding allocated beyond what was already allocated; what else the "
                                     "process held (other_allocated_bytes) is not counted"}}


@contextmanager
def timed(device):
    """Synchronized wall-clock seconds of a block: ``with timed(dev) as t: ...; t()``."""
    _sync(device)
    start = time.perf_counter()
    box = {}
    yield lambda: box["s"]
    _sync(device)
    box["s"] = time.perf_counter() - start


def decode_speed(model, tokenizer, prompt: str, *, batch_size: int = 1, new_tokens: int = 64, repeats: int = 3) -> dict:
    """Time per generated token and tokens/s for greedy decoding of exactly ``new_tokens`` tokens.

    One untimed warm-up run first (kernels, caches, allocator), then ``repeats`` timed runs; the median
    is reported. EOS is ignored (``min_new_tokens``) so every run decodes the same number of steps.
    """
    import torch

    if batch_size < 1 or new_tokens < 1 or repeats < 1:
        raise ValueError("batch_size, new_tokens and repeats must be >= 1")
    device = next(model.parameters()).device
    enc = tokenizer([prompt] * batch_size, return_tensors="pt", padding=True).to(device)
    kwargs = dict(
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    times, sharing = [], gpu_processes()
    with torch.inference_mode():
        model.generate(**enc, **kwargs)  # warm-up, not timed
        for _ in range(repeats):
            with timed(device) as t:
                model.generate(**enc, **kwargs)
            times.append(t())
    seconds = statistics.median(times)
    return {
        "batch_size": batch_size,
        "new_tokens": new_tokens,
        "prompt_tokens": int(enc["input_ids"].shape[1]),
        "repeats": repeats,
        "seconds_median": seconds,
        "time_per_token_ms": 1000 * seconds / new_tokens,
        "tokens_per_s": batch_size * new_tokens / seconds,
        "gpu_processes": sharing,  # on the GPUs when timing began (this one included); > 1: shared, not comparable
    }


def efficiency_report(model, tokenizer, *, prompt: str, batch_sizes=(1,), new_tokens: int = 64, repeats: int = 3,
                      storage_path: str | Path | None = None, storage: int | None = None,
                      measure_storage: bool = True) -> dict:
    """Params, non-zero params, storage, peak memory and decode speed of one model, as one record section.

    Storage: ``storage`` bytes if given, else the safetensors under ``storage_path``, else (``measure_storage``)
    the model saved as it is now; None when none of these applies.
    """
    device = next(model.parameters()).device
    if storage is None and storage_path:
        storage = storage_bytes(storage_path)
    elif storage is None and measure_storage:
        storage = saved_storage_bytes(model)
    report = {
        "params": count_params(model),
        "nonzero_params": count_nonzero_params(model),
        "storage_bytes": storage,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(device),
    }
    report["storage_gb"] = gb(report["storage_bytes"])
    speed = {}
    with PeakMemory(device) as peak:
        for bs in batch_sizes:
            speed[f"batch{bs}"] = decode_speed(model, tokenizer, prompt, batch_size=bs, new_tokens=new_tokens,
                                               repeats=repeats)
    report["decode"] = speed
    first = speed[f"batch{batch_sizes[0]}"]
    report["time_per_token_ms"] = first["time_per_token_ms"]
    report["tokens_per_s"] = first["tokens_per_s"]
    report.update(footprint(resident_bytes(model, device) if peak.bytes is not None else None, peak.before, peak.bytes))
    report["peak_memory_gb"] = gb(report["peak_memory_bytes"])
    return report
