"""The 7B-architecture efficiency benchmark (notebook 40): its params and sweep, one format measured beside fp16 in a
run, failures recorded, compression timing riding with its format, and the record the reports read -- on the tiny
Llama on the CPU. The GPU kernels themselves (Marlin, cuSPARSELt, bitsandbytes CUDA) run only on the device."""

import json
from pathlib import Path

import pytest
import torch

from studylib.bench import arch, measure, run, schema
from studylib.bench import variants as bv
from studylib.bench.params import BenchmarkParams
from studylib.core import records
from studylib.runs.params import ParamsError, read_spec

REPO = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO / "params" / "40_efficiency_7b_llama2-7b.yaml"
OLD_RECORD = REPO / "results" / "runs" / "40_efficiency_7b" / "llama2-7b.json"
FAST = dict(warmup=0, repeats=3, prompt_tokens=4, new_tokens=16, large_batch=2, prefill_tokens=8, bandwidth_mib=1,
            wanda_calib_samples=2, wanda_calib_tokens=8)


def cfg(**kw):
    return BenchmarkParams(**{**FAST, **kw})


def measured_record(c):
    plan = run.plan(c)
    return run.make_record(c, plan, run.measure_models(c))


@pytest.fixture(scope="module")
def layers_record():
    """One run of layers-50 beside fp16 (shared by the tests that read its record)."""
    c = cfg(variant="layers-50")
    return c, measured_record(c)


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a model was built before the params were checked")

    monkeypatch.setattr(arch, "build_random", refuse)


# ----------------------------------------------------------------------------------------------- params


@pytest.mark.parametrize("key, value, message", [
    ("variant", "gptq-w3", "variant must be one of fp16, .* got 'gptq-w3'"),
    ("variant", ["fp16", "bf16"], r"variant must be one of .* got \['fp16', 'bf16'\]"),
    ("variants", ["fp16"], "'variants' is not a parameter of 40_efficiency_7b; did you mean 'variant'"),
    ("time_budget_s", 1500, "'time_budget_s' is not a parameter"),
    ("architecture", "llama-3-70b", "architecture must be one of"),
    ("repeats", 0, "repeats must be a positive integer"),
    ("new_tokens", 1, "new_tokens must be an integer >= 2"),
    ("warmup", -1, "warmup"),
    ("device", "gpu", "device must be"),
    ("gptq_backend", "magic", "gptq_backend"),
    ("gptq_group_size", 96, "gptq_group_size must be one of"),
    ("gptq_group_size", 512, "does not divide"),
    ("sparse_kernel", "cusparse", "sparse_kernel"),
    ("prefill_tokens", 4096, "exceed"),
    ("storage", "yes", "storage must be true or false"),
    ("graph_decode", 1, "graph_decode must be true or false"),
])
def test_bad_params_are_one_line_before_any_model_is_built(no_model, key, value, message):
    with pytest.raises(ParamsError, match=message) as err:
        BenchmarkParams.build({key: value}, "p.yaml")
    assert str(err.value).startswith("p.yaml: ") and "\n" not in str(err.value)


def test_an_unknown_variant_in_a_sweep_fails_with_the_file_and_the_value(no_model, tmp_path):
    path = tmp_path / "40_efficiency_7b_x.yaml"
    path.write_text("notebook: 40_efficiency_7b\nparameters: {run_name: x}\nsweep:\n  variant: [gptq-w4, gptq-w3]\n")
    with pytest.raises(ParamsError, match="got 'gptq-w3'") as err:
        read_spec(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_the_full_profile_sweeps_every_format_each_beside_its_own_fp16():
    spec = read_spec(PARAMS_FILE)
    assert "variant" not in spec.parameters and "variants" not in spec.parameters
    assert spec.run_name == "llama2-7b" and list(spec.sweep) == ["variant"]
    swept = spec.sweep["variant"]
    assert set(swept) == set(schema.VARIANTS) - {schema.REFERENCE, schema.VLLM_REFERENCE} and len(swept) == len(set(swept))
    for value in swept:
        c = BenchmarkParams.load(PARAMS_FILE, {"variant": value})
        assert (c.run_name, c.variant, c.profile) == (f"llama2-7b-{value}", value, "full")
        assert c.sweep == {"parent": "llama2-7b", "axes": {"variant": value}}
        assert (c.architecture, c.device, c.prefill_tokens, c.large_batch) == ("llama-2-7b", "cuda", 512, 16)
        assert (c.gptq_calib_samples, c.gptq_calib_tokens) == (128, 2048)
    assert spec.settings("smoke") == [{"variant": v} for v in BenchmarkParams.SMOKE_SWEEP["variant"]]
    smoke = BenchmarkParams.load(PARAMS_FILE, {"variant": "wanda-50"}, profile="smoke")
    assert (smoke.architecture, smoke.device, smoke.run_name) == ("tiny-llama", "cpu", "llama2-7b-wanda-50")
    assert BenchmarkParams.FAMILY == "efficiency" and BenchmarkParams.GPU == "exclusive"
    assert BenchmarkParams.NOTEBOOK == schema.NOTEBOOK and "SMOKE_SWEEP" not in BenchmarkParams.names()
    assert schema.ARCHITECTURES["llama-2-7b"]["intermediate_size"] == 11008


def test_a_cuda_run_on_a_cpu_machine_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        run.plan(cfg(device="cuda"))


def test_the_plan_names_fp16_and_the_format_and_the_compression_it_times():
    p = run.plan(cfg(variant="wanda-50"))
    assert list(p["models"]) == ["fp16", "wanda-50"] and p["compression"] == "wanda"
    assert p["graph_decode"] == "static-cache eager (cpu)" and p["graph_not_attempted"] == {}
    alone = run.plan(cfg(variant="fp16"))
    assert list(alone["models"]) == ["fp16"] and alone["compression"] is None
    assert run.plan(cfg(variant="gptq-w8"))["compression"] is None  # only W4's build is the timed GPTQ compression


# ----------------------------------------------------------------------------------------------- a run


def test_a_run_measures_one_format_beside_fp16_and_its_record_checks(layers_record, tmp_path):
    c, record = layers_record
    run.check_record(record, c)
    bench = record["benchmark"]
    by = {r["variant"]: r for r in bench["variants"]}
    assert list(by) == ["fp16", "layers-50"] and all(r["status"] == "ok" for r in by.values())
    assert by["fp16"]["decode_b1_ratio"] == 1 and by["layers-50"]["decode_b1_ratio"] > 0
    assert by["layers-50"]["layers"] == 2 < by["fp16"]["layers"] and by["layers-50"]["params"] < by["fp16"]["params"]
    assert by["fp16"]["kernel"].startswith("dense float16") and by["fp16"]["storage_bytes"] > 0
    assert bench["compression"] == {} and bench["bandwidth"]["bytes_per_s"] > 0 and bench["elapsed_seconds"] > 0
    assert "random" in bench["weights"] and "random token ids" in bench["calibration"]
    assert record["metrics"] == {} and record["params"]["variant"] == "layers-50" and "variants" not in record["params"]
    assert record["what"]["family"] == "efficiency" and record["what"]["variant"] == "layers-50"
    measured = [t for t in bench["targets"] if t["measured"] is not None]
    assert [t["target"] for t in measured] == ["fp16 batch-1 time per token, x its floor"]  # fp16 is in every run
    path = records.write_record(record, tmp_path)
    assert records.read_record(path)["benchmark"]["variants"][1]["variant"] == "layers-50"


def test_a_failing_kernel_is_recorded_unavailable_and_the_record_still_checks(monkeypatch, capsys):
    def broken(_cfg):
        raise RuntimeError("kernel missing on this device")

    monkeypatch.setitem(bv.BUILDERS, "bf16", broken)
    c = cfg(variant="bf16", storage=False, graph_decode=False)
    record = measured_record(c)
    run.check_record(record, c)
    fp16, bf16 = record["benchmark"]["variants"]
    assert fp16["status"] == "ok" and fp16["graph_mode"] == schema.GRAPH_OFF
    assert bf16["status"] == "failed" and bf16["kernel"] == schema.UNAVAILABLE
    assert "kernel missing on this device" in bf16["error"] and "Traceback" in bf16["traceback"]
    assert bf16["decode_b1_ratio"] is None and bf16["prefill_speedup"] is None
    rows = schema.report_rows(record)
    assert [(r["label"], r["status"]) for r in rows] == [("fp16", "ok"), ("bf16", "failed")]
    err = capsys.readouterr().err
    assert "[bench" in err and "bf16: FAILED RuntimeError" in err and "fp16: batch 1" in err


def test_fp16_alone_is_one_row():
    c = cfg(variant="fp16", storage=False, graph_decode=False)
    record = measured_record(c)
    run.check_record(record, c)
    assert [r["variant"] for r in record["benchmark"]["variants"]] == ["fp16"]


def test_wanda_50_is_measured_and_its_pruning_is_the_wanda_compression_time():
    c = cfg(variant="wanda-50", storage=False, graph_decode=False)
    record = measured_record(c)
    run.check_record(record, c)
    bench = record["benchmark"]
    wanda = bench["variants"][1]
    assert wanda["variant"] == "wanda-50" and wanda["status"] == "ok" and "unstructured zeros" in wanda["kernel"]
    assert wanda["info"]["linear_sparsity"] == 0.5 and wanda["weight_bytes"] == bench["variants"][0]["weight_bytes"]
    timed = bench["compression"]
    assert list(timed) == ["wanda"] and timed["wanda"]["status"] == "ok"
    assert timed["wanda"]["seconds"] == wanda["compress_seconds"] > 0
    assert timed["wanda"]["sparsity"] == 0.5 and timed["wanda"]["linear_sparsity"] == 0.5
    assert timed["wanda"]["calibration"]["samples"] == 2 and timed["wanda"]["calibration_tokens"] == 16
    goal = next(t for t in bench["targets"] if t["target"].startswith("Wanda"))
    assert goal["measured"] == timed["wanda"]["seconds"] and goal["met"] is True


def test_the_gptq_w4_build_is_the_gptq_compression_time_and_a_failed_one_says_why(monkeypatch):
    def stand_in(c):  # the dense model, with what the GPTQ route reports (GPTQModel's CPU build is not tested here)
        built = bv.BUILDERS["fp16"](c)
        info = {"load_seconds": 1.5, "quantize_seconds": 3.0, "calibration": {"samples": 4, "tokens_per_sample": 64}}
        return bv.Built(built.model, "TorchLinear x28 (stand-in)", info, compress_seconds=5.0)

    monkeypatch.setitem(bv.BUILDERS, "gptq-w4", stand_in)
    c = cfg(variant="gptq-w4", storage=False, graph_decode=False)
    record = measured_record(c)
    run.check_record(record, c)
    timed = record["benchmark"]["compression"]["gptq-w4"]
    assert (timed["status"], timed["seconds"], timed["route_seconds"]) == ("ok", 3.5, 5.0)

    def broken(_c):
        raise RuntimeError("GPTQModel refused")

    monkeypatch.setitem(bv.BUILDERS, "gptq-w4", broken)
    record = measured_record(c)
    run.check_record(record, c)
    timed = record["benchmark"]["compression"]["gptq-w4"]
    assert timed["status"] == "failed" and "GPTQModel refused" in timed["error"]
    goal = next(t for t in record["benchmark"]["targets"] if t["target"].startswith("GPTQ 4-bit"))
    assert goal["measured"] is None and goal["met"] is None


def test_gptq_compression_time_leaves_out_loading_the_inference_kernel():
    info = {"save_seconds": 20.0, "quantize_seconds": 300.0, "load_seconds": 90.0, "backend_requested": "marlin",
            "calibration": {"samples": 128, "tokens_per_sample": 2048}}
    t = run.gptq_timing(420.0, info)
    assert t["seconds"] == 330.0 and t["route_seconds"] == 420.0 and t["quantize_seconds"] == 300.0
    assert "JIT" in t["what"] and t["calibration"]["samples"] == 128


def test_the_record_check_refuses_a_record_that_is_not_what_was_asked(layers_record):
    c, record = layers_record
    other = json.loads(json.dumps(record))
    with pytest.raises(AssertionError):
        run.check_record(other, cfg(variant="bf16"))  # its rows are another format's
    other["benchmark"]["compression"] = {"wanda": {"status": "ok", "seconds": 1.0}}
    with pytest.raises(AssertionError):
        run.check_record(other, c)  # a compression time no build of this run gave
    other = json.loads(json.dumps(record))
    other["benchmark"]["variants"][1].update(status="failed", kernel="dense", error="x")
    with pytest.raises(AssertionError):
        run.check_record(other, c)  # a failure must name its kernel unavailable


def test_a_format_declared_not_capturable_is_not_captured_on_cuda_and_says_why(monkeypatch):
    """bnb-int8 (LLM.int8()) is declared not capturable: on CUDA its capture is not attempted; its row keeps the
    eager figures, has no graph figure and no graph_error, and says why in graph_mode. On the CPU (no capture)
    nothing is skipped. Here on the CPU: the decision is asked as on CUDA, and bnb-int8's build is a stand-in (the
    dense model), since bitsandbytes' CUDA kernels are not here."""
    why = schema.capture_skip("bnb-int8", "cuda")
    assert why == schema.NO_GRAPH_CAPTURE["bnb-int8"] and "LLM.int8()" in why
    assert schema.capture_skip("bnb-int8", torch.device("cuda", 0)) == why
    assert schema.capture_skip("bnb-int8", "cpu") is None  # uncaptured static steps: nothing to skip
    assert all(schema.capture_skip(v, "cuda") is None for v in schema.VARIANTS if v != "bnb-int8")

    def fake_int8(c):
        built = bv.BUILDERS["fp16"](c)
        built.model.fake_int8 = True
        return bv.Built(built.model, "Linear8bitLt (stand-in)", {"stand_in": True})

    decoded = []  # which models the static-cache decode ran on
    real_graph = measure.graph_figures
    monkeypatch.setattr(measure, "graph_figures",
                        lambda model, **kw: decoded.append(getattr(model, "fake_int8", False)) or real_graph(model, **kw))
    monkeypatch.setitem(bv.BUILDERS, "bnb-int8", fake_int8)
    monkeypatch.setattr(run, "capture_skip", lambda variant, device: schema.capture_skip(variant, "cuda"))
    c = cfg(variant="bnb-int8", storage=False)
    assert run.plan(c)["graph_not_attempted"] == {"bnb-int8": why}
    record = measured_record(c)
    run.check_record(record, c)
    assert decoded == [False]  # fp16; never the int8 model
    fp16, int8 = record["benchmark"]["variants"]
    assert int8["status"] == "ok" and int8["decode_b1_ms"] >= 0 and int8["prefill_ms"] > 0  # eager figures kept
    assert int8["graph_mode"].startswith("not attempted: ") and why in int8["graph_mode"]
    assert schema.graph_not_attempted(int8) and int8["graph_error"] is None and "graph" not in int8["host_load"]
    assert all(int8[k] is None for k in ("graph_b1_ms", "graph_large_ms", "graph_b1_ratio", "graph_large_ratio",
                                         "graph_floor_ratio"))
    assert fp16["graph_mode"] == "static-cache eager (cpu)" and fp16["graph_b1_ms"] is not None

    int8["variant"] = "bf16"  # a not-attempted mode is refused where the format is not declared
    with pytest.raises(AssertionError):
        run.check_record(record, cfg(variant="bf16", storage=False))


# ----------------------------------------------------------------------------------------------- what the reports read


def test_the_old_all_formats_record_and_a_new_one_are_read_by_the_same_functions(layers_record):
    old = json.loads(OLD_RECORD.read_text())
    new = layers_record[1]
    old_rows, new_rows = schema.report_rows(old), schema.report_rows(new)
    assert [r["label"] for r in old_rows] == ["fp16", "bf16", "75% layers", "50% layers", "2:4 sparse", "NF4 (bnb)",
                                              "GPTQ W4", "GPTQ W8", "INT8 (bnb)"]
    assert [r["label"] for r in new_rows] == ["fp16", "50% layers"]
    assert set(old_rows[0]) == set(new_rows[0])  # the same fields, row for row
    assert schema.has_graph(old["benchmark"]["variants"]) and schema.has_graph(new["benchmark"]["variants"])
    for key in set(old["benchmark"]) | {"targets"}:  # the record's layout is kept
        assert key in new["benchmark"], key
    ignored = {"graph_rng"}  # the old record's CUDA RNG check after failed captures, read by nothing
    assert set(old["benchmark"]["variants"][0]) - ignored <= set(new["benchmark"]["variants"][0])
    assert schema.targets(old["benchmark"]) == old["benchmark"]["targets"]  # its targets as the record states them
    assert schema.graph_not_attempted(old["benchmark"]["variants"][-1])  # bnb-int8 there
    assert schema.describe_architecture("llama-2-7b").startswith("the llama-2-7b architecture (Llama-2-7B's")
    assert schema.runs_text(1) == "1 run" and schema.runs_text(2) == "2 runs"


def test_report_rows_keep_a_record_without_graph_fields_as_it_is():
    rows = [{"variant": "fp16", "status": "ok", "decode_b1_ms": 7.0, "peak_memory_bytes": 14e9},
            {"variant": "gptq-w4", "status": "ok", "decode_b1_ms": 2.5, "peak_memory_bytes": 4.5e9}]
    fp16, w4 = schema.report_rows({"benchmark": {"variants": schema.ratios(rows)}})
    assert fp16["peak_memory_bytes"] == 14e9 and w4["memory_ratio"] == 4.5e9 / 14e9
    assert w4["decode_b1_ratio"] == 2.5 / 7.0 and w4["label"] == "GPTQ W4"
    assert not any(k.startswith("graph") for k in w4)  # no graph fields in the record: none invented


def test_ratios_are_to_the_reference_and_none_where_nothing_ran():
    rows = [
        {"variant": "fp16", "status": "ok", "decode_b1_ms": 10.0, "decode_large_ms": 20.0, "prefill_ms": 40.0,
         "peak_memory_bytes": 100, "storage_bytes": 50, "floor_ms": 8.0},
        {"variant": "gptq-w4", "status": "ok", "decode_b1_ms": 3.0, "decode_large_ms": 10.0, "prefill_ms": 50.0,
         "peak_memory_bytes": 40, "storage_bytes": 15, "floor_ms": 2.5},
        {"variant": "sparse-2of4", "status": "failed", "kernel": "unavailable", "error": "no kernel"},
    ]
    out = {r["variant"]: r for r in schema.ratios(rows)}
    assert out["fp16"]["decode_b1_ratio"] == 1 and out["fp16"]["floor_ratio"] == pytest.approx(1.25)
    g = out["gptq-w4"]
    assert g["decode_b1_ratio"] == pytest.approx(0.3) and g["decode_large_ratio"] == pytest.approx(0.5)
    assert g["prefill_speedup"] == pytest.approx(0.8) and g["prefill_ratio"] == pytest.approx(1.25)
    assert g["memory_ratio"] == pytest.approx(0.4) and g["storage_ratio"] == pytest.approx(0.3)
    assert g["floor_ratio"] == pytest.approx(1.2)
    assert all(out["sparse-2of4"][k] is None for k in ("decode_b1_ratio", "prefill_speedup", "floor_ratio"))
    no_ref = schema.ratios([r for r in rows if r["variant"] != "fp16"])
    assert no_ref[0]["decode_b1_ratio"] is None and no_ref[0]["floor_ratio"] == pytest.approx(1.2)
    assert "decode_b1_ratio" not in rows[0]  # the rows given are left as they were


def test_targets_compare_what_was_measured():
    bench = {"variants": [{"variant": "gptq-w4", "status": "ok", "decode_b1_ratio": 0.3},
                          {"variant": "bnb-nf4", "status": "failed", "decode_b1_ratio": None}],
             "compression": {"wanda": {"status": "ok", "seconds": 200.0}}}
    got = [t["met"] for t in schema.targets(bench)]
    assert got == [True, None, None, None, None, None, False]  # gptq-w4, nf4 (failed), ..., wanda (200 s > 120 s)


def test_targets_use_the_graph_figure_where_a_row_has_one():
    bench = {"variants": [
        {"variant": "fp16", "status": "ok", "floor_ratio": 5.7, "graph_floor_ratio": 1.2, "graph_mode": "cuda-graph"},
        {"variant": "gptq-w4", "status": "ok", "decode_b1_ratio": 1.34, "graph_b1_ratio": 0.3,
         "graph_mode": "cuda-graph"},
        {"variant": "bnb-nf4", "status": "ok", "decode_b1_ratio": 0.5, "graph_b1_ratio": None,
         "graph_mode": "failed: batch 1: RuntimeError: no capture"},
        {"variant": "bnb-int8", "status": "failed", "graph_b1_ratio": 0.1}],
        "compression": {}}
    got = {key: t for (key, *_), t in zip(schema.TARGETS, schema.targets(bench))}
    w4 = got["gptq-w4"]
    assert (w4["measured"], w4["met"], w4["eager"]) == (0.3, True, 1.34)
    assert w4["figure"] == "static-cache decode (cuda-graph)"
    nf4 = got["bnb-nf4"]  # no graph figure: the eager one, said
    assert (nf4["measured"], nf4["met"], nf4["figure"]) == (0.5, True, schema.EAGER_FIGURE) and "eager" not in nf4
    assert got["bnb-int8"]["measured"] is None and got["bnb-int8"]["met"] is None  # a failed format: nothing measured
    fp16 = got["fp16"]
    assert (fp16["measured"], fp16["met"], fp16["eager"]) == (1.2, True, 5.7)
    assert got["sparse-2of4"]["figure"] == "prefill" and got["sparse-2of4"]["met"] is None


def test_the_schema_module_loads_no_model_library():
    import subprocess
    import sys

    code = ("import sys; import studylib.bench.schema, studylib.bench.params; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
