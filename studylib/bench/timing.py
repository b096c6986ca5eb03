"""Eager timings of one model: the median of synchronized runs, the device copy bandwidth, decode and prefill.

Every time is the median of ``repeats`` timed runs after ``warmup`` untimed ones, the device synchronized around
each run so that the wall clock covers the queued kernels.
"""

from __future__ import annotations

import statistics
import time

import torch

from studylib.bench.arch import sync


def median_seconds(fn, *, warmup: int = 2, repeats: int = 5, device="cuda") -> float:
    """Median wall time of ``fn()`` over ``repeats`` synchronized runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device: str = "cuda", n_bytes: int = 2 * 1024**3, repeats: int = 10) -> float:
    """Device copy bandwidth in bytes/s: a buffer of ``n_bytes`` copied into another, bytes read plus bytes
    written over the median time (the achievable read+write traffic of the memory)."""
    src = torch.empty(n_bytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), warmup=2, repeats=repeats, device=device)
    del src, dst
    return 2 * n_bytes / seconds


def decode_time_per_token(model, *, batch_size: int, prompt_tokens: int = 32, new_tokens: int = 64,
                          warmup: int = 2, repeats: int = 5) -> float:
    """Seconds per decoded token through ``model.generate``: (generate N tokens - generate 1 token) / (N - 1),
    medians, greedy, EOS ignored. Subtracting the one-token run removes prefill and set-up from the figure."""
    device = next(model.parameters()).device
    ids = torch.randint(3, model.config.vocab_size, (batch_size, prompt_tokens), device=device)
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
    device = next(model.parameters()).device
    ids = torch.randint(3, model.config.vocab_size, (batch_size, tokens), device=device)

    def run():
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    return median_seconds(run, warmup=warmup, repeats=repeats, device=device)
