"""FP8 W8A8 and AWQ W4A16 through llm-compressor, written as compressed-tensors checkpoints vLLM serves as they are.

* ``fp8``: llm-compressor's ``FP8_DYNAMIC`` scheme (``QuantizationModifier``): every decoder linear's weight in FP8
  E4M3 with one scale per output channel (min-max), its input quantized to FP8 per token at run time. No calibration.
  Hopper runs it in FP8 tensor cores (vLLM's CUTLASS FP8 GEMM).
* ``awq``: Activation-aware Weight Quantization (Lin et al., MLSys 2024, arXiv:2306.00978): per input channel, a scale
  ``s = mean|x|^α`` chosen by grid search over α on calibration activations to minimise the block's output error, folded
  into the preceding norm or linear, then 4-bit weights in groups of ``group_size`` (``symmetric`` false: a zero point
  per group, as AWQ's paper). Through llm-compressor's ``AWQModifier`` (its Gemma-3 mappings), W4A16: vLLM serves it
  with its Marlin kernel.

The model is compressed in memory, saved compressed into a folder kept for vLLM
(:func:`studylib.core.engines.keep_checkpoint`) and loaded back from it through transformers' compressed-tensors
support: the model hf evaluates is the checkpoint vLLM serves. The lm_head stays in the
model's dtype, as in both schemes' defaults. llm-compressor's sequential pipeline pins cached activations in host
memory, which needs an accelerator; on a machine without one (the CPU tests) the pinning is skipped, nothing else.
"""

from __future__ import annotations

import tempfile

from studylib.core import engines

from . import Method, MethodError, register


def _oneshot(model, recipe, dataset=None, max_length: int = 512) -> None:
    """llm-compressor's ``oneshot`` on ``model`` in place (calibrated on ``dataset`` when given)."""
    import torch
    from llmcompressor import oneshot

    if not torch.cuda.is_available():
        from llmcompressor.pipelines import cache

        cache.IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    if dataset is None:
        oneshot(model=model, recipe=recipe)
    else:
        oneshot(model=model, dataset=dataset, recipe=recipe, num_calibration_samples=len(dataset),
                max_seq_length=max_length)


def calibration_dataset(tokenizer, calibration, max_length: int):
    """The calibration texts as the tokenized ``datasets.Dataset`` llm-compressor's ``oneshot`` takes."""
    import datasets

    enc = tokenizer(list(calibration), truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})


def _keep_compressed(model, tokenizer, fmt: str):
    """Save ``model`` compressed (compressed-tensors), load it back through transformers (the model the run evaluates:
    llm-compressor leaves the one it compressed half-packed, with a decompression hook that fails on a later forward)
    and keep the folder for vLLM. Returns (the loaded model, its quantization config for the record)."""
    import gc
    import json
    from pathlib import Path

    from studylib.core import models

    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    device = next(model.parameters()).device.type
    with tempfile.TemporaryDirectory(prefix=f"studylib-{fmt}-") as tmp:
        model.save_pretrained(tmp, save_compressed=True)
        tokenizer.save_pretrained(tmp)
        config = json.loads((Path(tmp) / "config.json").read_text(encoding="utf-8")).get("quantization_config") or {}
        del model
        gc.collect()
        loaded = models.load_model(tmp, dtype, device)[0]
        engines.keep_checkpoint(loaded, tmp, fmt)
    return loaded, {"format": config.get("format"), "ignore": config.get("ignore"),
                    "config_groups": config.get("config_groups")}


def _version() -> str:
    import llmcompressor

    return f"llm-compressor {llmcompressor.__version__}"


def _kernel(fmt: str) -> str:
    import compressed_tensors

    return (f"compressed-tensors {compressed_tensors.__version__} {fmt} modules (hf: weights dequantized in each "
            "forward); vLLM serves the kept checkpoint with its own kernels")


@register
class FP8(Method):
    name = "fp8"
    family = "quantization"
    paper = "Micikevicius et al. 2022, FP8 Formats for Deep Learning, arXiv:2209.05433 (E4M3)"
    defaults = {}

    def axes(self):
        return {"bits": 8}

    def apply(self, model, tokenizer, calibration=None):
        from llmcompressor.modifiers.quantization import QuantizationModifier

        _oneshot(model, QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=["lm_head"]))
        model, export = _keep_compressed(model, tokenizer, "compressed-tensors-fp8")
        self.info.update(implementation=f"{_version()} QuantizationModifier FP8_DYNAMIC (weights per channel, "
                                        "activations per token at run time)",
                         kernel=_kernel("float-quantized"), vllm_export=export)
        return model


@register
class AWQ(Method):
    name = "awq"
    family = "quantization"
    paper = ("Lin et al. 2024, AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration, "
             "MLSys, arXiv:2306.00978")
    needs_calibration = True
    defaults = {"bits": 4, "group_size": 128, "symmetric": False, "duo_scaling": True, "max_length": 512}

    def axes(self):
        return {"bits": self.params["bits"]}

    def check(self):
        p = self.params
        if p["bits"] not in (4, 8):
            raise MethodError(f"bits must be 4 or 8 (what vLLM's Marlin serves), got {p['bits']!r}")
        if not isinstance(p["group_size"], int) or isinstance(p["group_size"], bool) or p["group_size"] not in (
                32, 64, 128):
            raise MethodError(f"group_size must be 32, 64 or 128, got {p['group_size']!r}")
        for key in ("symmetric", "duo_scaling"):
            if not isinstance(p[key], bool):
                raise MethodError(f"{key} must be true or false, got {p[key]!r}")
        if not isinstance(p["max_length"], int) or isinstance(p["max_length"], bool) or p["max_length"] < 8:
            raise MethodError(f"max_length must be an integer >= 8, got {p['max_length']!r}")

    def apply(self, model, tokenizer, calibration=None):
        from llmcompressor.modifiers.awq import AWQModifier

        if not calibration:
            raise MethodError("awq needs calibration texts")
        p = self.params
        weights = {"num_bits": p["bits"], "type": "int", "symmetric": p["symmetric"], "strategy": "group",
                   "group_size": p["group_size"]}
        modifier = AWQModifier(ignore=["lm_head"], duo_scaling=p["duo_scaling"],
                               config_groups={"group_0": {"targets": ["Linear"], "weights": weights}})
        dataset = calibration_dataset(tokenizer, calibration, p["max_length"])
        _oneshot(model, [modifier], dataset, p["max_length"])
        model, export = _keep_compressed(model, tokenizer, f"compressed-tensors-w{p['bits']}a16")
        self.info.update(implementation=f"{_version()} AWQModifier + W{p['bits']}A16 "
                                        f"({'symmetric' if p['symmetric'] else 'asymmetric'}, groups of "
                                        f"{p['group_size']})",
                         calibration_samples=len(dataset), kernel=_kernel("pack-quantized"), vllm_export=export)
        return model
