"""Quantization methods (bnb-int8, bnb-nf4, gptq, smoothquant, smoothquant-nf4), their params and sweeps.

Each CPU-capable method runs on the tiny Gemma-3 and is checked against its paper's definition; CUDA-only paths
(Marlin, cuBLASLt int8, bitsandbytes CUDA kernels) are skipped without a GPU, their wrappers tested with mocks.
"""

import copy
import json
from pathlib import Path

import pytest
import torch

from studylib.methods import MethodError, available, build
from studylib.runs.params import ParamsError

QUANT = {"bnb-int8", "bnb-nf4", "gptq", "smoothquant", "smoothquant-nf4", "fp8", "awq"}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (real GPU kernels); CPU machine")


@pytest.fixture(scope="module")
def calib(data_root):
    from studylib.core import calibration

    return calibration.calibration_set(2, root=data_root).texts


def fresh_tiny(dtype="float32", nonzero_norms=True):
    """A new tiny Gemma-3 (the methods change models in place); norms made non-zero so (1 + w) matters."""
    from studylib.core import models

    model, tok = models.load_model(models.TINY_MODEL, dtype=dtype, device="cpu")
    if nonzero_norms:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model, tok


def block_linears(model):
    return {n: m for n, m in model.named_modules() if ".layers." in n and n.rsplit(".", 1)[-1].endswith("_proj")}


def logits(model, tok, texts):
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**enc).logits.float()


# ----------------------------------------------------------------------------------- registry and parameters

def test_registry_has_the_quantization_methods():
    assert QUANT <= set(available())
    for name in QUANT:
        m = build(name)
        assert m.family == "quantization" and m.paper and "arXiv" in m.paper


@pytest.mark.parametrize("name, params, message", [
    ("gptq", {"bits": 5}, "bits must be one of 2, 3, 4, 8, got 5"),
    ("gptq", {"bits": True}, "bits must be one of"),
    ("gptq", {"group_size": 100}, "group_size must be -1"),
    ("gptq", {"damp": 0}, "damp must be a number in (0, 1)"),
    ("gptq", {"backend": "cuda-magic"}, "backend must be one of"),
    ("gptq", {"bitz": 4}, "gptq has no parameter bitz"),
    ("smoothquant", {"alpha": 0}, "alpha (migration strength) must be a number in (0, 1)"),
    ("smoothquant", {"alpha": 1.2}, "must be a number in (0, 1)"),
    ("smoothquant", {"alpha": 1}, "must be a number in (0, 1)"),
    ("smoothquant", {"kernel": "fp8"}, "kernel must be one of"),
    ("smoothquant-nf4", {"alpha": -0.5}, "must be a number in (0, 1)"),
    ("bnb-nf4", {"compute_dtype": "int8"}, "compute_dtype must be one of"),
    ("bnb-int8", {"threshold": -1}, "threshold must be a number >= 0"),
    ("bnb-int8", {"bits": 8}, "bnb-int8 has no parameter bits"),
    ("awq", {"bits": 3}, "bits must be 4 or 8"),
    ("awq", {"group_size": 100}, "group_size must be 32, 64 or 128"),
    ("awq", {"symmetric": "yes"}, "symmetric must be true or false"),
    ("fp8", {"bits": 8}, "fp8 has no parameter bits"),
    ("nvfp4", {}, "unknown method 'nvfp4'"),
])
def test_bad_parameters_fail_at_construction_with_one_clear_message(name, params, message):
    with pytest.raises(MethodError) as err:
        build(name, **params)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_parameters_fail_in_params_before_any_model_loads(tmp_path):
    from studylib.runs.params import read_spec
    from studylib.runs.quantization import GPTQBitsParams, GPTQParams, SmoothQuantParams

    with pytest.raises(ParamsError, match="bits must be one of 2, 3, 4, 8, got 5"):
        GPTQParams(recipe=[{"method": "gptq", "bits": 5}])
    with pytest.raises(ParamsError, match="alpha"):
        SmoothQuantParams(recipe=[{"method": "smoothquant", "alpha": 1.2}])
    with pytest.raises(ParamsError, match="12_gptq runs 'gptq'"):
        GPTQParams(recipe=[{"method": "bnb-nf4"}])
    with pytest.raises(ParamsError, match="bits must be one of"):
        GPTQBitsParams.load(setting={"bits": 5})
    path = tmp_path / "p.yaml"
    path.write_text("notebook: 12_gptq\nparameters: {run_name: r, recipe: [{method: gptq, bits: 5}]}\n")
    with pytest.raises(ParamsError, match="bits must be one of"):
        read_spec(path)
    path.write_text("notebook: 13_smoothquant\nparameters: {run_name: r, recipe: [{method: smoothquant, alpha: 0}]}\n")
    with pytest.raises(ParamsError, match="alpha"):
        read_spec(path)
    path.write_text("notebook: 16_calibration_size\nparameters: {run_name: r}\nsweep: {calib_per_direction: [8, 0]}\n")
    with pytest.raises(ParamsError, match="calib_per_direction"):
        read_spec(path)


@pytest.mark.parametrize("choose, recipe, message", [
    ({"alpha": [0.5]}, [{"method": "smoothquant"}], "at least two distinct values"),
    ({"alpha": [0.5, 0.5]}, [{"method": "smoothquant"}], "at least two distinct values"),
    ({"alpha": [0.3, 0.6], "kernel": ["auto", "int_mm"]}, [{"method": "smoothquant"}], "must be one"),
    ({"alpha": [0.3, 0.6]}, [{"method": "smoothquant", "alpha": 0.5}], "leave it out of the recipe"),
    ({"alpha": [0.3, 1.5]}, [{"method": "smoothquant"}], "alpha=1.5: .*alpha"),
])
def test_choose_on_dev_is_checked_before_any_model_loads(choose, recipe, message):
    from studylib.runs.quantization import SmoothQuantParams

    with pytest.raises(ParamsError, match=message):
        SmoothQuantParams(recipe=recipe, choose_on_dev=choose)


def test_smoothquant_alpha_chosen_on_dev_is_applied_and_recorded(data_root):
    from studylib.runs import compression
    from studylib.runs.quantization import SmoothQuantParams, check_record

    cfg = SmoothQuantParams(recipe=[{"method": "smoothquant"}], choose_on_dev={"alpha": [0.3, 0.7]},
                            dev_per_direction=1, directions=["de-en", "en-de"], n_test=2, max_new_tokens=4,
                            calib_per_direction=1, data_dir=str(data_root), speed_new_tokens=2)
    job = compression.prepare(cfg)
    assert job.dev is not None and job.dev.per_direction == {"de-en": 1, "en-de": 1}
    choice = compression.choose_on_dev(job, progress=False)
    assert [t["value"] for t in choice["tried"]] == [0.3, 0.7] and choice["chosen"] in (0.3, 0.7)
    assert job.recipe[0].params["alpha"] == choice["chosen"]
    model, tokenizer = compression.load(cfg)
    model = compression.compress(job, model, tokenizer)
    record = compression.evaluate_and_record(job, model, tokenizer, notebook="13_smoothquant")
    assert record["compression"]["dev_choice"]["chosen"] == record["compression"]["recipe"][0]["params"]["alpha"]
    check_record(record, job, "smoothquant")


# ----------------------------------------------------------------------------------- llm-compressor: FP8, AWQ

@pytest.mark.parametrize("name, params, fmt", [("fp8", {}, "compressed-tensors-fp8"),
                                               ("awq", {"group_size": 32}, "compressed-tensors-w4a16")])
def test_llmcompressor_formats_keep_the_checkpoint_vllm_serves_and_hf_decodes_it(name, params, fmt, calib):
    from studylib.core import engines

    model, tok = fresh_tiny()
    before = logits(model, tok, ["Translate this from German to English:\nGerman: Guten Morgen\nEnglish:"])
    method = build(name, **params)
    out = method.apply(model, tok, calib if method.needs_calibration else None)
    kept = engines.served_checkpoint(out)
    assert kept["format"] == fmt and Path(kept["path"], "config.json").is_file()
    config = json.loads(Path(kept["path"], "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["ignore"] == ["lm_head"]
    info = method.describe()
    assert info["kernel"] and info["vllm_export"]["format"] == config["format"]
    after = logits(out, tok, ["Translate this from German to English:\nGerman: Guten Morgen\nEnglish:"])
    assert not torch.equal(before, after) and torch.allclose(before, after, atol=0.5 * before.abs().max().item())
    assert engines.route("vllm", None, out) == ("vllm", None, kept)


# ----------------------------------------------------------------------------------- bitsandbytes

def test_bnb_int8_quantizes_every_block_linear_rowwise(data_root):
    import bitsandbytes as bnb

    model, tok = fresh_tiny()
    originals = {n: m.weight.detach().clone() for n, m in block_linears(model).items()}
    method = build("bnb-int8")
    q = method.apply(model, tok)
    info = method.describe()
    assert info["quantized_modules"] == len(originals) and info["unquantized_linear"] == ["lm_head"]
    assert "int8" in info["kernel"] and info["params"] == {"threshold": 6.0}
    for name, w in originals.items():
        module = q.get_submodule(name)
        assert isinstance(module, bnb.nn.Linear8bitLt) and module.weight.dtype == torch.int8
        scb = module.weight.SCB.float()  # row absmax: LLM.int8's vector-wise scale
        deq = module.weight.float() * scb[:, None] / 127
        assert torch.allclose(scb, w.abs().amax(dim=1), rtol=1e-2)
        assert ((deq - w).abs() <= scb[:, None] / 127 * 0.5 + 1e-3).all()  # within half a step of its row's grid
    assert isinstance(q.lm_head, torch.nn.Linear) and q.lm_head.weight.dtype == torch.float32
    out = q.generate(**tok(["Translate this"], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 1


def test_bnb_nf4_blocks_hold_at_most_16_values_and_stay_close():
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    model, tok = fresh_tiny()
    originals = {n: m.weight.detach().clone() for n, m in block_linears(model).items()}
    method = build("bnb-nf4")
    q = method.apply(model, tok)
    assert method.describe()["quantized_modules"] == len(originals)
    for name, w in originals.items():
        module = q.get_submodule(name)
        assert isinstance(module, bnb.nn.Linear4bit) and module.weight.quant_state.quant_type == "nf4"
        deq = F.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
        assert deq.shape == w.shape
        assert not torch.equal(deq, w)
        assert (deq - w).norm() / w.norm() < 0.15  # NF4: about 0.1 relative error on Gaussian weights
        blocks = deq.flatten().reshape(-1, module.weight.quant_state.blocksize)
        assert max(len(torch.unique(b)) for b in blocks) <= 16
    assert q.generate(**tok(["Translate this"], return_tensors="pt"), max_new_tokens=3, do_sample=False).shape[1] > 1


def test_bnb_nf4_keeps_its_checkpoint_for_vllm_and_it_reads_back_as_the_same_model():
    """vLLM's bitsandbytes loader reads transformers' 4-bit checkpoint: the one kept is the quantized model itself."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    from transformers import AutoModelForCausalLM

    from studylib.core import engines

    model, tok = fresh_tiny("bfloat16")
    method = build("bnb-nf4")
    q = method.apply(model, tok)
    kept = engines.served_checkpoint(q)
    assert kept["format"] == "bitsandbytes-nf4" and kept["why"] is None
    assert engines.route(*engines.choose("vllm", ["bnb-nf4"]), q) == ("vllm", None, kept)
    config = json.loads((Path(kept["path"]) / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "bitsandbytes" and config["bnb_4bit_quant_type"] == "nf4"
    assert config["load_in_4bit"] and config["bnb_4bit_use_double_quant"]
    back = AutoModelForCausalLM.from_pretrained(kept["path"], device_map={"": "cpu"})
    for name in block_linears(q):
        ours, theirs = q.get_submodule(name), back.get_submodule(name)
        assert isinstance(theirs, bnb.nn.Linear4bit)
        assert torch.equal(F.dequantize_4bit(theirs.weight.data, theirs.weight.quant_state),
                           F.dequantize_4bit(ours.weight.data, ours.weight.quant_state)), name


def test_bnb_keeps_float32_parameters_of_an_earlier_step():
    """SmoothQuant keeps smoothed Gemma norms in fp32 in a bf16 model: the NF4 reload must not cast them back."""
    from studylib.methods.bnb import nf4_quantize

    model, tok = fresh_tiny("bfloat16")
    norm = model.model.layers[0].input_layernorm
    norm.weight = torch.nn.Parameter(norm.weight.detach().float() + 1e-4, requires_grad=False)
    kept = norm.weight.detach().clone()
    q, info = nf4_quantize(model, tok)
    assert info["kept_float32"] == ["model.layers.0.input_layernorm.weight"]
    assert q.model.layers[0].input_layernorm.weight.dtype == torch.float32
    assert torch.equal(q.model.layers[0].input_layernorm.weight, kept)


# ----------------------------------------------------------------------------------- GPTQ

def _rtn(w, bits, group_size):
    """Round-to-nearest on the same symmetric grid as GPTQ (per row, or per group of columns)."""
    maxq = 2 ** bits - 1
    cols = w.shape[1] if group_size == -1 else group_size
    g = w.reshape(w.shape[0], -1, cols)
    scale = (2 * g.abs().amax(-1, keepdim=True) / maxq).clamp(min=1e-8)
    zero = (maxq + 1) / 2
    q = torch.clamp(torch.round(g / scale) + zero, 0, maxq)
    return (scale * (q - zero)).reshape(w.shape)


def test_gptq_layer_error_is_below_round_to_nearest_on_correlated_inputs():
    """GPTQ's objective, ||X Wᵀ - X Qᵀ||², is lower than RTN's on the same grid; each group keeps <= 2^bits values."""
    from studylib.methods.gptq import gptq_layer

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 8, generator=gen) @ torch.randn(8, 64, generator=gen) + 0.1 * torch.randn(2048, 64, generator=gen)
    w = torch.randn(32, 64, generator=gen)
    for bits, group in ((3, -1), (4, 32)):
        q = gptq_layer(w, x, bits=bits, group_size=group, damp=0.01)
        err_gptq = ((x @ (w - q).T) ** 2).sum()
        err_rtn = ((x @ (w - _rtn(w, bits, group)).T) ** 2).sum()
        assert err_gptq < 0.5 * err_rtn, (bits, group, err_gptq, err_rtn)
        cols = 64 if group == -1 else group
        per_group = q.reshape(32, -1, cols)
        assert max(len(torch.unique(per_group[r, g])) for r in range(32) for g in range(per_group.shape[1])) <= 2 ** bits


def test_gptq_quantizes_tiny_gemma3_and_records_the_kernel_and_the_fallback(calib):
    """3 bits asked with Marlin on a CPU: Marlin cannot load, the honest fallback is recorded, weights are 3-bit."""
    model, tok = fresh_tiny()
    originals = {n: m.weight.detach().clone() for n, m in block_linears(model).items()}
    method = build("gptq", bits=3, group_size=32, backend="marlin")
    q = method.apply(model, tok, calib)
    info = method.describe()
    assert info["modules"] == len(originals) and info["fallback_modules"] == {} and info["damp_raised"] == {}
    assert "marlin could not load" in info["backend_fallback"]
    assert info["kernel"] == {"TorchLinear": {"modules": len(originals),
                                               "what": "torch (dequantize + matmul; no low-bit kernel)"}}
    assert info["quantize_config"]["act_group_aware"] is False and info["quantize_config"]["desc_act"] is False
    assert info["checkpoint_bytes"] > 0 and info["calibration_tokens"] > 0
    # 3 bits: vLLM's gptq_marlin cannot serve it, so hf decodes it and says why; nothing is kept for vLLM
    from studylib.core import engines

    assert "not 3-bit" in info["vllm"] and engines.route("vllm", None, q)[:2] == ("hf", info["vllm"])
    for name, w in originals.items():
        deq = q.get_submodule(name).dequantize_weight().float()
        deq = deq if deq.shape == w.shape else deq.T
        assert (deq - w).norm() / w.norm() < 0.5
        groups = deq.reshape(w.shape[0], -1, 32)
        assert max(len(torch.unique(groups[r, g])) for r in range(w.shape[0]) for g in range(groups.shape[1])) <= 8
    assert q.generate(**tok(["Translate this"], return_tensors="pt"), max_new_tokens=3, do_sample=False).shape[1] > 1
    assert not list(Path("logs").glob("gptq_log_*")), "GPTQModel's logs leaked into ./logs"
    # the input model is consumed: GPTQModel keeps references to it, so its tensors are released explicitly
    assert {p.device.type for p in model.parameters()} == {"meta"}
    # nor do the calibration forwards' frames outlive the call (GPTQModel's reused StopForward kept them and their
    # captured layer inputs: on the H200, up to 0.9 GB more peak memory as the calibration grew)
    from gptqmodel.nn_modules import hooked_linear

    assert hooked_linear.STOP_FORWARD_EXCEPTION.__traceback__ is None


def test_gptq_measures_the_zeros_of_its_checkpoint_whatever_kernel_loads_it(calib):
    """On the H200 Marlin loads the checkpoint and cannot dequantize; the zeros a pruning mask leaves after GPTQ are
    read from the checkpoint instead, and agree with dequantizing the CPU kernel's layers."""
    from studylib.methods import pruning

    model, tok = fresh_tiny()
    model = build("wanda", sparsity=0.5, batch_size=2).apply(model, tok, calib)
    method = build("gptq", bits=4, group_size=32)
    q = method.apply(model, tok, calib)
    from_checkpoint = method.describe()["checkpoint_sparsity"]
    from_layers = pruning.dequantized_sparsity(q)
    assert from_layers is not None and from_checkpoint["modules"] == from_layers["modules"]
    assert from_checkpoint["zero_fraction_dequantized"] == pytest.approx(from_layers["zero_fraction_dequantized"])
    assert from_checkpoint["zero_fraction_dequantized"] > 0.1  # much of the 50 % mask survives 4-bit GPTQ
    # 4 bits, group 32, symmetric: vLLM serves GPTQModel's own checkpoint, kept beyond the method's temporary folder
    import json

    from studylib.core import engines

    name, why, kept = engines.route("vllm", None, q)
    assert (name, why, kept["format"]) == ("vllm", None, "gptq")
    config = json.loads((Path(kept["path"]) / "config.json").read_text())
    assert config["quantization_config"]["bits"] == 4 and config["quantization_config"]["group_size"] == 32


def test_gptq_quant_log_names_raised_damping_and_fallbacks():
    from studylib.methods.gptq import summarize_quant_log

    log = {"gptq": [
        {"layer": 0, "module": "self_attn.q_proj", "loss": "0.001", "damp": "0.01000", "samples": "100"},
        {"layer": 0, "module": "mlp.down_proj", "loss": "0.002", "damp": "0.03000", "samples": "100"},
        {"layer": 1, "module": "mlp.up_proj", "loss": "rtn fallback", "damp": "1.0", "samples": "100"},
        {"layer": 1, "module": "mlp.gate_proj", "loss": "nan", "damp": "0.01", "samples": "100"},
    ]}
    out = summarize_quant_log(log, 0.01)
    assert out["damp_raised"] == {"layer0.mlp.down_proj": 0.03}
    assert out["fallback_modules"] == {"layer1.mlp.up_proj": "rtn fallback", "layer1.mlp.gate_proj": "NaN loss"}
    assert out["modules"] == 4 and out["calibration_tokens"] == 100


def test_gptq_quiets_logbar_while_it_runs_and_puts_it_back(tmp_path, monkeypatch):
    """GPTQModel's logger writes plain text at WARNING inside the method (a notebook's display updates overflowed
    nbval's reading of a CI cell), and is as it was afterwards."""
    import logging

    from logbar import LogBar
    from logbar import logbar as lb

    from studylib.methods.gptq import _quiet_gptqmodel

    monkeypatch.delenv("LOGBAR_DISABLE_NOTEBOOK_DETECTION", raising=False)
    monkeypatch.setenv("JPY_PARENT_PID", "1")  # what makes LogBar think it draws into a notebook
    bar = LogBar.shared()
    before = bar.level
    assert lb._running_in_notebook_environment()
    with _quiet_gptqmodel(tmp_path / "logs"):
        assert not lb._running_in_notebook_environment()
        assert bar.level == logging.WARNING
    assert lb._running_in_notebook_environment() and bar.level == before


def test_gptq_backend_fallback_wrapper_with_a_mock(monkeypatch):
    """The load wrapper: a backend that raises gives way to auto, and the reason is kept; auto itself is not masked."""
    import gptqmodel

    from studylib.methods.gptq import GPTQ

    calls = []

    class Fake:
        model = torch.nn.Sequential(torch.nn.Linear(2, 2))

    def fake_load(path, device=None, backend=None, dtype=None):
        calls.append((backend, dtype))
        if backend != "auto":
            raise ValueError("Marlin kernel requires CUDA.")
        return Fake()

    monkeypatch.setattr(gptqmodel.GPTQModel, "load", staticmethod(fake_load))
    model, loaded = GPTQ(backend="marlin")._load("x", torch.device("cpu"), torch.float32)
    assert calls == [("gptq_marlin", torch.bfloat16), ("auto", torch.bfloat16)]
    assert loaded["backend_fallback"].startswith("marlin could not load (ValueError: Marlin kernel requires CUDA.)")
    assert loaded["kernel"] == {} and "bfloat16" in loaded["inference_dtype"]

    def broken(*a, **k):
        raise RuntimeError("broken checkpoint")

    monkeypatch.setattr(gptqmodel.GPTQModel, "load", staticmethod(broken))
    with pytest.raises(RuntimeError, match="broken checkpoint"):  # nothing loads: the first error, not a later one
        GPTQ(backend="auto")._load("x", torch.device("cpu"), torch.bfloat16)

    calls.clear()

    def machete_offline(path, device=None, backend=None, dtype=None):  # what the H200 did offline
        calls.append(backend)
        if backend in ("auto", "gptq_marlin"):
            raise RuntimeError("urlopen error: CUTLASS download" if backend == "auto" else "no marlin")
        return Fake()

    monkeypatch.setattr(gptqmodel.GPTQModel, "load", staticmethod(machete_offline))
    _, loaded = GPTQ(backend="auto")._load("x", torch.device("cpu"), torch.bfloat16)
    assert calls == ["auto", "gptq_marlin", "gptq_exllama_v2"]
    assert set(loaded["backends_tried"]) == {"auto", "marlin"} and loaded["backend_fallback"].endswith("used exllama_v2")


# ----------------------------------------------------------------------------------- SmoothQuant

def test_smoothing_scales_follow_the_paper():
    from studylib.methods.smoothquant import smoothing_scales

    act = torch.tensor([10.0, 0.5, 2.0])
    w1 = torch.tensor([[0.1, 0.2, -0.4], [0.3, -0.1, 0.1]])
    w2 = torch.tensor([[-0.2, 0.05, 0.2]])
    for alpha in (0.5, 0.8):
        s = smoothing_scales(act, [w1, w2], alpha)
        w_max = torch.tensor([0.3, 0.2, 0.4])
        assert torch.allclose(s, act ** alpha / w_max ** (1 - alpha))


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_smoothing_alone_leaves_outputs_unchanged(arch, calib):
    """The transform is exact in fp32: Gemma's (1 + w) norms and Llama's w norms, each with its MLP-input norm."""
    from studylib.methods.smoothquant import smooth_model, smoothing_groups

    if arch == "gemma3":
        model, tok = fresh_tiny()
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        _, tok = fresh_tiny(nonzero_norms=False)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             pad_token_id=0)).eval()
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.add_(torch.randn(p.shape) * 0.3)
    before_w = {n: p.detach().clone() for n, p in model.named_parameters()}
    ref = logits(model, tok, calib[:6])
    info = smooth_model(model, tok, calib, alpha=0.5)
    out = logits(model, tok, calib[:6])
    assert (out - ref).abs().max() <= 1e-4 * (ref.max() - ref.min())
    assert info["norm_offsets"] == ({"1.0": 4} if arch == "gemma3" else {"0.0": 4})
    assert info["pairs"].endswith(("pre_feedforward_layernorm->gate/up_proj" if arch == "gemma3"
                                   else "post_attention_layernorm->gate/up_proj"))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before_w[n])]
    for norm_name, _, linears in smoothing_groups(model):
        assert f"model.{norm_name}.weight" in changed
        assert all(f"model.{lin}.weight" in changed for lin, _ in linears)
    assert not any("o_proj" in n or "down_proj" in n for n in changed)  # their inputs are not smoothed


def test_w8a8_linear_is_per_token_times_per_channel_int8():
    from studylib.methods._w8a8 import W8A8Linear, int_mm_mode

    gen = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 32, bias=True)
    x = torch.randn(2, 5, 64, generator=gen)
    x[..., 3] *= 40  # an outlier channel
    exact = lin(x)
    layers = {mode: W8A8Linear(lin, mode) for mode in (int_mm_mode(torch.device("cpu"), 64, 32), None)}
    q = layers[None].weight
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and (q.abs().amax(dim=1) == 127).all()
    # the definition, by hand: per-token activation scale x per-channel weight scale
    xs = x.reshape(-1, 64).abs().amax(-1, keepdim=True) / 127
    xq = torch.round(x.reshape(-1, 64) / xs).clamp(-127, 127)
    ws = lin.weight.abs().amax(1) / 127
    manual = ((xq @ torch.round(lin.weight / ws[:, None]).T) * xs * ws + lin.bias).reshape(2, 5, 32)
    for mode, layer in layers.items():
        y = layer(x)
        assert torch.allclose(y, manual, atol=1e-4), mode
        assert (y - exact).abs().max() < 0.05 * exact.abs().max()
    assert layers[None].kernel == "simulated"


def test_w8a8_pads_rows_when_the_int8_gemm_wants_more_of_them(monkeypatch):
    """Mock of a cuBLASLt-style rule (more than 16 rows): the probe finds 'pad' and decoding a single token still works."""
    from studylib.methods import _w8a8

    real = torch._int_mm

    def picky(a, b):
        if a.shape[0] <= 16:
            raise RuntimeError("self.size(0) needs to be greater than 16")
        return real(a, b)

    monkeypatch.setattr(torch, "_int_mm", picky)
    assert _w8a8.int_mm_mode(torch.device("cpu"), 64, 32) == "pad"
    lin = torch.nn.Linear(64, 32)
    layer = _w8a8.W8A8Linear(lin, "pad")
    x = torch.randn(1, 1, 64)
    assert torch.allclose(layer(x), _w8a8.W8A8Linear(lin, None)(x), atol=1e-5)
    assert layer.kernel == "torch._int_mm" and layer.fallbacks == 0

    monkeypatch.setattr(torch, "_int_mm", lambda a, b: real(a, b) + (a.shape[0] == 17))  # wrong for one shape
    assert _w8a8.int_mm_mode(torch.device("cpu"), 64, 32) is None  # not exact: simulated, never a wrong kernel


def test_smoothquant_w8a8_on_tiny_gemma3(calib):
    from studylib.methods._w8a8 import W8A8Linear

    model, tok = fresh_tiny()
    names = list(block_linears(model))
    ref = logits(model, tok, calib[:4])
    method = build("smoothquant", alpha=0.5)
    q = method.apply(model, tok, calib)
    info = method.describe()
    assert all(isinstance(q.get_submodule(n), W8A8Linear) for n in names)
    assert isinstance(q.lm_head, torch.nn.Linear) and info["quantized_modules"] == len(names)
    assert sum(info["kernel"].values()) == len(names) and info["smoothing_check"]["relative_to_logit_range"] < 1e-5
    out = logits(q, tok, calib[:4])
    assert 0 < (out - ref).abs().max() < 0.1 * (ref.max() - ref.min())


def test_smoothquant_in_bf16_keeps_smoothed_gemma_norms_in_fp32(calib):
    model, tok = fresh_tiny("bfloat16")
    method = build("smoothquant", alpha=0.5, kernel="simulated")
    q = method.apply(model, tok, calib)
    info = method.describe()
    assert info["norms_kept_float32"] == 4 and info["kernel"] == {"simulated": len(block_linears(q))}
    assert q.model.layers[0].input_layernorm.weight.dtype == torch.float32
    assert q.model.layers[0].post_attention_layernorm.weight.dtype == torch.bfloat16  # not smoothed


def test_smoothquant_nf4_smooths_then_quantizes(calib):
    import bitsandbytes as bnb

    model, tok = fresh_tiny()
    method = build("smoothquant-nf4", alpha=0.5)
    q = method.apply(model, tok, calib)
    info = method.describe()
    assert info["smoothing_check"]["relative_to_logit_range"] < 1e-5
    assert info["nf4"]["quantized_modules"] == len([m for m in q.modules() if isinstance(m, bnb.nn.Linear4bit)]) > 0


def test_smoothquant_stops_when_a_mapping_is_not_an_identity(calib, monkeypatch):
    """llm-compressor's Gemma-3 mapping (post_attention_layernorm -> gate/up) changes the model: the run check stops it."""
    from studylib.methods import smoothquant

    right = smoothquant.smoothing_groups

    def wrong(model):
        groups = right(model)
        for i, (name, norm, linears) in enumerate(groups):
            if name.endswith("pre_feedforward_layernorm"):
                block = model.model.layers[int(name.split(".")[1])]
                groups[i] = (name.replace("pre_feedforward", "post_attention"), block.post_attention_layernorm, linears)
        return groups

    monkeypatch.setattr(smoothquant, "smoothing_groups", wrong)
    model, tok = fresh_tiny()
    with pytest.raises(MethodError, match="smoothing changed the outputs of Gemma3ForCausalLM"):
        build("smoothquant").apply(model, tok, calib)


def test_smoothquant_names_blocks_it_does_not_know():
    from studylib.methods.smoothquant import smoothing_groups

    block = torch.nn.Module()
    block.self_attn, block.mlp, block.input_layernorm = torch.nn.Module(), torch.nn.Module(), torch.nn.LayerNorm(4)
    block.post_attention_layernorm = torch.nn.LayerNorm(4)
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([block])
    with pytest.raises(MethodError, match="Llama/Gemma-style blocks"):
        smoothing_groups(model)


# ----------------------------------------------------------------------------------- record checks

def test_check_record_finds_test_sentences_inside_calibration():
    from types import SimpleNamespace

    from studylib.runs.quantization import GPTQParams, calibration_sentences, check_record

    texts = ["Translate this from German to English:\nGerman: Hallo Welt.\nEnglish: Hello world."]
    assert {"Hallo Welt.", "Hello world."} <= calibration_sentences(texts)
    cfg = GPTQParams(directions=["de-en"], calib_directions=["de-en"], calib_per_direction=1)
    ex = SimpleNamespace(src="Hallo Welt.", tgt="Hello world.")
    job = SimpleNamespace(cfg=cfg, test_sets={"de-en": [ex]}, calibration=SimpleNamespace(texts=texts))
    record = {"metrics": {"de-en": {"n": 1, "bleu": 1.0}}, "efficiency": {"time_per_token_ms": 1.0},
              "compression": {"recipe": [{"method": "gptq", "kernel": {"TorchLinear": {}}, "modules": 1}],
                              "seconds": 1.0, "calibration": {"per_direction": {"de-en": 1}}}}
    with pytest.raises(AssertionError, match="test sentences found in the calibration texts"):
        check_record(record, job, "gptq")
    job.calibration.texts = [texts[0].replace("Hallo", "Guten Tag").replace("Hello", "Good day")]
    check_record(copy.deepcopy(record), job, "gptq")
    with pytest.raises(AssertionError, match="expected \\['smoothquant'\\]"):
        check_record(record, job, "smoothquant")


# ----------------------------------------------------------------------------------- CUDA (the real kernels)

@needs_cuda
def test_cuda_gptq_4bit_loads_a_real_low_bit_kernel(calib):
    from studylib.core import models

    model, tok = models.load_model(models.TINY_MODEL, dtype="bfloat16", device="cuda")
    method = build("gptq", bits=4, group_size=32)
    q = method.apply(model, tok, calib)
    kernels = set(method.describe()["kernel"])
    assert kernels & {"MarlinLinear", "ExllamaV2Linear", "TritonV2Linear", "MacheteLinear"}, kernels
    assert q.generate(**tok(["Translate this"], return_tensors="pt").to("cuda"), max_new_tokens=3).shape[1] > 1


@needs_cuda
def test_cuda_w8a8_uses_the_int8_gemm():
    from studylib.methods._w8a8 import W8A8Linear, int_mm_mode

    lin = torch.nn.Linear(640, 1024, device="cuda", dtype=torch.bfloat16)
    mode = int_mm_mode(torch.device("cuda"), 640, 1024)
    assert mode in ("direct", "pad")
    x = torch.randn(1, 3, 640, device="cuda", dtype=torch.bfloat16)
    real, sim = W8A8Linear(lin, mode), W8A8Linear(lin, None)
    assert torch.allclose(real(x).float(), sim(x).float(), rtol=2e-2, atol=2e-2) and real.fallbacks == 0


@needs_cuda
@pytest.mark.parametrize("name", ["bnb-int8", "bnb-nf4"])
def test_cuda_bitsandbytes_kernels(name):
    from studylib.core import models

    model, tok = models.load_model(models.TINY_MODEL, dtype="bfloat16", device="cuda")
    method = build(name)
    q = method.apply(model, tok)
    assert method.describe()["native_backend"] == "CUDA"
    assert q.generate(**tok(["Translate this"], return_tensors="pt").to("cuda"), max_new_tokens=3).shape[1] > 1


def test_storage_of_a_method_with_its_own_checkpoint_format_is_that_checkpoint():
    """GPTQ reports the size of the GPTQ checkpoint it wrote; compression takes it rather than re-saving the model."""
    from types import SimpleNamespace

    from studylib.runs import compression

    job = SimpleNamespace(cfg=SimpleNamespace(save_compressed=True), described=[{"method": "gptq", "checkpoint_bytes": 1234}],
                          storage_bytes=None)
    assert compression.saved_size(job, model=None) == 1234 and job.storage_bytes == 1234
    job.cfg.save_compressed = False
    assert compression.saved_size(job, model=None) is None


def test_smoothquant_w8a8_exports_a_compressed_tensors_checkpoint_transformers_reads_back(calib):
    """The checkpoint kept for vLLM is read by transformers through the compressed-tensors library as the int8
    weights times their per-channel scales that the study's W8A8 layers compute with."""
    from transformers import AutoModelForCausalLM

    from studylib.core import engines
    from studylib.methods._w8a8 import W8A8Linear

    model, tok = fresh_tiny("bfloat16")
    method = build("smoothquant", alpha=0.5, kernel="simulated")
    q = method.apply(model, tok, calib)
    export = method.describe()["vllm_export"]
    kept = engines.served_checkpoint(q)
    assert kept["format"] == "compressed-tensors-w8a8" and kept["why"] is None
    assert engines.route(*engines.choose("vllm", ["smoothquant"]), q) == ("vllm", None, kept)
    config = json.loads((Path(kept["path"]) / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    assert config["config_groups"]["group_0"]["input_activations"]["strategy"] == "token"
    assert export["quantized_linears"] == len(block_linears(q)) and export["norm_scale_rounding"]["norms"] == 4
    assert 0 < export["norm_scale_rounding"]["max"] < 0.1  # a smoothed norm rounded to bf16 where vLLM holds it

    back = AutoModelForCausalLM.from_pretrained(kept["path"], dtype=torch.bfloat16)
    for name in block_linears(q):
        ours, theirs = q.get_submodule(name), back.get_submodule(name)
        assert isinstance(ours, W8A8Linear)
        assert torch.equal(theirs.weight.data, ours.weight.data), name
        # float32 in the checkpoint (vLLM keeps them so); transformers holds them in the model's dtype
        assert torch.equal(theirs.weight_scale.data.flatten(), ours.weight_scale.to(theirs.weight_scale.dtype)), name
    norm = q.model.layers[0].input_layernorm.weight
    assert torch.equal(back.model.layers[0].input_layernorm.weight.data, norm.data.to(torch.bfloat16))
    ref, out = logits(q, tok, calib[:4]), logits(back, tok, calib[:4])
    assert (out - ref).abs().max() < 0.05 * (ref.max() - ref.min())  # the same model, its norms rounded to bf16
