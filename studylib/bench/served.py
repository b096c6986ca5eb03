"""The benchmark's formats as vLLM serves them: its kernels (Marlin, CUTLASS FP8 and INT8, bitsandbytes) on the same
architecture, measured with the same shapes as the transformers path.

vLLM builds the model from a config and fills it with random weights itself (``load_format="dummy"``): speed depends on
shapes and kernels, not on values. A quantized format is a config whose ``quantization_config`` says what vLLM loads
(GPTQ, AWQ, compressed-tensors INT8 W8A8), or vLLM's own on-the-fly quantization (FP8); bitsandbytes NF4 quantizes a
real float16 checkpoint as it loads, so that format writes one (random weights) first. Each format is one engine,
started, measured and closed in turn (:func:`measure_served`); the record's rows have the transformers path's fields
(:data:`studylib.bench.schema.REPORT_KEYS`). Plain Python down to :func:`measure_served`: the configs and the
arithmetic are tested on the CPU.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from studylib.bench.schema import ARCHITECTURES, LAYER_KEEP, VLLM_VARIANTS, failed_row

# what each vLLM format is, for the model's config.json (``quantization_config``) or vLLM's ``quantization`` argument
# vLLM reads which layers a GPTQ checkpoint quantized from its safetensors' dtypes unless the config lists them; with
# weights it makes itself there are no files, so the config names every decoder linear (else none is quantized)
LINEARS = [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"],
           ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]]
GPTQ = {"quant_method": "gptq", "group_size": 128, "desc_act": False, "sym": True, "lm_head": False,
        "checkpoint_format": "gptq", "modules_in_block_to_quantize": LINEARS}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
INT8_W8A8 = {  # compressed-tensors: int8 weights per output channel, int8 activations per token (dynamic)
    "quant_method": "compressed-tensors", "format": "int-quantized", "quantization_status": "compressed",
    "ignore": ["lm_head"], "kv_cache_scheme": None,
    "config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
        "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token",
                              "dynamic": True},
        "output_activations": None}},
}
NOT_SERVED = {
    "vllm-2of4": "vLLM 0.26.0 has no 2:4 sparse kernel: its compressed-tensors loader raises 'Sparsity support has "
                 "been removed from compressed-tensors' for any sparsity_config (the transformers path's row "
                 "sparse-2of4 is the study's 2:4 figure)",
}
QUANTIZATION = {"vllm-fp8": "fp8", "vllm-nf4": "bitsandbytes"}
UNQUANTIZED = ("vllm-fp16", "vllm-layers-75")  # every other format must reach a quantized linear method


def hf_config(variant: str, architecture: str) -> dict:
    """The config.json of ``variant``: Llama's architecture in float16, fewer layers for a layer-pruned format,
    a ``quantization_config`` for a checkpoint format."""
    arch = dict(ARCHITECTURES[architecture])
    if variant in LAYER_KEEP:
        arch["num_hidden_layers"] = round(arch["num_hidden_layers"] * LAYER_KEEP[variant])
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float16",
              "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "rope_theta": 10000.0, "attention_bias": False, "mlp_bias": False, **arch}
    if variant in ("vllm-gptq-w4", "vllm-gptq-w8"):
        config["quantization_config"] = {**GPTQ, "bits": 4 if variant.endswith("w4") else 8}
    elif variant == "vllm-awq-w4":
        config["quantization_config"] = dict(AWQ)
    elif variant == "vllm-int8-w8a8":
        config["quantization_config"] = json.loads(json.dumps(INT8_W8A8))
    return config


def logical_params(config: dict) -> int:
    """Parameters of a Llama config, counted as the dense model has them (quantized formats hold the same weights)."""
    h, i, v, n = (config[k] for k in ("hidden_size", "intermediate_size", "vocab_size", "num_hidden_layers"))
    kv = h * config["num_key_value_heads"] // config["num_attention_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    return v * h + n * per_layer + h + (0 if config.get("tie_word_embeddings") else v * h)


def decode_ms(time_n: float, time_1: float, new_tokens: int) -> float:
    """Per-token decode time: (time to generate ``new_tokens`` - time to generate 1) / (new_tokens - 1), in ms."""
    return (time_n - time_1) / (new_tokens - 1) * 1e3


def _write_dir(variant: str, cfg, root: Path) -> Path:
    d = root / variant
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(hf_config(variant, cfg.architecture), indent=1), encoding="utf-8")
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}), encoding="utf-8")
    return d


def _random_checkpoint(d: Path, cfg) -> None:
    """A float16 safetensors checkpoint of random weights in ``d`` (bitsandbytes quantizes real files as it loads)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**{k: v for k, v in hf_config("vllm-fp16", cfg.architecture).items()
                            if k not in ("architectures", "model_type")})
    torch.manual_seed(cfg.seed)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float16)
    model.save_pretrained(d, safe_serialization=True)
    del model
    torch.cuda.empty_cache()


def _model_facts(model) -> dict:
    """Bytes and kernels of the model as vLLM holds it (runs inside the engine: ``LLM.apply_model``)."""
    tensors = {}
    embed = row = 0
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if id(t) not in tensors:
            tensors[id(t)] = t
            if "embed_tokens" in name:
                embed += t.numel() * t.element_size()
                row = t.shape[-1] * t.element_size()
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    kernels = {}
    for m in model.modules():
        qm = getattr(m, "quant_method", None)
        if qm is not None and type(m).__name__.endswith("Linear") and "embed" not in type(m).__name__.lower():
            kernel = getattr(qm, "kernel", None) or getattr(getattr(qm, "scheme", None), "kernel", None)
            label = type(qm).__name__ + (f"/{type(kernel).__name__}" if kernel is not None else "")
            scheme = getattr(qm, "scheme", None)
            if scheme is not None:
                label += f"/{type(scheme).__name__}"
            kernels[label] = kernels.get(label, 0) + 1
    return {"weight_bytes": int(total), "floor_bytes": int(total - embed + row), "kernels": kernels}


def measure_served(name: str, cfg, bandwidth: dict, start: float, say) -> dict:
    """One vLLM format started, measured and closed: its row, or its error (status failed) when it cannot run."""
    if name in NOT_SERVED:
        say(start, f"{name}: not served ({NOT_SERVED[name][:120]})")
        return failed_row(name, RuntimeError(NOT_SERVED[name]))
    say(start, f"{name}: starting vLLM ({VLLM_VARIANTS[name]})")
    engine, root = None, Path(tempfile.mkdtemp(prefix="studylib-served-"))
    try:
        d = _write_dir(name, cfg, root)
        load_format = "dummy"
        if QUANTIZATION.get(name) == "bitsandbytes":
            _random_checkpoint(d, cfg)
            load_format = "bitsandbytes"
        return _measure(name, cfg, d, load_format, bandwidth, start, say)
    except Exception as err:  # noqa: BLE001 -- a format that fails is a result, recorded
        row = failed_row(name, err)
        say(start, f"{name}: FAILED {row['error'][:300]}")
        return row
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _measure(name, cfg, d, load_format, bandwidth, start, say) -> dict:
    from studylib.core import engines
    from studylib.core.records import host_load

    longest = max(cfg.prompt_tokens + cfg.new_tokens, cfg.prefill_tokens) + 8
    t0 = time.perf_counter()
    engine = engines.VLLMEngine(str(d), dtype="float16", quantization=QUANTIZATION.get(name), seed=cfg.seed,
                                max_model_len=longest, gpu_memory_utilization=cfg.vllm_memory,
                                max_num_seqs=cfg.large_batch, load_format=load_format,
                                capture_sizes=[1, cfg.large_batch], batch_invariant=False)
    start_s = time.perf_counter() - t0
    try:
        facts = engine.llm.apply_model(_model_facts)[0]
        if name not in UNQUANTIZED and set(facts["kernels"]) <= {"UnquantizedLinearMethod"}:
            raise RuntimeError(f"vLLM served {name} unquantized (every linear layer {facts['kernels']}): its config "
                               "was not applied")
        say(start, f"{name}: engine up in {start_s:.0f} s ({facts['kernels']}); measuring")
        from vllm import SamplingParams

        rng = random.Random(cfg.seed)
        vocab = ARCHITECTURES[cfg.architecture]["vocab_size"]
        prompt = lambda n: {"prompt_token_ids": [rng.randrange(3, vocab) for _ in range(n)]}  # noqa: E731

        def timed(prompts, max_tokens):
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
            for _ in range(cfg.warmup):
                engine.llm.generate(prompts, params, use_tqdm=False)
            times = []
            for _ in range(cfg.repeats):
                t = time.perf_counter()
                outs = engine.llm.generate(prompts, params, use_tqdm=False)
                times.append(time.perf_counter() - t)
                assert all(len(o.outputs[0].token_ids) == max_tokens for o in outs)
            return statistics.median(times)

        load = {"cpus": os.cpu_count(), "eager": {"before": host_load()["load_average_1_5_15_min"]}}
        one = [prompt(cfg.prompt_tokens)]
        many = [prompt(cfg.prompt_tokens) for _ in range(cfg.large_batch)]
        b1 = decode_ms(timed(one, cfg.new_tokens), timed(one, 1), cfg.new_tokens)
        big = decode_ms(timed(many, cfg.new_tokens), timed(many, 1), cfg.new_tokens)
        prefill = timed([prompt(cfg.prefill_tokens)], 1) * 1e3
        load["eager"]["after"] = host_load()["load_average_1_5_15_min"]
    finally:
        engine.close()
    config = hf_config(name, cfg.architecture)
    floor_ms = facts["floor_bytes"] / bandwidth["bytes_per_s"] * 1e3 if bandwidth.get("bytes_per_s") else None
    info = {"engine": engine.info(), "load_format": load_format, "kernels": facts["kernels"],
            "quantization_config": config.get("quantization_config"), "quantization": QUANTIZATION.get(name)}
    if name in LAYER_KEEP:
        full = hf_config("vllm-fp16", cfg.architecture)
        info.update(layers_before=full["num_hidden_layers"], layers_after=config["num_hidden_layers"],
                    params_before=logical_params(full), params_after=logical_params(config))
    kernel = f"vllm {engines.vllm_version()} " + ", ".join(sorted(facts["kernels"]) or ["unquantized"])
    row = {"variant": name, "kernel": kernel, "status": "ok", "error": None,
           "decode_b1_ms": b1, "decode_large_ms": big, "large_batch": cfg.large_batch, "prefill_ms": prefill,
           "prefill_tokens": cfg.prefill_tokens, "peak_memory_bytes": facts["weight_bytes"],
           "weight_bytes": facts["weight_bytes"], "floor_bytes": facts["floor_bytes"], "floor_ms": floor_ms,
           "storage_bytes": None,
           "storage_note": ("not saved: vLLM made the weights in its own format (load_format dummy)"
                            if load_format == "dummy" else
                            f"not saved: vLLM quantized a random float16 checkpoint as it loaded ({load_format})"),
           "params": logical_params(config), "layers": config["num_hidden_layers"],
           "graph_b1_ms": None, "graph_large_ms": None, "graph_floor_ratio": None,
           "graph_mode": "off (vLLM captures its own CUDA graphs: decode_b1_ms is through them)",
           "graph_error": None, "graph_check": None, "host_load": load,
           "memory": {"what": "the weights as vLLM holds them; its KV cache is preallocated "
                              f"(gpu_memory_utilization {cfg.vllm_memory}) and not counted"},
           "build_seconds": start_s, "compress_seconds": None, "info": info}
    say(start, f"{name}: batch 1 {b1:.3f} ms/token" + (f", {b1 / floor_ms:.2f}x its floor" if floor_ms else "")
        + f"; batch {cfg.large_batch} {big:.3f} ms/token; prefill {prefill:.2f} ms")
    return row
