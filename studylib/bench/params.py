"""Parameters of 40_efficiency_7b (the 7B-architecture efficiency benchmark), validated before any model is built.

The notebook names this class in its metadata as ``"studylib.bench.params:BenchmarkParams"``; its parameters
cell declares the same names with the same defaults: the CPU smoke profile (the tiny Llama on the CPU, short
timings). The full profile (``params/40_efficiency_7b_llama2-7b.yaml``) sets the Llama-2-7B architecture on CUDA.
Whether the device exists is checked when the notebook starts (:func:`studylib.bench.benchmark.plan`), not here, so that
the full profile's file validates on any machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from studylib.bench.benchmark import ARCHITECTURES, REFERENCE
from studylib.bench.variants import SPARSE_KERNELS, VARIANTS
from studylib.core.params import NotebookParams, ParamsError, _check, _positive_int
from studylib.core.records import PROFILES


@dataclass
class BenchmarkParams(NotebookParams):
    """40_efficiency_7b: every compressed format on a random-weight architecture, timed in one process."""

    profile: str = "smoke"
    run_name: str = "smoke"
    architecture: str = "tiny-llama"
    device: str = "cpu"
    variants: list = field(default_factory=lambda: list(VARIANTS))
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
    time_gptq: bool = True
    time_wanda: bool = True
    wanda_sparsity: float = 0.5
    wanda_calib_samples: int = 4
    wanda_calib_tokens: int = 64
    wanda_batch_size: int = 2
    time_budget_s: int | None = None
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
        _check(isinstance(self.variants, list) and self.variants,
               f"variants must be a non-empty list, got {self.variants!r}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        _check(not unknown, f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
        _check(len(set(self.variants)) == len(self.variants), f"variants repeat: {self.variants}")
        _check(REFERENCE in self.variants, f"variants must include {REFERENCE!r}: every ratio is to it")
        _check(isinstance(self.seed, int) and not isinstance(self.seed, bool),
               f"seed must be an integer, got {self.seed!r}")
        _check(isinstance(self.warmup, int) and not isinstance(self.warmup, bool) and self.warmup >= 0,
               f"warmup must be an integer >= 0, got {self.warmup!r}")
        for name in ("repeats", "prompt_tokens", "large_batch", "prefill_tokens", "bandwidth_mib", "gptq_calib_samples",
                     "gptq_calib_tokens", "gptq_w8_calib_samples", "gptq_w8_calib_tokens", "wanda_calib_samples",
                     "wanda_calib_tokens", "wanda_batch_size"):
            _positive_int(name, getattr(self, name))
        _positive_int("time_budget_s", self.time_budget_s, allow_none=True)
        _check(isinstance(self.new_tokens, int) and not isinstance(self.new_tokens, bool) and self.new_tokens >= 2,
               f"new_tokens must be an integer >= 2 (a time per token needs two lengths), got {self.new_tokens!r}")
        arch = ARCHITECTURES[self.architecture]
        longest = max(self.prompt_tokens + self.new_tokens, self.prefill_tokens, self.gptq_calib_tokens,
                      self.gptq_w8_calib_tokens, self.wanda_calib_tokens)
        _check(longest <= arch["max_position_embeddings"],
               f"sequences of {longest} tokens exceed {self.architecture}'s "
               f"{arch['max_position_embeddings']} positions")
        for name in ("storage", "graph_decode", "time_gptq", "time_wanda"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        _check(self.gptq_backend in BACKENDS,
               f"gptq_backend must be one of {', '.join(BACKENDS)}, got {self.gptq_backend!r}")
        g = self.gptq_group_size
        _check(isinstance(g, int) and g in GROUP_SIZES, f"gptq_group_size must be one of {GROUP_SIZES}, got {g!r}")
        _check(g == -1 or (arch["hidden_size"] % g == 0 and arch["intermediate_size"] % g == 0),
               f"gptq_group_size {g} does not divide {self.architecture}'s layer widths "
               f"({arch['hidden_size']}, {arch['intermediate_size']})")
        _check(self.sparse_kernel in SPARSE_KERNELS,
               f"sparse_kernel must be one of {SPARSE_KERNELS}, got {self.sparse_kernel!r}")
        s = self.wanda_sparsity
        _check(isinstance(s, float) and 0 < s < 1, f"wanda_sparsity must be a fraction in (0, 1), got {s!r}")



__all__ = ["BenchmarkParams", "ParamsError"]
