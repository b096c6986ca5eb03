"""The 7B-architecture efficiency benchmark (notebook 40): params, variant builders, ratios, the record -- on the
tiny Llama on the CPU. The GPU kernels themselves (Marlin, cuSPARSELt, bitsandbytes CUDA) run only on the device."""

import warnings

import pytest
import torch

from studylib import benchmark, records
from studylib import benchmark_variants as bv
from studylib.benchmark_params import BenchmarkParams
from studylib.params import ParamsError, check_overrides

FAST = dict(warmup=0, repeats=2, prompt_tokens=4, new_tokens=6, large_batch=2, prefill_tokens=8, bandwidth_mib=1,
            time_gptq=False, time_wanda=False)


def cfg(**kw):
    return BenchmarkParams(**{**FAST, **kw})


@pytest.mark.parametrize("key, value, message", [
    ("variants", ["fp16", "gptq-w3"], "unknown variants"),
    ("variants", ["bf16"], "must include 'fp16'"),
    ("variants", ["fp16", "fp16"], "repeat"),
    ("variants", [], "non-empty"),
    ("architecture", "llama-3-70b", "architecture must be one of"),
    ("repeats", 0, "repeats must be a positive integer"),
    ("new_tokens", 1, "new_tokens must be an integer >= 2"),
    ("warmup", -1, "warmup"),
    ("device", "gpu", "device must be"),
    ("gptq_backend", "magic", "gptq_backend"),
    ("gptq_group_size", 96, "gptq_group_size must be one of"),
    ("gptq_group_size", 512, "does not divide"),
    ("sparse_kernel", "cusparse", "sparse_kernel"),
    ("wanda_sparsity", 1.0, "wanda_sparsity"),
    ("prefill_tokens", 4096, "exceed"),
    ("time_budget_s", 0, "time_budget_s"),
    ("storage", "yes", "storage must be true or false"),
])
def test_bad_params_fail_before_any_model_is_built(monkeypatch, key, value, message):
    def no_model(*a, **k):
        raise AssertionError("a model was built before the params were checked")

    monkeypatch.setattr(benchmark, "build_random", no_model)
    with pytest.raises(ParamsError, match=message):
        check_overrides("40_efficiency_7b", {key: value})


def test_the_full_profile_is_the_7b_architecture_and_validates_here():
    from studylib import pipeline

    job = pipeline.load_job("params/40_efficiency_7b_llama2-7b.yaml")
    p = job.parameters
    assert p["architecture"] == "llama-2-7b" and p["device"] == "cuda" and p["prefill_tokens"] == 512
    assert (p["gptq_calib_samples"], p["gptq_calib_tokens"]) == (128, 2048) and p["large_batch"] == 16
    assert set(p["variants"]) == set(bv.VARIANTS)
    assert benchmark.ARCHITECTURES["llama-2-7b"]["intermediate_size"] == 11008


def test_a_cuda_run_on_a_cpu_machine_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        benchmark.plan(cfg(device="cuda"))


def test_layer_pruning_really_removes_layers_and_parameters():
    full = bv.build_variant("fp16", cfg())
    half = bv.build_variant("layers-50", cfg())
    three_quarters = bv.build_variant("layers-75", cfg())
    model = half.model
    assert model.config.num_hidden_layers == len(model.model.layers) == 2
    assert half.info["removed"] == [1, 2] and half.info["layers_after"] == 2  # the middle block
    assert three_quarters.model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(model) < n(three_quarters.model) < n(full.model) and half.info["params_after"] == n(model)
    out = model.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=3, min_new_tokens=3, do_sample=False,
                         pad_token_id=0)
    assert out.shape == (1, 6)  # the KV cache follows the new layer count


def test_2of4_magnitude_mask_zeros_exactly_two_of_every_four_on_cpu():
    built = bv.build_variant("sparse-2of4", cfg(storage=False))
    linears = bv.decoder_linears(built.model)
    assert len(linears) == 4 * 7 and built.info["pattern_holds"]
    for name, lin in linears.items():
        w = lin.weight.detach()
        assert not w.is_sparse and w.dtype == torch.float16  # CPU: masked dense, said in the kernel
        zeros = (w.reshape(w.shape[0], -1, 4) == 0).sum(-1)
        assert bool((zeros == 2).all()), name
    assert "no semi-structured sparse kernel on CPU" in built.kernel
    assert "zeros" in built.storage_note and "not saved" in built.storage_note
    # the two kept weights of each group are the two largest in magnitude
    fresh = benchmark.build_random("tiny-llama", "float16", "cpu", seed=0)
    w0 = fresh.model.layers[0].self_attn.q_proj.weight.detach().abs().reshape(-1, 4).float()
    kept = linears["0.self_attn.q_proj"].weight.detach().reshape(-1, 4) != 0
    assert bool((w0.masked_fill(~kept, float("inf")).min(-1).values >= w0.masked_fill(kept, 0).max(-1).values).all())


def test_ratios_are_to_the_reference_and_none_where_nothing_ran():
    rows = [
        {"variant": "fp16", "status": "ok", "decode_b1_ms": 10.0, "decode_large_ms": 20.0, "prefill_ms": 40.0,
         "peak_memory_bytes": 100, "storage_bytes": 50, "floor_ms": 8.0},
        {"variant": "gptq-w4", "status": "ok", "decode_b1_ms": 3.0, "decode_large_ms": 10.0, "prefill_ms": 50.0,
         "peak_memory_bytes": 40, "storage_bytes": 15, "floor_ms": 2.5},
        {"variant": "sparse-2of4", "status": "failed", "kernel": "unavailable", "error": "no kernel"},
    ]
    out = {r["variant"]: r for r in benchmark.ratios(rows)}
    assert out["fp16"]["decode_b1_ratio"] == 1 and out["fp16"]["floor_ratio"] == pytest.approx(1.25)
    g = out["gptq-w4"]
    assert g["decode_b1_ratio"] == pytest.approx(0.3) and g["decode_large_ratio"] == pytest.approx(0.5)
    assert g["prefill_speedup"] == pytest.approx(0.8) and g["prefill_ratio"] == pytest.approx(1.25)
    assert g["memory_ratio"] == pytest.approx(0.4) and g["storage_ratio"] == pytest.approx(0.3)
    assert g["floor_ratio"] == pytest.approx(1.2)
    assert all(out["sparse-2of4"][k] is None for k in ("decode_b1_ratio", "prefill_speedup", "floor_ratio"))
    no_ref = benchmark.ratios([r for r in rows if r["variant"] != "fp16"])
    assert no_ref[0]["decode_b1_ratio"] is None and no_ref[0]["floor_ratio"] == pytest.approx(1.2)


def test_floor_bytes_leave_out_all_but_one_row_of_the_input_embeddings():
    model = benchmark.build_random("tiny-llama", "float16", "cpu")
    total = sum(p.numel() * 2 for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())
    assert benchmark.weight_bytes(model) == total
    emb = model.get_input_embeddings().weight
    assert benchmark.floor_bytes(model) == total - emb.numel() * 2 + emb.shape[1] * 2


def test_a_run_makes_a_complete_record_and_a_failed_variant_is_recorded_not_raised(monkeypatch, tmp_path, capsys):
    def broken(_cfg):
        raise RuntimeError("kernel missing on this device")

    monkeypatch.setitem(bv.BUILDERS, "bf16", broken)
    c = cfg(variants=["fp16", "bf16", "layers-50"], time_wanda=True, wanda_calib_samples=2, wanda_calib_tokens=8,
            results_dir=str(tmp_path))
    plan = benchmark.plan(c)
    budget = benchmark.Budget(c.time_budget_s)
    bandwidth = benchmark.measure_bandwidth(c)
    rows = benchmark.run_variants(c, bandwidth, budget)
    compression = benchmark.time_compression(c, rows, budget)
    record = benchmark.make_benchmark_record(c, bandwidth, rows, compression, budget, plan)
    benchmark.check_record(record, c)
    bench = record["benchmark"]
    by = {r["variant"]: r for r in bench["variants"]}
    assert by["bf16"]["status"] == "failed" and by["bf16"]["kernel"] == benchmark.UNAVAILABLE
    assert "kernel missing on this device" in by["bf16"]["error"] and "Traceback" in by["bf16"]["traceback"]
    assert by["layers-50"]["status"] == "ok" and by["layers-50"]["layers"] == 2  # the run went on after the failure
    assert by["fp16"]["decode_b1_ratio"] == 1 and by["layers-50"]["decode_b1_ratio"] > 0
    assert by["fp16"]["kernel"].startswith("dense float16") and by["fp16"]["storage_bytes"] > 0
    assert bench["compression"]["wanda"]["status"] == "ok" and bench["compression"]["wanda"]["linear_sparsity"] == 0.5
    assert "gptq-w4" not in bench["compression"]
    assert "random" in bench["weights"] and "random token ids" in bench["calibration"]
    assert record["metrics"] == {} and record["params"]["variants"] == c.variants
    assert {t["target"] for t in bench["targets"]} and all(t["met"] is None for t in bench["targets"]
                                                           if "GPTQ" in t["target"] or "NF4" in t["target"])
    err = capsys.readouterr().err
    assert "[bench" in err and "bf16: FAILED RuntimeError" in err and "layers-50: batch 1" in err
    path = records.write_record(record, c.results_dir)
    assert records.load_records(tmp_path)[0]["benchmark"]["variants"][1]["status"] == "failed"
    assert records.summary_table(records.load_records(tmp_path)).empty  # no translation scores: no summary rows
    rows = benchmark.report_rows(record)
    assert [r["label"] for r in rows] == ["fp16", "bf16", "50% layers"] and path.is_file()


def test_a_spent_budget_skips_the_remaining_steps():
    c = cfg(variants=["fp16", "layers-75"], time_wanda=True)
    budget = benchmark.Budget(1)
    budget.start -= 5
    rows = benchmark.run_variants(c, {"bytes_per_s": 1e9}, budget)
    assert [r["status"] for r in rows] == ["skipped", "skipped"] and "time budget" in rows[0]["error"]
    assert benchmark.time_compression(c, rows, budget)["wanda"]["status"] == "skipped"


def test_wanda_layer_by_layer_prunes_each_row_by_weight_times_input_norm():
    from studylib.methods.wanda import wanda_scores
    from studylib.pruning import prune_mask

    model = benchmark.build_random("tiny-llama", "float32", "cpu")
    ids = bv.random_token_ids(512, 3, 8, seed=0)
    layer0 = model.model.layers[0]
    before = layer0.self_attn.q_proj.weight.detach().clone()
    with torch.no_grad():  # what layer 0's q_proj sees: the normed embeddings (no earlier layer to prune)
        x = layer0.input_layernorm(model.model.embed_tokens(ids)).reshape(-1, 128)
    expected = prune_mask(wanda_scores(before, x.pow(2).sum(0).sqrt()), 0.5)
    done = bv.wanda_layerwise(model, ids, sparsity=0.5, batch_size=2, progress=False)
    assert done == {"layers": 4, "calibration_tokens": 24}
    assert torch.equal(layer0.self_attn.q_proj.weight == 0, expected)
    for lin in bv.decoder_linears(model).values():
        assert bool(((lin.weight == 0).sum(1) == lin.in_features // 2).all())


def test_random_calibration_and_placeholder_tokenizer():
    ids = bv.random_token_ids(32000, 4, 16, seed=3)
    assert ids.shape == (4, 16) and int(ids.min()) >= 3 and int(ids.max()) < 32000
    assert torch.equal(ids, bv.random_token_ids(32000, 4, 16, seed=3))
    tok = bv.placeholder_tokenizer()
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)


def test_targets_compare_what_was_measured():
    bench = {"variants": [{"variant": "gptq-w4", "status": "ok", "decode_b1_ratio": 0.3},
                          {"variant": "bnb-nf4", "status": "failed", "decode_b1_ratio": None}],
             "compression": {"wanda": {"status": "ok", "seconds": 200.0}}}
    got = [t["met"] for t in benchmark.targets(bench)]
    assert got == [True, None, None, None, None, None, False]  # gptq-w4, nf4 (failed), ..., wanda (200 s > 120 s)


def test_semi_structured_weights_count_their_packed_values_and_metadata():
    from torch.sparse import SparseSemiStructuredTensorCUTLASS

    packed, meta = torch.zeros(64, 64, dtype=torch.float16), torch.zeros(64, 8, dtype=torch.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "prototype stage", said once per process
        w = SparseSemiStructuredTensorCUTLASS(torch.Size([64, 128]), packed, meta, None, None, None)
    assert w.numel() == 64 * 128 and benchmark._tensor_bytes(w) == 64 * 64 * 2 + 64 * 8 * 2


def test_no_semi_structured_kernel_is_an_error_naming_what_was_tried_and_leaves_the_weights_dense():
    model = benchmark.build_random("tiny-llama", "float16", "cpu")
    linears = bv.decoder_linears(model)
    with pytest.raises(RuntimeError, match="no semi-structured sparse kernel ran.*cusparselt.*cutlass"):
        bv.to_semi_structured(linears, "auto")
    assert all(type(lin.weight) is torch.nn.Parameter and lin.weight.layout == torch.strided
               for lin in linears.values())


def test_wanda_layer_by_layer_matches_the_study_wanda_method_on_the_same_tokens():
    """The benchmark's one-pass-per-layer Wanda gives the masks of studylib.methods.wanda (which re-runs the stack up
    to each layer), fed the same token ids through a stub tokenizer."""
    from studylib.methods import build

    ids = bv.random_token_ids(512, 4, 12, seed=1)

    class Ids:  # "text i" -> row i of ids, no padding
        def __call__(self, texts, **kwargs):
            rows = torch.stack([ids[int(t.split()[1])] for t in texts])
            return {"input_ids": rows, "attention_mask": torch.ones_like(rows)}

    ours = benchmark.build_random("tiny-llama", "float32", "cpu")
    study = benchmark.build_random("tiny-llama", "float32", "cpu")
    bv.wanda_layerwise(ours, ids, sparsity=0.5, batch_size=2, progress=False)
    build("wanda", sparsity=0.5, batch_size=2).apply(study, Ids(), [f"text {i}" for i in range(4)])
    a, b = bv.decoder_linears(ours), bv.decoder_linears(study)
    differ = sum(int(((a[k].weight == 0) != (b[k].weight == 0)).sum()) for k in a)
    total = sum(a[k].weight.numel() for k in a)
    # 0 on the CPU here; room for near-ties of float rounding (unrelated masks would differ in half the weights)
    assert differ <= total * 1e-3, (differ, total)


def test_gptq_compression_time_leaves_out_loading_the_inference_kernel():
    info = {"save_seconds": 20.0, "quantize_seconds": 300.0, "load_seconds": 90.0, "backend_requested": "marlin",
            "calibration": {"samples": 128, "tokens_per_sample": 2048}}
    t = benchmark._gptq_timing(420.0, info)
    assert t["seconds"] == 330.0 and t["route_seconds"] == 420.0 and t["quantize_seconds"] == 300.0
    assert "JIT" in t["what"] and t["calibration"]["samples"] == 128
