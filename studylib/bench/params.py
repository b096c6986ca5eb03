"""Parameters of 40_efficiency_7b (the 7B-architecture efficiency benchmark), validated before any model is built.

The notebook's runs take this class (``studylib.runs.NOTEBOOKS``; the notebook calls :meth:`BenchmarkParams.load`).
Its defaults are the CPU smoke profile (the tiny Llama on the CPU, short timings). The full profile
(``params/40_efficiency_7b_llama2-7b.yaml``) sets the Llama-2-7B architecture on CUDA and sweeps ``variant``: one
run, process and record per format, named ``llama2-7b-<variant>``. Whether the device exists is checked when the
notebook starts (:func:`studylib.bench.run.plan`), not here, so that the full profile's file validates on any
machine. Validation imports no model library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from studylib.bench.schema import ARCHITECTURES, HF_VARIANTS, REFERENCE, SPARSE_KERNELS, VARIANTS, VLLM_VARIANTS
from studylib.runs.params import NotebookParams, ParamsError, _check, _positive_int
from studylib.core.records import PROFILES


@dataclass
class BenchmarkParams(NotebookParams):
    """40_efficiency_7b: one format measured beside its own fp16, in one process, on a random-weight architecture.

    ``variant``      the format measured beside fp16 (the reference of every ratio), one of
                     :data:`studylib.bench.schema.VARIANTS`; ``fp16`` measures fp16 alone. A sweep over it gives one
                     process and one record per format.
    ``architecture`` / ``device`` / ``seed``: what is built (random weights and calibration ids from ``seed``).
    ``warmup`` / ``repeats``: untimed and timed runs of every timing (the median is recorded).
    ``prompt_tokens`` / ``new_tokens`` / ``large_batch`` / ``prefill_tokens``: the decode and prefill shapes.
    ``bandwidth_mib``: the buffer copied to measure the device bandwidth (the floor's denominator).
    ``storage``: save each model once to measure its storage. ``graph_decode``: also decode through a static KV
    cache, each step replayed as a CUDA graph.
    ``gptq_*``: the GPTQ formats' kernel, group size and calibration (``gptq_calib_*`` for W4, whose build is the
    timed GPTQ compression; ``gptq_w8_calib_*`` for W8). ``sparse_kernel``: the 2:4 kernel on CUDA.
    ``wanda_*``: ``wanda-50``'s calibration and batch (its pruning is the timed Wanda compression).
    ``vllm_memory``: the share of GPU memory a vLLM format's engine takes (``vllm-*`` variants, measured beside
    ``vllm-fp16``: :mod:`studylib.bench.served`).

    Parameters a format does not use (the GPTQ ones for ``bf16``) are ignored by it.
    """

    NOTEBOOK: ClassVar[str] = "40_efficiency_7b"
    FAMILY: ClassVar[str] = "efficiency"
    GPU: ClassVar[str] = "exclusive"  # times decoding and compression
    H200_MINUTES: ClassVar[float] = 6.0  # fp16 and one format; GPTQ W4's 128 x 2048-token calibration the longest
    # what the CPU smoke profile runs of the full profile's sweep: every format (each a few seconds on the tiny Llama)
    # (the vLLM formats need a GPU and vLLM: the smoke profile has neither)
    SMOKE_SWEEP: ClassVar[dict] = {"variant": [v for v in HF_VARIANTS if v != REFERENCE]}

    profile: str = "smoke"
    run_name: str = "smoke"
    architecture: str = "tiny-llama"
    device: str = "cpu"
    variant: str = "gptq-w4"
    seed: int = 0
    warmup: int = 1
    repeats: int = 3
    prompt_tokens: int = 16
    new_tokens: int = 16
    large_batch: int = 16
    prefill_tokens: int = 64
    bandwidth_mib: int = 64
    storage: bool = True
    graph_decode: bool = True
    gptq_backend: str = "marlin"
    gptq_group_size: int = 128
    gptq_calib_samples: int = 4
    gptq_calib_tokens: int = 64
    gptq_w8_calib_samples: int = 2
    gptq_w8_calib_tokens: int = 64
    sparse_kernel: str = "auto"
    wanda_calib_samples: int = 4
    wanda_calib_tokens: int = 64
    wanda_batch_size: int = 2
    vllm_memory: float = 0.5
    results_dir: str | None = None

    def __post_init__(self):
        from studylib.methods.gptq import BACKENDS, GROUP_SIZES

        _check(self.profile in PROFILES, f"profile must be one of {PROFILES}, got {self.profile!r}")
        _check(isinstance(self.run_name, str) and self.run_name and "/" not in self.run_name
               and not self.run_name.startswith("."), f"run_name must be a plain file name, got {self.run_name!r}")
        _check(self.architecture in ARCHITECTURES,
               f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        _check(isinstance(self.device, str) and re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is not None,
               f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        _check(isinstance(self.variant, str) and self.variant in VARIANTS,
               f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        _check(isinstance(self.seed, int) and not isinstance(self.seed, bool),
               f"seed must be an integer, got {self.seed!r}")
        _check(isinstance(self.warmup, int) and not isinstance(self.warmup, bool) and self.warmup >= 0,
               f"warmup must be an integer >= 0, got {self.warmup!r}")
        for name in ("repeats", "prompt_tokens", "large_batch", "prefill_tokens", "bandwidth_mib", "gptq_calib_samples",
                     "gptq_calib_tokens", "gptq_w8_calib_samples", "gptq_w8_calib_tokens", "wanda_calib_samples",
                     "wanda_calib_tokens", "wanda_batch_size"):
            _positive_int(name, getattr(self, name))
        _check(isinstance(self.new_tokens, int) and not isinstance(self.new_tokens, bool) and self.new_tokens >= 2,
               f"new_tokens must be an integer >= 2 (a time per token needs two lengths), got {self.new_tokens!r}")
        arch = ARCHITECTURES[self.architecture]
        longest = max(self.prompt_tokens + self.new_tokens, self.prefill_tokens, self.gptq_calib_tokens,
                      self.gptq_w8_calib_tokens, self.wanda_calib_tokens)
        _check(longest <= arch["max_position_embeddings"],
               f"sequences of {longest} tokens exceed {self.architecture}'s "
               f"{arch['max_position_embeddings']} positions")
        for name in ("storage", "graph_decode"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        _check(self.gptq_backend in BACKENDS,
               f"gptq_backend must be one of {', '.join(BACKENDS)}, got {self.gptq_backend!r}")
        g = self.gptq_group_size
        _check(isinstance(g, int) and g in GROUP_SIZES, f"gptq_group_size must be one of {GROUP_SIZES}, got {g!r}")
        _check(g == -1 or (arch["hidden_size"] % g == 0 and arch["intermediate_size"] % g == 0),
               f"gptq_group_size {g} does not divide {self.architecture}'s layer widths "
               f"({arch['hidden_size']}, {arch['intermediate_size']})")
        _check(isinstance(self.vllm_memory, float) and 0 < self.vllm_memory < 1,
               f"vllm_memory must be a float in (0, 1), got {self.vllm_memory!r}")
        _check(self.variant not in VLLM_VARIANTS or self.device.startswith("cuda"),
               f"variant {self.variant!r} is served by vLLM, which needs device 'cuda'")
        _check(self.sparse_kernel in SPARSE_KERNELS,
               f"sparse_kernel must be one of {SPARSE_KERNELS}, got {self.sparse_kernel!r}")


__all__ = ["BenchmarkParams", "ParamsError"]
