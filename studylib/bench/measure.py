"""Every figure of one built model, in one process: eager decode, prefill, peak memory, storage, graph decode."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from studylib.bench.arch import floor_bytes, weight_bytes
from studylib.bench.graph import graph_figures
from studylib.bench.schema import GRAPH_OFF, not_attempted_mode
from studylib.bench.timing import decode_time_per_token, prefill_seconds


@dataclass
class Measurement:
    variant: str
    kernel: str
    decode_b1_ms: float
    decode_large_ms: float  # per token, at batch ``large_batch``
    large_batch: int
    prefill_ms: float
    prefill_tokens: int
    peak_memory_bytes: int | None
    weight_bytes: int
    floor_bytes: int
    storage_bytes: int | None
    params: int
    layers: int
    floor_ms: float | None = None
    storage_note: str = ""
    # decode through a static KV cache, each step one CUDA graph replayed (studylib.bench.graph)
    graph_b1_ms: float | None = None
    graph_large_ms: float | None = None  # per token, at batch ``large_batch``
    graph_floor_ratio: float | None = None  # graph_b1_ms / floor_ms
    graph_mode: str = GRAPH_OFF  # "cuda-graph", "static-cache eager (cpu)", "failed: ...", "not attempted: ...", off
    graph_error: str | None = None  # what failed, per batch size (the eager figures above are kept)
    graph_check: dict | None = None  # replayed tokens against the same steps uncaptured (CUDA only)
    host_load: dict | None = None  # CPUs and load averages before and after the eager and the graph timings
    memory: dict | None = None  # peak_memory_bytes' parts (efficiency.footprint): the model's, decoding's, the rest

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def measure(variant: str, model, *, kernel: str, bandwidth: float | None, new_tokens: int = 64, repeats: int = 5,
            warmup: int = 2, prompt_tokens: int = 32, large_batch: int = 16, prefill_tokens: int = 512,
            storage: bool = True, storage_bytes: int | None = None, storage_note: str = "",
            graph_decode: bool = True, graph_skip: str | None = None) -> Measurement:
    """All timings of one model; the floor is :func:`studylib.bench.arch.floor_bytes` over the measured bandwidth.

    Eager decode (``model.generate``), prefill and peak memory first; then storage; then (``graph_decode``) decode
    through a static KV cache replayed as a CUDA graph, at batch 1 and ``large_batch``
    (:func:`studylib.bench.graph.graph_figures`): a capture that fails leaves its error in ``graph_mode`` /
    ``graph_error`` and every other figure as measured; ``graph_skip`` (why the format's step is known not to be
    capturable, :func:`studylib.bench.schema.capture_skip`) skips it: graph figures None, ``graph_mode``
    "not attempted: ...", no ``graph_error``. Peak memory is the eager section's, as the format's own footprint
    (:func:`studylib.core.efficiency.footprint`: leftovers of an earlier build do not count). The host's load
    averages are taken before and after each timed section (``host_load``): other jobs on the same CPUs slow
    launch-bound timings.

    Storage: ``storage_bytes`` when the build knows it (a checkpoint it wrote), else the model saved as it is now
    (``storage``), else None.
    """
    from studylib.core.efficiency import PeakMemory, count_params, footprint, resident_bytes, saved_storage_bytes
    from studylib.core.records import host_load

    device = next(model.parameters()).device
    timing = dict(new_tokens=new_tokens, repeats=repeats, warmup=warmup, prompt_tokens=prompt_tokens)
    load = {"cpus": os.cpu_count(), "eager": {"before": host_load()["load_average_1_5_15_min"]}}
    with PeakMemory(device) as peak:
        b1 = decode_time_per_token(model, batch_size=1, **timing)
        big = decode_time_per_token(model, batch_size=large_batch, **timing)
        pre = prefill_seconds(model, tokens=prefill_tokens, warmup=warmup, repeats=repeats)
    load["eager"]["after"] = host_load()["load_average_1_5_15_min"]
    memory = footprint(resident_bytes(model, device) if peak.bytes is not None else None, peak.before, peak.bytes)
    if storage_bytes is None and storage:
        try:
            storage_bytes = saved_storage_bytes(model)
            storage_note = storage_note or "the model saved as it runs (save_pretrained, safetensors)"
        except Exception as err:  # noqa: BLE001 -- a format that cannot be saved is reported, not hidden
            storage_note = f"not saved: {type(err).__name__}: {str(err)[:160]}"
    graph = {}
    if graph_decode and graph_skip:
        graph = {"graph_mode": not_attempted_mode(graph_skip)}  # not captured: nothing timed, nothing failed
    elif graph_decode:
        load["graph"] = {"before": host_load()["load_average_1_5_15_min"]}
        graph = graph_figures(model, large_batch=large_batch, timing=timing)
        load["graph"]["after"] = host_load()["load_average_1_5_15_min"]
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    fbytes = floor_bytes(model)
    floor_ms = None if not bandwidth else 1000 * fbytes / bandwidth
    graph_b1 = graph.get("graph_b1_ms")
    return Measurement(
        variant=variant, kernel=kernel, decode_b1_ms=1000 * b1, decode_large_ms=1000 * big, large_batch=large_batch,
        prefill_ms=1000 * pre, prefill_tokens=prefill_tokens, peak_memory_bytes=memory["peak_memory_bytes"],
        weight_bytes=weight_bytes(model), floor_bytes=fbytes, storage_bytes=storage_bytes,
        params=count_params(model), layers=model.config.num_hidden_layers,
        floor_ms=floor_ms, storage_note=storage_note, **graph,
        graph_floor_ratio=graph_b1 / floor_ms if graph_b1 and floor_ms else None, host_load=load,
        memory=memory["memory"],
    )
