"""GPTQ: one-shot weight quantization with second-order error compensation (``gptq``), through GPTQModel.

Paper: E. Frantar, S. Ashkboos, T. Hoefler, D. Alistarh. *GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers*. ICLR 2023, arXiv:2210.17323. Layer by layer, each linear weight ``W`` is quantized column
after column to a ``bits``-bit grid (one scale/zero per ``group_size`` input columns, or per row with -1) while the
rounding error of each column is spread over the columns not yet quantized, weighted by the inverse Hessian
``H = 2 X Xᵀ`` of the layer's calibration inputs -- minimizing ``||W X - Q X||²`` rather than ``||W - Q||``.
``act_order`` quantizes the columns in order of decreasing ``diag(H)`` (the paper's "act-order"); ``damp`` adds
``damp * mean(diag H)`` to the diagonal before the Cholesky inverse (1 % in the paper).

Library: GPTQModel 7.6 (ModelCloud), the maintained successor of AutoGPTQ (archived; it does not import under
transformers 5). It supports Gemma-3, quantizes on CPU or CUDA, and ships real low-bit inference kernels:
Marlin (CUDA, 4/8-bit, symmetric), ExLlamaV2 (CUDA, 4-bit), Triton (2/4/8-bit), Machete (Hopper), a torch kernel
for every width (dequantize + matmul; the only one for 3-bit) and ATen's int4 CPU kernel. GPTQModel works on
checkpoints, so :meth:`GPTQ.apply` saves the model it is given, quantizes it with GPTQModel, saves the GPTQ
checkpoint and loads it back with the requested ``backend`` (``auto``: GPTQModel picks the fastest kernel that
supports the layer's bits/group/device); the model it was given is consumed (its tensors are released). The kernel classes that actually hold the weights are recorded
(``kernel``); when the requested backend cannot load (e.g. Marlin with 3 bits, any CUDA kernel on a CPU, or Machete
offline), the next one that loads is used and ``backend_fallback`` says why. ``checkpoint_bytes`` is the size of the
GPTQ checkpoint as GPTQModel writes it.

Settings fixed here, so the method is the paper's: ``act_group_aware=False`` (GPTQModel's own GAR reordering, on
by default, is not GPTQ), no disk offload. Numerical trouble is GPTQModel's to handle and ours to report: a Hessian
that is not positive definite gets its damping raised step by step (GPTQModel logs the module); a module that still
fails, or whose loss is NaN, falls back to round-to-nearest. The per-module log is parsed into the record:
``damp_raised`` (module -> damping used) and ``fallback_modules`` (module -> what happened), so no fallback passes
silently.

Workarounds for GPTQModel 7.6, all confined to this file: it writes its logs to ``./logs`` (redirected into a
temporary folder here), draws live progress bars that flood a notebook's output (switched to its quiet mode,
which it otherwise enables only under pytest), writes a few INFO lines per quantized module (only its warnings are
let through while it runs), draws into a notebook through display updates, ten a second while a bar is up (plain
text lines instead: see :func:`_quiet_gptqmodel`), and it rewrites Gemma-3's per-layer-type ``rope_parameters``
into a form that transformers then refuses to save (the original is put back before every save; the rotary
embeddings, built from the per-layer entries, are not affected).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from studylib.core import engines

from . import Method, MethodError, register

BITS = (2, 3, 4, 8)
GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)  # what GPTQModel 7.6 accepts
BACKENDS = {  # our name -> GPTQModel's BACKEND value
    "auto": "auto",
    "marlin": "gptq_marlin",
    "exllama_v2": "gptq_exllama_v2",
    "triton": "gptq_triton",
    "machete": "gptq_machete",
    "torch": "gptq_torch",
}
KERNELS = {  # GPTQModel QuantLinear class -> what it is
    "MarlinLinear": "Marlin (CUDA int4/int8 x fp16/bf16 GEMM)",
    "ExllamaV2Linear": "ExLlamaV2 (CUDA int4 GEMM/GEMV)",
    "TritonV2Linear": "Triton (CUDA, dequantize in-kernel)",
    "MacheteLinear": "Machete (CUTLASS, Hopper)",
    "TorchLinear": "torch (dequantize + matmul; no low-bit kernel)",
    "TorchAtenLinear": "ATen _weight_int4pack_mm (CPU int4 kernel)",
    "TorchFusedLinear": "torch fused (CPU/XPU)",
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@register
class GPTQ(Method):
    name = "gptq"
    family = "quantization"
    paper = "Frantar et al. 2023, GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers, arXiv:2210.17323"
    needs_calibration = True
    defaults = {"bits": 4, "group_size": 128, "act_order": False, "damp": 0.01, "sym": True, "backend": "auto",
                "calib_batch_size": 16}

    def axes(self):
        return {"bits": self.params["bits"]}

    def check(self):
        p = self.params
        if not _is_int(p["bits"]) or p["bits"] not in BITS:
            raise MethodError(f"gptq bits must be one of {', '.join(map(str, BITS))}, got {p['bits']!r}")
        if not _is_int(p["group_size"]) or p["group_size"] not in GROUP_SIZES:
            raise MethodError(f"gptq group_size must be -1 (one group per row) or one of "
                              f"{', '.join(map(str, GROUP_SIZES[1:]))}, got {p['group_size']!r}")
        if not isinstance(p["act_order"], bool):
            raise MethodError(f"gptq act_order must be true or false, got {p['act_order']!r}")
        if not isinstance(p["sym"], bool):
            raise MethodError(f"gptq sym must be true or false, got {p['sym']!r}")
        damp = p["damp"]
        if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 < damp < 1:
            raise MethodError(f"gptq damp must be a number in (0, 1) (0.01 in the paper), got {damp!r}")
        if p["backend"] not in BACKENDS:
            raise MethodError(f"gptq backend must be one of {', '.join(BACKENDS)}, got {p['backend']!r}")
        if not _is_int(p["calib_batch_size"]) or p["calib_batch_size"] < 1:
            raise MethodError(f"gptq calib_batch_size must be an integer >= 1, got {p['calib_batch_size']!r}")

    def quantize_config(self):
        from gptqmodel import QuantizeConfig

        p = self.params
        return QuantizeConfig(bits=p["bits"], group_size=p["group_size"], desc_act=p["act_order"],
                              act_group_aware=False, sym=p["sym"], damp_percent=float(p["damp"]),
                              offload_to_disk=False)

    def apply(self, model, tokenizer, calibration=None):
        if not calibration:
            raise MethodError("gptq needs calibration texts")
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(4, os.cpu_count() or 1)))
        from gptqmodel import GPTQModel

        device = next(model.parameters()).device
        dtype = model.dtype
        rope = copy.deepcopy(getattr(model.config, "rope_parameters", None))
        qcfg = self.quantize_config()
        info: dict = {}
        with tempfile.TemporaryDirectory(prefix="studylib-gptq-") as tmp, _quiet_gptqmodel(Path(tmp) / "logs"):
            work = Path(tmp)
            start = time.perf_counter()
            model.save_pretrained(work / "fp", safe_serialization=True)
            tokenizer.save_pretrained(work / "fp")
            info["save_seconds"] = time.perf_counter() - start

            start = time.perf_counter()
            gm = GPTQModel.load(str(work / "fp"), qcfg, device=str(device), dtype=dtype)
            # padded rows of a batch are masked out of the Hessian by GPTQModel (its keep_mask), so batching only
            # saves time
            log = gm.quantize(list(calibration), tokenizer=tokenizer, batch_size=self.params["calib_batch_size"])
            info["quantize_seconds"] = time.perf_counter() - start
            info.update(summarize_quant_log(log, float(self.params["damp"])))
            _restore_rope(gm.model.config, rope)
            gm.save(str(work / "q"))
            info["checkpoint_bytes"] = sum(f.stat().st_size for f in (work / "q").glob("*.safetensors"))
            info["checkpoint_sparsity"] = checkpoint_sparsity(work / "q", self.params["bits"])
            # GPTQModel 7.6 keeps frames of its quantize call alive after it returns (seen on CPU: the caller's
            # model and the quantization-time copy stay referenced), which on the H200 added ~0.8 GB to the peak
            # memory measured later. Both are consumed here: their tensors go to the meta device.
            _to_meta(gm.model)
            _to_meta(model)
            del gm
            _release_memory()  # the quantization-time copy must not count in the memory measured later

            start = time.perf_counter()
            qmodel, loaded = self._load(work / "q", device, dtype)
            info["load_seconds"] = time.perf_counter() - start
            info.update(loaded)
            # vLLM loads GPTQModel's checkpoint as it is (gptq_marlin) where its kernel takes these settings
            p = self.params
            why = engines.gptq_served_why(p["bits"], p["group_size"], p["sym"])
            engines.keep_checkpoint(qmodel, work / "q", "gptq", why, move=True)
            info["vllm"] = why or "served from this checkpoint (gptq_marlin)"
        _restore_rope(qmodel.config, rope)
        qmodel.eval()
        if qmodel.generation_config is not None:
            qmodel.generation_config.pad_token_id = tokenizer.pad_token_id
        import gptqmodel

        self.info.update(library=f"gptqmodel {gptqmodel.__version__}", device=str(device),
                         quantize_config={k: _plain(getattr(qcfg, k, None)) for k in
                                          ("bits", "group_size", "desc_act", "act_group_aware", "sym",
                                           "damp_percent", "damp_auto_increment", "true_sequential", "format",
                                           "method")},
                         **info)
        if info.get("fallback_modules"):
            import warnings

            warnings.warn(f"gptq: modules not quantized by GPTQ proper (see the record): {info['fallback_modules']}")
        return qmodel

    def _load(self, path: Path, device, dtype):
        """Load the GPTQ checkpoint with the requested backend, else the next that loads; say which kernels hold
        the weights.

        Order after the requested one: ``auto``, then Marlin, ExLlamaV2, Triton, torch. ``auto`` alone is not
        enough offline: on Hopper it picks Machete, whose JIT build downloads CUTLASS (seen on the H200). Every
        failure is kept in ``backends_tried``; if nothing loads, the first error is raised.
        """
        from gptqmodel import GPTQModel

        import torch

        requested = self.params["backend"]
        loaded = {"backend_requested": requested}
        if dtype not in (torch.float16, torch.bfloat16):  # GPTQModel's kernels compute in fp16/bf16 only
            loaded["inference_dtype"] = f"bfloat16 (the model was {str(dtype).replace('torch.', '')}; GPTQ kernels take fp16/bf16)"
            dtype = torch.bfloat16
        chain = [requested] + [b for b in ("auto", "marlin", "exllama_v2", "triton", "torch") if b != requested]
        tried, first_error, qm = {}, None, None
        for backend in chain:
            try:
                qm = GPTQModel.load(str(path), device=str(device), backend=BACKENDS[backend], dtype=dtype)
                break
            except Exception as err:  # noqa: BLE001 -- recorded; the next backend is tried
                tried[backend] = f"{type(err).__name__}: {str(err)[:300]}"
                first_error = first_error or err
                _release_memory()
        if qm is None:
            raise first_error
        if tried:
            loaded["backends_tried"] = tried
            loaded["backend_fallback"] = "; ".join(f"{b} could not load ({e})" for b, e in tried.items()) + f"; used {backend}"
        kernels = quant_linear_census(qm.model)
        loaded["kernel"] = {name: {"modules": n, "what": KERNELS.get(name, name)} for name, n in kernels.items()}
        # packed weights are buffers, not parameters: count them here, as the number of weights they stand for
        loaded["quantized_weights"] = quantized_weight_count(qm.model)
        return qm.model, loaded


@contextmanager
def _quiet_gptqmodel(log_dir: Path):
    """GPTQModel's log files into ``log_dir`` (not ./logs), no live progress bars and only its warnings on screen.

    Its bars print one line per calibration batch per module (~10^5 lines for 1,280 texts), which papermill copies
    into the output. Its logger (LogBar) draws into a notebook through display updates, ten a second while a bar
    is up, and writes a few INFO lines per module. nbval reads a cell's messages only after the cell has ended, and
    the kernel's output queue drops what overflows it: a long GPTQ cell in CI lost its own end that way and timed
    out. Here LogBar writes plain text (``LOGBAR_DISABLE_NOTEBOOK_DETECTION``, unless set already) at WARNING; the
    per-module figures reach the record through the returned log (:func:`summarize_quant_log`)."""
    from gptqmodel.looper import loop_processor
    from gptqmodel.utils import logger as gm_logger
    from logbar import LogBar

    bar = LogBar.shared()
    saved = loop_processor._PROJECT_LOG_DIR, gm_logger._suppress_live_renderables, bar.level
    plain = "LOGBAR_DISABLE_NOTEBOOK_DETECTION" not in os.environ
    loop_processor._PROJECT_LOG_DIR = log_dir
    gm_logger._suppress_live_renderables = lambda: True
    bar.setLevel(logging.WARNING)
    if plain:
        os.environ["LOGBAR_DISABLE_NOTEBOOK_DETECTION"] = "1"
    try:
        yield
    finally:
        loop_processor._PROJECT_LOG_DIR, gm_logger._suppress_live_renderables, level = saved
        bar.setLevel(level)
        if plain:
            os.environ.pop("LOGBAR_DISABLE_NOTEBOOK_DETECTION", None)


def _to_meta(module) -> None:
    """Drop a model's tensors (it is consumed), whoever still holds a reference to it."""
    try:
        module.to("meta")
    except Exception:  # noqa: BLE001 -- best effort: a module that cannot move keeps its memory
        pass


def _drop_gptqmodel_frames() -> None:
    """GPTQModel 7.6 stops each calibration forward by raising one module-level exception instance
    (``hooked_linear.STOP_FORWARD_EXCEPTION``); its traceback keeps the last forward's frames alive, and with them
    the captured layer inputs of the calibration (on the H200, 0.7 to 1.6 GB for the same W4 model as the
    calibration grew). Dropping the traceback frees them."""
    try:
        from gptqmodel.nn_modules import hooked_linear
    except ImportError:
        return
    exc = getattr(hooked_linear, "STOP_FORWARD_EXCEPTION", None)
    if isinstance(exc, BaseException):
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None


def _release_memory():
    import gc

    import torch

    _drop_gptqmodel_frames()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def quant_linear_census(model) -> Counter:
    """How many layers each GPTQModel QuantLinear class holds."""
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    return Counter(type(m).__name__ for m in model.modules() if isinstance(m, BaseQuantLinear))


def quantized_weight_count(model) -> int:
    """in x out summed over GPTQModel's quantized layers."""
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    return sum(int(m.in_features) * int(m.out_features) for m in model.modules() if isinstance(m, BaseQuantLinear))


def _unpack(packed, bits: int, dim: int):
    """The ``bits``-bit codes packed into int32 words along ``dim`` (GPTQ's layout: lowest bits first)."""
    import torch

    per = 32 // bits
    shifts = torch.arange(per, dtype=torch.int32) * bits
    if dim == 0:  # qweight (in / per, out) -> (in, out)
        codes = (packed.unsqueeze(1) >> shifts.view(1, -1, 1)) & (2 ** bits - 1)
        return codes.reshape(-1, packed.shape[1])
    codes = (packed.unsqueeze(2) >> shifts.view(1, 1, -1)) & (2 ** bits - 1)  # qzeros (groups, out / per)
    return codes.reshape(packed.shape[0], -1)


def checkpoint_sparsity(path, bits: int) -> dict | None:
    """Zeros of the dequantized weights, read from the GPTQ checkpoint itself (format ``gptq``: zero points stored
    minus one). Measured here because the kernel that loads it on CUDA (Marlin) repacks the weights and cannot
    dequantize them, so :func:`studylib.methods.pruning.dequantized_sparsity` finds nothing there. Same result as dequantizing
    the loaded torch-kernel layers (tested). None for 3 bits (codes straddle words) or another checkpoint format."""
    import json

    import torch
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads((path / "quantize_config.json").read_text(encoding="utf-8"))
    if 32 % bits or config.get("checkpoint_format", config.get("format")) != "gptq":
        return None
    state = {}
    for f in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(f)))
    zeros = total = modules = 0
    for key in state:
        if not key.endswith(".qweight"):
            continue
        prefix = key[: -len("qweight")]
        codes = _unpack(state[key], bits, 0)
        zero_points = _unpack(state[prefix + "qzeros"], bits, 1) + 1
        group = state[prefix + "g_idx"].long()
        weight = state[prefix + "scales"][group].float() * (codes - zero_points[group]).float()
        zeros += int((weight == 0).sum())
        total += weight.numel()
        modules += 1
    from studylib.methods.pruning import zero_fraction_report

    return zero_fraction_report(zeros, total, modules, "of the GPTQ checkpoint (whatever kernel runs it)")


def _plain(value):
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(getattr(value, "value", value))


def _restore_rope(config, rope):
    if rope is not None and getattr(config, "rope_parameters", None) != rope:
        config.rope_parameters = copy.deepcopy(rope)


def summarize_quant_log(log, damp: float) -> dict:
    """GPTQModel's per-module log -> module count, loss, raised damping and fallbacks, named by layer.module."""
    rows = log.get("gptq", []) if isinstance(log, dict) else []
    losses, raised, fallback = [], {}, {}
    for row in rows:
        where = f"layer{row.get('layer')}.{row.get('module')}"
        try:
            loss = float(row.get("loss"))
        except (TypeError, ValueError):
            fallback[where] = str(row.get("loss"))
            continue
        if math.isnan(loss):
            fallback[where] = "NaN loss"
            continue
        losses.append(loss)
        try:
            used = float(row.get("damp"))
        except (TypeError, ValueError):
            continue
        if used > damp * (1 + 1e-6):
            raised[where] = used
    out = {"modules": len(rows), "mean_loss": (sum(losses) / len(losses)) if losses else None,
           "max_loss": max(losses) if losses else None}
    if rows:
        try:
            out["calibration_tokens"] = int(rows[0].get("samples"))
        except (TypeError, ValueError):
            out["calibration_tokens"] = rows[0].get("samples")
    out["damp_raised"] = raised
    out["fallback_modules"] = fallback
    return out


def gptq_layer(weight, inputs, *, bits: int = 4, group_size: int = -1, act_order: bool = False, damp: float = 0.01,
               sym: bool = True):
    """GPTQModel's per-layer GPTQ on one weight and its calibration inputs: the quantized (dequantized) weight.

    For tests and small experiments: ``weight`` (out, in), ``inputs`` (tokens, in).
    """
    import torch
    from gptqmodel import QuantizeConfig
    from gptqmodel.quantization.gptq import GPTQ as _LayerGPTQ

    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    qcfg = QuantizeConfig(bits=bits, group_size=group_size, desc_act=act_order, act_group_aware=False, sym=sym,
                          damp_percent=damp, offload_to_disk=False)
    g = _LayerGPTQ(layer, qcfg)
    g.quantizer.configure(perchannel=True)  # as GPTQModel's own processor does
    g.add_batch(inputs.unsqueeze(0), None)
    q = g.quantize()[0]
    return q.to(weight.dtype)
