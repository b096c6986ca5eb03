"""One run of the 7B-architecture efficiency benchmark: the reference (fp16) and one format, in one process.

Speed and memory depend on shapes and kernels, not on the weights' values, so the architecture (Llama-2-7B =
ALMA-7B's) is built from its config with random weights -- no download. A run measures fp16 and the format named by
``variant`` (:func:`studylib.bench.schema.models`), each built (:mod:`studylib.bench.variants`), measured
(:func:`studylib.bench.measure.measure`) and freed in turn: batch-1 decode time per token, decode at a larger batch,
prefill, peak memory, the storage of the saved model, and the same decode through a static KV cache replayed as a
CUDA graph (:mod:`studylib.bench.graph`). Every time is the median of repeated timed runs after warm-up; the record
gives ratios to the fp16 of the same process and each format's batch-1 time against its physical floor (the bytes a
decoding step must read / the device copy bandwidth measured first in the same run). A format whose build is a
compression (:data:`studylib.bench.schema.COMPRESSION`: GPTQ 4-bit, Wanda) has its synchronized wall time recorded
under ``compression``. The notebook runs::

    cfg = BenchmarkParams.load(params_file, setting, profile=profile, results_dir=results_dir)
    plan = run.plan(cfg)                       # device checked, nothing built yet
    measured = run.measure_models(cfg)         # bandwidth; fp16, then the format: built, measured, freed
    record = run.make_record(cfg, plan, measured)
    run.check_record(record, cfg)
    records.write_record(record, cfg.results_dir)

A format that fails (a kernel that is missing or refuses the device, a compile error) is recorded with its error and
kernel ``unavailable``; the record is still made.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from studylib.bench.schema import (ARCHITECTURES, COMPRESSION, GRAPH_OFF, NOTEBOOK, RANDOM_CALIBRATION,
                                   RANDOM_WEIGHTS, REFERENCE, UNAVAILABLE, VARIANTS, VLLM_VARIANTS, capture_skip,
                                   failed_row, graph_not_attempted, models, ratios, reference_of, static_mode,
                                   targets)

GRAPH_DECODE = ("(prefill + new_tokens steps - (prefill + 1 step)) / (new_tokens - 1), greedy, EOS ignored, "
                "synchronized wall clock, through a transformers StaticCache; on CUDA each step (forward, argmax, "
                "next input written in place) captured once as a CUDA graph and replayed, elsewhere the same step "
                "uncaptured; each variant's graph_mode says which, or why it failed (its eager figures stand); a format "
                "declared not capturable (studylib.bench.schema.NO_GRAPH_CAPTURE) is not captured on CUDA: its "
                "graph_mode says 'not attempted' and why")
BANDWIDTH_REPEATS = 10


def check_device(device: str) -> str:
    """The device's name, or a clear error before anything is built when it is not there."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device; "
                               "the smoke profile runs on 'cpu'")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s)")
        return torch.cuda.get_device_name(index)
    return "cpu"


def plan(cfg) -> dict:
    """What will run, checked before anything is built: the device, the architecture, the two formats and what they
    are, the compression timed, the graph decode's mode and the formats whose capture is not attempted."""
    names = models(cfg.variant)
    return {"device": cfg.device, "device_name": check_device(cfg.device), "architecture": cfg.architecture,
            "config": ARCHITECTURES[cfg.architecture], "variant": cfg.variant,
            "models": {v: VARIANTS[v] for v in names}, "compression": COMPRESSION.get(cfg.variant),
            "graph_decode": static_mode(cfg.device) if cfg.graph_decode else GRAPH_OFF,
            "graph_not_attempted": {v: why for v in names if cfg.graph_decode and (why := capture_skip(v, cfg.device))}}


def say(start: float, text: str) -> None:
    """One progress line on stderr, flushed: papermill passes a kernel's stderr through as it happens, so the
    workflow's log shows it live (its stdout goes only into the executed notebook)."""
    print(f"[bench {time.perf_counter() - start:6.0f} s] {text}", file=sys.stderr, flush=True)


def measure_bandwidth(cfg) -> dict:
    from studylib.bench.timing import copy_bandwidth

    n_bytes = cfg.bandwidth_mib * 2**20
    bps = copy_bandwidth(cfg.device, n_bytes=n_bytes, repeats=BANDWIDTH_REPEATS)
    return {"bytes_per_s": bps, "gb_per_s": bps / 1e9, "n_bytes": n_bytes, "repeats": BANDWIDTH_REPEATS,
            "method": "device-to-device copy of one buffer into another; (bytes read + bytes written) / median time"}


def _ms(value) -> str:
    return "not measured" if value is None else f"{value:.3f} ms/token"


def measure_model(name: str, cfg, bandwidth: dict, start: float) -> dict:
    """Build one format, measure it and free it: its row (status ok), or its error (status failed, kernel
    unavailable) when the build or a timing raises."""
    from studylib.bench.arch import free
    from studylib.bench.measure import measure
    from studylib.bench.variants import build_variant

    say(start, f"{name}: building ({VARIANTS[name]})")
    built = None
    try:
        t0 = time.perf_counter()
        built = build_variant(name, cfg)
        build_s = time.perf_counter() - t0
        free()
        say(start, f"{name}: built in {build_s:.1f} s ({built.kernel}); measuring")
        t0 = time.perf_counter()
        m = measure(name, built.model, kernel=built.kernel, bandwidth=bandwidth.get("bytes_per_s"),
                    new_tokens=cfg.new_tokens, repeats=cfg.repeats, warmup=cfg.warmup, prompt_tokens=cfg.prompt_tokens,
                    large_batch=cfg.large_batch, prefill_tokens=cfg.prefill_tokens, storage=cfg.storage,
                    storage_bytes=built.storage_bytes, storage_note=built.storage_note, graph_decode=cfg.graph_decode,
                    graph_skip=capture_skip(name, cfg.device) if cfg.graph_decode else None)
        row = {**m.as_dict(), "status": "ok", "error": None, "build_seconds": build_s,
               "measure_seconds": time.perf_counter() - t0, "compress_seconds": built.compress_seconds,
               "info": built.info}
        floor = f", {m.decode_b1_ms / m.floor_ms:.2f}x its floor" if m.floor_ms else ""
        say(start, f"{name}: batch 1 {m.decode_b1_ms:.3f} ms/token{floor}; batch {m.large_batch} "
                   f"{m.decode_large_ms:.3f} ms/token; prefill {m.prefill_ms:.2f} ms")
        if cfg.graph_decode:
            say(start, f"{name}: static cache ({m.graph_mode[:300]}): batch 1 {_ms(m.graph_b1_ms)}"
                       + (f", {m.graph_floor_ratio:.2f}x its floor" if m.graph_floor_ratio else "")
                       + f"; batch {m.large_batch} {_ms(m.graph_large_ms)}"
                       + (f" ({m.graph_error[:300]})" if m.graph_error and m.graph_mode[:6] != "failed" else ""))
    except Exception as err:  # noqa: BLE001 -- a format that fails is a result, recorded
        row = failed_row(name, err)
        say(start, f"{name}: FAILED {row['error'][:300]}")
    built = None
    free()
    return row


def gptq_timing(route_seconds: float, info: dict) -> dict:
    """GPTQ's compression time: the route of ``studylib.methods.gptq`` up to the written GPTQ checkpoint (save the
    fp16 checkpoint, GPTQModel load + quantize, save), without loading it back for inference -- that load JIT-compiles
    the inference kernel the first time, which is not compression (``load_seconds``, inside ``route_seconds``)."""
    keys = ("save_seconds", "quantize_seconds", "load_seconds", "calibration", "modules", "mean_loss",
            "fallback_modules", "library", "backend_requested", "backend_fallback", "backends_tried")
    return {"status": "ok", "seconds": route_seconds - (info.get("load_seconds") or 0.0),
            "route_seconds": route_seconds, **{k: info.get(k) for k in keys if k in info},
            "what": "save the fp16 checkpoint + GPTQModel load and quantize (quantize_seconds) + save the GPTQ "
                    "checkpoint; route_seconds adds loading it with the inference kernel (load_seconds, which "
                    "includes the kernel's JIT build the first time)"}


def wanda_timing(seconds: float, info: dict) -> dict:
    """Wanda's compression time: the layer-by-layer pruning alone, with the sparsity it left and its calibration."""
    return {"status": "ok", "seconds": seconds, **info}


TIMINGS = {"gptq-w4": gptq_timing, "wanda": wanda_timing}


def compression(rows: list[dict]) -> dict:
    """The compression wall times the measured formats' builds give (:data:`studylib.bench.schema.COMPRESSION`):
    the timing of a build that ran, or the build's status and error."""
    out = {}
    for row in rows:
        key = COMPRESSION.get(row["variant"])
        if key is None:
            continue
        if row["status"] == "ok":
            out[key] = TIMINGS[key](row["compress_seconds"], row["info"])
        else:
            out[key] = {"status": row["status"], "error": row.get("error")}
    return out


@dataclass
class Measured:
    """What a run measured: the bandwidth, the rows (with their ratios), the compression times, its wall time."""

    bandwidth: dict
    rows: list
    compression: dict
    seconds: float


def measure_models(cfg) -> Measured:
    """The device bandwidth, then each of :func:`studylib.bench.schema.models` built, measured and freed in turn."""
    start = time.perf_counter()
    bandwidth = measure_bandwidth(cfg)
    say(start, f"bandwidth {bandwidth['gb_per_s']:.1f} GB/s")
    rows = []
    for name in models(cfg.variant):
        if name in VLLM_VARIANTS:
            from studylib.bench.served import measure_served

            rows.append(measure_served(name, cfg, bandwidth, start, say))
        else:
            rows.append(measure_model(name, cfg, bandwidth, start))
    rows = ratios(rows, reference_of(cfg.variant))
    timed = compression(rows)
    for key, value in timed.items():
        if value["status"] == "ok":
            say(start, f"{key} compression: {value['seconds']:.1f} s")
    return Measured(bandwidth, rows, timed, time.perf_counter() - start)


def make_record(cfg, plan_: dict, measured: Measured) -> dict:
    from studylib.core import records

    bench = {
        "architecture": cfg.architecture,
        "config": ARCHITECTURES[cfg.architecture],
        "weights": RANDOM_WEIGHTS,
        "device": plan_.get("device_name") or cfg.device,
        "reference": reference_of(cfg.variant),
        "engine": "vllm" if cfg.variant in VLLM_VARIANTS else "hf",
        "bandwidth": measured.bandwidth,
        "timing": {"warmup": cfg.warmup, "repeats": cfg.repeats, "statistic": "median of the timed runs",
                   "prompt_tokens": cfg.prompt_tokens, "new_tokens": cfg.new_tokens, "large_batch": cfg.large_batch,
                   "prefill_tokens": cfg.prefill_tokens,
                   "decode": "(time to generate new_tokens - time to generate 1) / (new_tokens - 1), greedy, EOS "
                             "ignored; synchronized wall clock",
                   "floor": "floor_bytes (all weights but the input embedding table, which a step reads one row of) "
                            "/ bandwidth",
                   "graph_decode": GRAPH_DECODE if cfg.graph_decode else GRAPH_OFF,
                   "host_load": "per variant (host_load): the CPU count and the 1/5/15-minute load averages before "
                                "and after the eager and the graph timings"},
        "calibration": RANDOM_CALIBRATION,
        "variants": measured.rows,
        "compression": measured.compression,
        "elapsed_seconds": measured.seconds,
    }
    bench["targets"] = targets(bench)
    return records.make_record(notebook=NOTEBOOK, run=cfg.run_name, params=cfg.as_dict(), profile=cfg.profile,
                               metrics={}, extra={"benchmark": bench}, **cfg.identity())


def _check_graph(name: str, r: dict, cfg) -> None:
    mode = r["graph_mode"]
    if not cfg.graph_decode:
        assert mode == GRAPH_OFF and r["graph_b1_ms"] is None, (name, mode)
        return
    if graph_not_attempted(r):  # declared not capturable: nothing timed, nothing failed
        assert capture_skip(name, cfg.device), (name, mode)
        assert r["graph_b1_ms"] is None and r["graph_large_ms"] is None and not r["graph_error"], (name, r)
        return
    assert mode == static_mode(cfg.device) or mode.startswith("failed: "), (name, mode)
    for key in ("graph_b1_ms", "graph_large_ms"):  # a figure, or the reason there is none
        assert (r[key] is not None and r[key] > 0) or r["graph_error"], (name, key, r[key])
    measured = r["graph_b1_ms"] is not None or r["graph_large_ms"] is not None
    assert measured != mode.startswith("failed: "), (name, mode)  # failed: neither batch measured


def _check_build(name: str, r: dict) -> None:
    """What a format's build promised, where its row's ``info`` shows it."""
    info = r.get("info") or {}
    if "layers_after" in info:  # layers removed: really fewer layers and parameters
        assert r["layers"] == info["layers_after"] < info["layers_before"], (name, r["layers"], info)
        assert r["params"] == info["params_after"] < info["params_before"], (name, r["params"], info)
    if "pattern_holds" in info:  # 2:4: two of every four weights zero in every decoder linear
        assert info["pattern_holds"], name
    if "linear_sparsity" in info:  # Wanda: the sparsity asked for, in the decoder linears
        assert abs(info["linear_sparsity"] - info["sparsity"]) < 0.01, (name, info)


def check_record(record: dict, cfg) -> None:
    """What every benchmark record must hold; raises AssertionError naming what is wrong."""
    bench = record["benchmark"]
    rows = {r["variant"]: r for r in bench["variants"]}
    assert list(rows) == models(cfg.variant), (list(rows), cfg.variant)  # fp16 and the format, each a row
    assert bench["bandwidth"] and bench["bandwidth"]["bytes_per_s"] > 0
    for name, r in rows.items():
        assert r["status"] in ("ok", "failed"), (name, r["status"])
        if r["status"] == "ok":
            assert r["kernel"] and r["kernel"] != UNAVAILABLE, name
            for key in ("decode_b1_ms", "decode_large_ms", "prefill_ms", "weight_bytes", "floor_ms", "params"):
                assert r[key] and r[key] > 0, (name, key, r[key])
            assert r["host_load"]["cpus"] and "before" in r["host_load"]["eager"], name
            if name in VLLM_VARIANTS:  # vLLM captures its own graphs: no static-cache figures of ours
                assert r["graph_b1_ms"] is None and r["info"]["engine"]["engine"] == "vllm", name
            else:
                _check_graph(name, r, cfg)
            _check_build(name, r)
        else:
            assert r["error"] and r["kernel"] == UNAVAILABLE, name  # why it did not run, said
    ref = rows[reference_of(cfg.variant)]
    if ref["status"] == "ok":
        assert abs(ref["decode_b1_ratio"] - 1) < 1e-9 and abs(ref["prefill_speedup"] - 1) < 1e-9
        assert ref.get("graph_b1_ms") is None or abs(ref["graph_b1_ratio"] - 1) < 1e-9
    timed = COMPRESSION.get(cfg.variant)
    assert set(bench["compression"]) == ({timed} if timed else set()), (cfg.variant, list(bench["compression"]))
    for key, entry in bench["compression"].items():
        assert entry["status"] in ("ok", "failed"), key
        assert entry["status"] != "ok" or entry["seconds"] > 0, key
        assert entry["status"] == "ok" or entry["error"], key
