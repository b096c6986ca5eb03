"""The benchmark's vLLM formats (studylib.bench.served): the configs vLLM is handed, the parameter count and the
decode arithmetic, how the vllm-* formats sit in the schema and the params, and a format vLLM does not serve -- on
the CPU, without vLLM."""

import sys
from pathlib import Path

import pytest
import torch

from studylib.bench import schema, served
from studylib.bench.params import BenchmarkParams
from studylib.runs.params import ParamsError, read_spec

REPO = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO / "params" / "40_efficiency_7b_llama2-7b.yaml"


def meta_params(config: dict) -> int:
    """Parameters of a transformers Llama built from ``config`` on the meta device (no memory)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    keep = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "quantization_config")}
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**keep))
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- configs


def test_the_fp16_config_is_llama_2_7b_in_float16_without_quantization():
    c = served.hf_config("vllm-fp16", "llama-2-7b")
    assert c["num_hidden_layers"] == 32 and c["hidden_size"] == 4096 and c["intermediate_size"] == 11008
    assert c["torch_dtype"] == "float16" and c["model_type"] == "llama" and c["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in c
    for plain in ("vllm-fp8", "vllm-nf4", "vllm-layers-75", "vllm-2of4"):  # quantized by vLLM as it loads, or dense
        assert "quantization_config" not in served.hf_config(plain, "llama-2-7b"), plain
    assert served.QUANTIZATION == {"vllm-fp8": "fp8", "vllm-nf4": "bitsandbytes"}


def test_the_layer_pruned_config_keeps_24_of_32_layers():
    assert served.hf_config("vllm-layers-75", "llama-2-7b")["num_hidden_layers"] == 24
    assert served.hf_config("vllm-layers-75", "tiny-llama")["num_hidden_layers"] == 3
    assert schema.ARCHITECTURES["llama-2-7b"]["num_hidden_layers"] == 32  # the shared table is not changed


@pytest.mark.parametrize("variant, bits", [("vllm-gptq-w4", 4), ("vllm-gptq-w8", 8)])
def test_gptq_configs(variant, bits):
    q = served.hf_config(variant, "llama-2-7b")["quantization_config"]
    assert q["quant_method"] == "gptq" and q["bits"] == bits and q["group_size"] == 128
    assert q["checkpoint_format"] == "gptq" and q["desc_act"] is False and q["sym"] is True
    # vLLM takes the quantized layers from the checkpoint's files unless the config names them; with the weights it
    # makes itself there are no files, and an unnamed layer stays unquantized: every decoder linear is named
    named = {m.split(".")[-1] for group in q["modules_in_block_to_quantize"] for m in group}
    assert named == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert "bits" not in served.GPTQ  # the shared template is not changed


def test_awq_config():
    q = served.hf_config("vllm-awq-w4", "llama-2-7b")["quantization_config"]
    assert q["quant_method"] == "awq" and q["bits"] == 4 and q["group_size"] == 128 and q["zero_point"] is True


def test_the_int8_w8a8_config_is_valid_compressed_tensors():
    from compressed_tensors.quantization import QuantizationConfig

    raw = served.hf_config("vllm-int8-w8a8", "llama-2-7b")["quantization_config"]
    q = QuantizationConfig.model_validate(raw)
    assert q.format == "int-quantized" and q.quant_method == "compressed-tensors" and q.ignore == ["lm_head"]
    group = q.config_groups["group_0"]
    assert group.weights.num_bits == 8 and group.weights.strategy == "channel" and not group.weights.dynamic
    assert group.input_activations.num_bits == 8 and group.input_activations.dynamic is True
    assert group.input_activations.strategy == "token"
    raw["config_groups"]["group_0"]["weights"]["num_bits"] = 4  # a copy: the module's constant stays as it is
    assert served.INT8_W8A8["config_groups"]["group_0"]["weights"]["num_bits"] == 8


def test_the_written_folder_holds_the_config(tmp_path):
    import json

    class Cfg:
        architecture = "tiny-llama"

    d = served._write_dir("vllm-gptq-w4", Cfg, tmp_path)
    assert json.loads((d / "config.json").read_text()) == served.hf_config("vllm-gptq-w4", "tiny-llama")
    assert json.loads((d / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 2}


# ----------------------------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize("variant, architecture", [("vllm-fp16", "tiny-llama"), ("vllm-fp16", "llama-2-7b"),
                                                   ("vllm-layers-75", "llama-2-7b"), ("vllm-gptq-w4", "tiny-llama")])
def test_logical_params_are_what_transformers_builds(variant, architecture):
    config = served.hf_config(variant, architecture)
    assert served.logical_params(config) == meta_params(config)


def test_logical_params_of_llama_2_7b():
    assert served.logical_params(served.hf_config("vllm-fp16", "llama-2-7b")) == 6_738_415_616
    c = served.hf_config("vllm-fp16", "llama-2-7b")
    per_layer = served.logical_params(c) - served.logical_params({**c, "num_hidden_layers": 31})
    assert per_layer == 202_383_360  # q, k, v, o, gate, up, down and two norms
    assert served.logical_params({**c, "num_hidden_layers": 24}) == 6_738_415_616 - 8 * per_layer
    tied = {**c, "tie_word_embeddings": True}
    assert served.logical_params(c) - served.logical_params(tied) == 32000 * 4096


def test_logical_params_with_grouped_query_attention():
    c = {**served.hf_config("vllm-fp16", "tiny-llama"), "num_key_value_heads": 2}
    assert served.logical_params(c) == meta_params(c)


def test_decode_ms_is_the_time_per_token_after_the_first():
    assert served.decode_ms(1.0, 0.1, 10) == pytest.approx(100.0)
    assert served.decode_ms(0.064 + 0.02, 0.02, 65) == pytest.approx(1.0)
    assert served.decode_ms(0.5, 0.5, 2) == 0


# ----------------------------------------------------------------------------------------------- schema


def test_each_vllm_format_is_measured_beside_vllm_fp16():
    assert schema.models("vllm-fp8") == ["vllm-fp16", "vllm-fp8"]
    assert schema.models("vllm-fp16") == ["vllm-fp16"]
    assert schema.models("gptq-w4") == ["fp16", "gptq-w4"]
    assert schema.models("fp16") == ["fp16"]
    assert schema.reference_of("vllm-awq-w4") == schema.VLLM_REFERENCE == "vllm-fp16"
    assert schema.reference_of("bnb-nf4") == schema.REFERENCE == "fp16"
    assert all(schema.reference_of(v) == "vllm-fp16" for v in schema.VLLM_VARIANTS)


def test_every_vllm_format_is_a_variant_with_a_label():
    assert set(schema.VLLM_VARIANTS) <= set(schema.VARIANTS)
    assert not set(schema.VLLM_VARIANTS) & set(schema.HF_VARIANTS)
    for v in schema.VLLM_VARIANTS:
        assert v in schema.LABELS and "vLLM" in schema.LABELS[v], v
    assert set(schema.LABELS) == set(schema.VARIANTS)
    assert set(served.NOT_SERVED) <= set(schema.VLLM_VARIANTS) and set(served.QUANTIZATION) <= set(schema.VLLM_VARIANTS)
    assert schema.LAYER_KEEP["vllm-layers-75"] == 0.75


def test_ratios_against_vllm_fp16():
    rows = [{"variant": "vllm-fp16", "status": "ok", "decode_b1_ms": 8.0, "prefill_ms": 40.0, "peak_memory_bytes": 100},
            {"variant": "vllm-fp8", "status": "ok", "decode_b1_ms": 4.0, "prefill_ms": 20.0, "peak_memory_bytes": 50},
            {"variant": "vllm-2of4", "status": "failed"}]
    ref, fp8, failed = schema.ratios(rows, reference="vllm-fp16")
    assert ref["decode_b1_ratio"] == 1 and ref["prefill_speedup"] == 1 and ref["memory_ratio"] == 1
    assert fp8["decode_b1_ratio"] == 0.5 and fp8["prefill_speedup"] == 2 and fp8["memory_ratio"] == 0.5
    assert failed["decode_b1_ratio"] is None and failed["prefill_speedup"] is None
    assert schema.ratios(rows)[1]["decode_b1_ratio"] is None  # against fp16, which this record has not


# ----------------------------------------------------------------------------------------------- params


def test_a_vllm_format_on_the_cpu_is_one_line_before_any_model_is_built():
    with pytest.raises(ParamsError, match="variant 'vllm-fp8' is served by vLLM, which needs device 'cuda'") as err:
        BenchmarkParams.build({"variant": "vllm-fp8"}, "p.yaml")
    assert str(err.value).startswith("p.yaml: ") and "\n" not in str(err.value)
    c = BenchmarkParams.build({"variant": "vllm-fp8", "device": "cuda"}, "p.yaml")
    assert c.variant == "vllm-fp8" and 0 < c.vllm_memory < 1
    for bad in (0.0, 1.0, 1):
        with pytest.raises(ParamsError, match="vllm_memory must be a float in"):
            BenchmarkParams.build({"variant": "vllm-fp8", "device": "cuda", "vllm_memory": bad}, "p.yaml")


def test_the_smoke_sweep_leaves_out_the_vllm_formats_and_the_full_one_has_them():
    spec = read_spec(PARAMS_FILE)
    smoke = [s["variant"] for s in spec.settings("smoke")]
    full = [s["variant"] for s in spec.settings("full")]
    assert smoke and not [v for v in smoke if v.startswith("vllm-")]
    assert "vllm-fp8" in full and "vllm-2of4" in full and "vllm-fp16" not in full  # each beside vllm-fp16
    assert set(full) == (set(schema.VARIANTS) - {schema.REFERENCE, schema.VLLM_REFERENCE})
    c = BenchmarkParams.load(PARAMS_FILE, {"variant": "vllm-fp8"})
    assert (c.device, c.run_name, c.vllm_memory) == ("cuda", "llama2-7b-vllm-fp8", 0.5)
    with pytest.raises(ParamsError, match="needs device 'cuda'"):
        BenchmarkParams.load(PARAMS_FILE, {"variant": "vllm-fp8"}, profile="smoke")  # the tiny Llama on the CPU


# ----------------------------------------------------------------------------------------------- a format not served


def test_a_format_vllm_does_not_serve_is_a_failed_row_without_vllm():
    lines = []

    class Dummy:  # nothing of the params is read for a format that is not served
        pass

    row = served.measure_served("vllm-2of4", Dummy(), {"bytes_per_s": 1.0}, 0.0,
                                lambda start, line: lines.append((start, line)))
    assert row["variant"] == "vllm-2of4" and row["status"] == "failed" and row["kernel"] == schema.UNAVAILABLE
    assert row["error"].startswith("RuntimeError: ") and "Sparsity" in row["error"] and "2:4" in row["error"]
    assert lines and lines[0][0] == 0.0 and "vllm-2of4: not served" in lines[0][1]
    assert "vllm" not in sys.modules
