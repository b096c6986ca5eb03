import torch

from studylib.core import efficiency


def test_param_counts_and_sparsity(tiny):
    model, _ = tiny
    total = efficiency.count_params(model)
    assert total == sum(p.numel() for p in model.parameters())
    before = efficiency.count_nonzero_params(model)
    layer = model.model.layers[0].mlp.down_proj.weight
    saved = layer.detach().clone()
    with torch.no_grad():
        layer[:, ::2] = 0  # prune half the columns
    try:
        after = efficiency.count_nonzero_params(model)
        assert before - after == int(torch.count_nonzero(saved[:, ::2]))
    finally:
        with torch.no_grad():
            layer.copy_(saved)


def test_storage_is_measured_from_safetensors(tiny, tmp_path):
    model, _ = tiny
    n = efficiency.saved_storage_bytes(model)
    # fp32 weights plus a small header; tied embeddings are stored once
    assert 4 * efficiency.count_params(model) <= n < 4 * efficiency.count_params(model) + 100_000
    assert efficiency.gb(2_500_000_000) == 2.5


def test_decode_speed_reports_median_after_warmup(tiny):
    model, tok = tiny
    r = efficiency.decode_speed(model, tok, "German: Hallo\nEnglish:", batch_size=2, new_tokens=5, repeats=2)
    assert r["new_tokens"] == 5 and r["batch_size"] == 2
    assert abs(r["tokens_per_s"] - 2 * 5 / r["seconds_median"]) < 1e-6
    assert abs(r["time_per_token_ms"] - 1000 * r["seconds_median"] / 5) < 1e-9
    assert r["gpu_processes"] is None  # no GPU here: nothing to say whether one was shared


def test_gpu_processes_counts_what_nvidia_smi_lists(monkeypatch):
    import subprocess

    from studylib.core import records

    monkeypatch.setattr(records.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(records.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "101\n202\n", ""))
    assert records.gpu_processes() == 2 and records.host_load()["gpu_processes"] == 2
    monkeypatch.setattr(records.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 9, "", "no driver"))
    assert records.gpu_processes() is None


def test_efficiency_report_on_cpu_has_no_gpu_peak(tiny):
    model, tok = tiny
    r = efficiency.efficiency_report(model, tok, prompt="German: Hallo\nEnglish:", new_tokens=3, repeats=1)
    assert r["peak_memory_bytes"] is None and r["device"] == "cpu"
    assert r["params"] >= r["nonzero_params"] > 0


def test_packed_integer_weights_are_counted_unpacked():
    class Packed(torch.nn.Module):  # the shape of a GPTQ QuantLinear: weights in an int32 buffer, 8 per element
        def __init__(self):
            super().__init__()
            self.in_features, self.out_features = 64, 32
            self.register_buffer("qweight", torch.zeros(64 // 8, 32, dtype=torch.int32))
            self.bias = torch.nn.Parameter(torch.ones(32))

    model = torch.nn.Sequential(Packed(), torch.nn.Linear(4, 4, bias=False))
    assert efficiency.count_params(model) == 64 * 32 + 32 + 16


def test_packed_weights_held_as_parameters_are_counted_once_unpacked():
    """Marlin repacks GPTQ weights into int32 *parameters* (a 4-bit W4 layer read 181M params instead of 268M on the
    H200): they count as in x out weights, their scales are not weights, the bias is."""
    class MarlinLike(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.in_features, self.out_features = 64, 32
            self.qweight = torch.nn.Parameter(torch.ones(64 // 8, 32, dtype=torch.int32), requires_grad=False)
            self.scales = torch.nn.Parameter(torch.ones(1, 32), requires_grad=False)
            self.bias = torch.nn.Parameter(torch.ones(32))

    model = torch.nn.Sequential(MarlinLike(), torch.nn.Linear(4, 4, bias=False))
    assert efficiency.count_params(model) == 64 * 32 + 32 + 16
    assert efficiency.count_nonzero_params(model) == 64 * 32 + 32 + 16


def test_resident_bytes_count_the_models_own_tensors_once(tiny):
    model, _ = tiny
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    storages.update({b.untyped_storage().data_ptr(): b.untyped_storage().nbytes() for b in model.buffers()})
    assert efficiency.resident_bytes(model) == sum(storages.values())  # tied embeddings once

    class State:  # the shape of bitsandbytes' QuantState: tensors on an object the weight carries, one nested
        def __init__(self, n, nested=None):
            self.absmax, self.state2 = torch.ones(n), nested

    layer = torch.nn.Linear(8, 8, bias=False)
    layer.weight.quant_state = State(4, State(2))
    layer.workspace = torch.zeros(16, dtype=torch.uint8)  # a kernel's workspace kept as a plain attribute
    assert efficiency.resident_bytes(layer) == 8 * 8 * 4 + 4 * 4 + 2 * 4 + 16
    assert efficiency.resident_bytes(layer, "meta") == 0  # only what is on the device asked for


def test_peak_memory_is_the_models_footprint_not_the_processes():
    """Another copy of the model or leftovers of compression held by the process do not count (27_prune_depth kept
    the unpruned teacher on the GPU; GPTQ runs held calibration-sized leftovers)."""
    alone = efficiency.footprint(resident=500, before=500, peak=800)
    crowded = efficiency.footprint(resident=500, before=1500, peak=1800)
    assert alone["peak_memory_bytes"] == crowded["peak_memory_bytes"] == 800
    assert crowded["memory"]["other_allocated_bytes"] == 1000 and crowded["memory"]["process_peak_bytes"] == 1800
    assert efficiency.footprint(None, None, None) == {"peak_memory_bytes": None, "memory": None}


def test_fp8_weights_count_their_nonzeros_whatever_the_sign_of_zero():
    import torch

    w = torch.nn.Parameter(torch.tensor([0.0, -0.0, 1.5, -2.0]).to(torch.float8_e4m3fn), requires_grad=False)
    model = torch.nn.Module()
    model.register_parameter("w", w)
    assert efficiency.count_nonzero_params(model) == 2
