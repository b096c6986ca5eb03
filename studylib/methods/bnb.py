"""bitsandbytes weight quantization: LLM.int8() (``bnb-int8``) and 4-bit NormalFloat (``bnb-nf4``).

Papers:
  * T. Dettmers, M. Lewis, Y. Belkada, L. Zettlemoyer. *LLM.int8(): 8-bit Matrix Multiplication for Transformers at
    Scale*. NeurIPS 2022, arXiv:2208.07339 -- row-wise absmax int8 weights; at run time the activation columns with
    a magnitude above ``threshold`` (6.0 in the paper) are multiplied in fp16, the rest in int8 (mixed precision
    decomposition).
  * T. Dettmers, A. Pagnoni, A. Holtzman, L. Zettlemoyer. *QLoRA: Efficient Finetuning of Quantized LLMs*.
    NeurIPS 2023, arXiv:2305.14314 -- NF4 (4-bit NormalFloat, blocks of 64 weights, absmax scaled) and double
    quantization (the block scales themselves quantized to 8 bits); matmuls run in ``compute_dtype`` (bf16 here).

How it is done here, and why: bitsandbytes quantizes *at load time* in transformers (``BitsAndBytesConfig``). A
method gets an already loaded (possibly already pruned or smoothed) model, so :func:`quantize_with_transformers`
saves that model to a temporary checkpoint and loads it back with the ``BitsAndBytesConfig`` onto the same device.
That is exactly the path of ``from_pretrained(quantization_config=...)``: transformers chooses the modules (every
``nn.Linear`` except ``lm_head`` and weights tied to the embeddings, which stay in the model's dtype), creates
``bnb.nn.Linear8bitLt`` / ``bnb.nn.Linear4bit``, quantizes each weight as it is placed on the device, and the result
saves and reloads like any bitsandbytes checkpoint. Writing the module swap ourselves would duplicate that logic;
the cost of this route is one save + load, recorded apart from the total (``save_seconds``, ``load_seconds``).
Parameters kept in float32 by an earlier step (SmoothQuant's smoothed Gemma norms) are restored after the reload,
which would otherwise cast them to the model's dtype.

What runs (recorded in ``kernel``): real low-bit kernels in both cases -- int8: bitsandbytes' int8 GEMM
(``int8_linear_matmul``: cuBLASLt on CUDA, ``torch._int_mm`` on AVX-512 CPUs) plus an fp16 matmul of the outlier
columns; inputs are cast to fp16 for the int8 path. NF4: bitsandbytes' fused ``gemm_4bit`` on CUDA; on CPUs with
AVX-512-BF16 a packed ``gemv_4bit`` kernel, else dequantize + matmul. The CPU packed kernel needs
``out_features % 32 == 0`` (bitsandbytes 0.50.2 asserts it at the first forward); such modules are switched to the
generic path and listed in ``cpu_packed_kernel_off``.
"""

from __future__ import annotations

import tempfile
import time
import warnings

from . import Method, MethodError, register

COMPUTE_DTYPES = ("bfloat16", "float16", "float32")


def _device_of(model):
    return next(model.parameters()).device


def _kept_fp32(model) -> dict:
    """Floating parameters an earlier step deliberately kept in float32 inside a lower-precision model."""
    import torch

    if model.dtype == torch.float32:
        return {}
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.float32}


def quantize_with_transformers(model, tokenizer, quantization_config) -> tuple[object, dict]:
    """``model`` saved and reloaded with ``quantization_config`` on its device: (quantized model, timings and facts)."""
    import torch

    device = _device_of(model)
    dtype = model.dtype
    keep = _kept_fp32(model)
    cls = type(model)
    info = {}
    with tempfile.TemporaryDirectory(prefix="studylib-bnb-") as tmp:
        start = time.perf_counter()
        model.save_pretrained(tmp, safe_serialization=True)
        info["save_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        qmodel = cls.from_pretrained(tmp, quantization_config=quantization_config, device_map={"": str(device)},
                                     dtype=dtype)
        info["load_seconds"] = time.perf_counter() - start
    restored = []
    for name, value in keep.items():
        module_name, _, pname = name.rpartition(".")
        module = qmodel.get_submodule(module_name)
        current = getattr(module, pname, None)
        if isinstance(current, torch.nn.Parameter) and current.dtype != torch.float32 and current.is_floating_point():
            setattr(module, pname, torch.nn.Parameter(value.to(current.device), requires_grad=False))
            restored.append(name)
    if restored:
        info["kept_float32"] = restored
    qmodel.eval()
    if qmodel.generation_config is not None and tokenizer is not None:
        qmodel.generation_config.pad_token_id = tokenizer.pad_token_id
    return qmodel, info


def _module_census(model) -> dict:
    """Which linear layers were quantized and which kept (names), by bitsandbytes class."""
    import bitsandbytes as bnb
    import torch

    quantized, kept = [], []
    for name, module in model.named_modules():
        if isinstance(module, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)):
            quantized.append(name)
        elif isinstance(module, torch.nn.Linear):
            kept.append(name)
    return {"quantized_modules": len(quantized), "unquantized_linear": kept}


def _backend(device) -> dict:
    import bitsandbytes as bnb
    from bitsandbytes import cextension

    return {"library": f"bitsandbytes {bnb.__version__}", "native_backend": getattr(cextension, "BNB_BACKEND", None),
            "device": str(device)}


def _silence_int8_cast_warning():
    # bitsandbytes logs one line per int8 matmul when the input is not fp16; it is a fact of the method, said once
    # in the docs and the record, not a problem to repeat millions of times.
    import logging

    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")


@register
class BnbInt8(Method):
    """LLM.int8(): int8 weights (row-wise absmax), fp16 outlier columns above ``threshold`` at run time."""

    name = "bnb-int8"
    family = "quantization"
    paper = "Dettmers et al. 2022, LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale, arXiv:2208.07339"
    defaults = {"threshold": 6.0}

    def axes(self):
        return {"bits": 8}

    def check(self):
        t = self.params["threshold"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
            raise MethodError(f"bnb-int8 threshold must be a number >= 0 (6.0 in the paper; 0 disables outliers), got {t!r}")

    def apply(self, model, tokenizer, calibration=None):
        from transformers import BitsAndBytesConfig

        _silence_int8_cast_warning()
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(self.params["threshold"]))
        qmodel, info = quantize_with_transformers(model, tokenizer, config)
        device = _device_of(qmodel)
        if device.type == "cuda":
            kernel = "bitsandbytes int8_linear_matmul (cuBLASLt int8 GEMM) + fp16 matmul of outlier columns"
        else:
            import torch

            kernel = ("bitsandbytes int8_linear_matmul on CPU (torch._int_mm, AVX-512) + fp16 outlier matmul"
                      if torch.backends.cpu.get_cpu_capability() == "AVX512"
                      else "bitsandbytes int8 on CPU (default backend) + fp16 outlier matmul")
        self.info.update(_backend(device), kernel=kernel, input_cast="activations cast to float16 for the int8 path",
                         **_module_census(qmodel), **info)
        return qmodel


@register
class BnbNF4(Method):
    """NF4 weights (blocks of 64, absmax scales, double-quantized), matmuls in ``compute_dtype``."""

    name = "bnb-nf4"
    family = "quantization"
    paper = "Dettmers et al. 2023, QLoRA: Efficient Finetuning of Quantized LLMs (NF4, double quantization), arXiv:2305.14314"
    defaults = {"double_quant": True, "compute_dtype": "bfloat16"}

    def axes(self):
        return {"bits": 4}

    def check(self):
        if not isinstance(self.params["double_quant"], bool):
            raise MethodError(f"bnb-nf4 double_quant must be true or false, got {self.params['double_quant']!r}")
        if self.params["compute_dtype"] not in COMPUTE_DTYPES:
            raise MethodError(f"bnb-nf4 compute_dtype must be one of {COMPUTE_DTYPES}, got {self.params['compute_dtype']!r}")

    def apply(self, model, tokenizer, calibration=None):
        qmodel, info = nf4_quantize(model, tokenizer, double_quant=self.params["double_quant"],
                                    compute_dtype=self.params["compute_dtype"])
        self.info.update(info)
        return qmodel


def keep_nf4_for_vllm(qmodel) -> dict:
    """The NF4 model saved as it is (transformers' 4-bit serialization: packed weights and their quantization
    states) and kept for vLLM, whose bitsandbytes loader reads such a checkpoint as it is (double quantization
    included). Saved before any forward: bitsandbytes' CPU kernel repacks weights at their first use."""
    from studylib.core import engines

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="studylib-nf4-") as tmp:
        qmodel.save_pretrained(tmp, safe_serialization=True)
        engines.keep_checkpoint(qmodel, tmp, "bitsandbytes-nf4")
    return {"format": "bitsandbytes NF4 (transformers' 4-bit serialization)",
            "seconds": time.perf_counter() - start}


def nf4_quantize(model, tokenizer, *, double_quant: bool = True, compute_dtype: str = "bfloat16"):
    """The NF4 step, shared with ``smoothquant-nf4``: (quantized model, info for the record)."""
    import torch
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                                bnb_4bit_compute_dtype=getattr(torch, compute_dtype))
    qmodel, info = quantize_with_transformers(model, tokenizer, config)
    info["vllm_export"] = keep_nf4_for_vllm(qmodel)
    device = _device_of(qmodel)
    info.update(_backend(device), **_module_census(qmodel))
    if device.type == "cuda":
        info["kernel"] = "bitsandbytes gemm_4bit (fused NF4 dequantize + GEMM)"
    else:
        import bitsandbytes as bnb
        from bitsandbytes.functional import has_avx512bf16

        off = []
        if has_avx512bf16():
            for name, module in qmodel.named_modules():
                if isinstance(module, bnb.nn.Linear4bit) and module.out_features % 32:
                    module.support_avx512bf16_for_cpu = False
                    off.append(name)
            info["kernel"] = "bitsandbytes CPU gemv_4bit (AVX-512-BF16 packed NF4)"
        else:
            info["kernel"] = "bitsandbytes CPU gemm_4bit (dequantize + matmul)"
        if off:
            info["cpu_packed_kernel_off"] = off
    info["compute_dtype"] = compute_dtype
    return qmodel, info
