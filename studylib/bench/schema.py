"""What a benchmark record holds and how it is read: names, the formats, ratios, targets, the rows the reports use.

Plain Python, no torch: the report side imports this module to read records (``report_rows``, ``targets``,
``has_graph``, ``graph_not_attempted``, ``describe_architecture``, ``runs_text``) without loading a model library.
A record measures the reference (fp16) and one format in one process (:func:`models`); a record that measured every
format in one process has the same rows and is read by the same functions.
"""

from __future__ import annotations

NOTEBOOK = "40_efficiency_7b"
REFERENCE = "fp16"
UNAVAILABLE = "unavailable"
RANDOM_WEIGHTS = ("random weights (normal, std 0.02, fixed seed), no checkpoint downloaded: speed, memory and storage "
                  "depend on the shapes and the kernels, not on the weights' values (quality is not measured here)")
RANDOM_CALIBRATION = ("random token ids, uniform over the vocabulary (special ids 0-2 left out), fixed seed: the "
                      "benchmark has no tokenizer or texts; the compression time depends on the number of "
                      "calibration tokens, not on what they say")

# Architecture facts of the public configs (not measurements).
ARCHITECTURES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5),
    # the CPU smoke profile: same family, tiny
    "tiny-llama": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=512, max_position_embeddings=1024, rms_norm_eps=1e-5),
}
ABOUT = {"llama-2-7b": "Llama-2-7B's, which ALMA-7B shares", "tiny-llama": "a tiny Llama for the smoke profile"}

VARIANTS = {
    "fp16": "dense float16: the reference of every ratio",
    "bf16": "dense bfloat16",
    "bnb-int8": "bitsandbytes LLM.int8() (studylib.methods.bnb, threshold 6.0)",
    "bnb-nf4": "bitsandbytes NF4, double quantization, float16 compute (studylib.methods.bnb)",
    "gptq-w4": "GPTQ 4-bit through GPTQModel (studylib.methods.gptq), random-token calibration, kernel gptq_backend",
    "gptq-w8": "GPTQ 8-bit through GPTQModel, a smaller random-token calibration, kernel gptq_backend",
    "sparse-2of4": "2:4 magnitude pruning of every decoder linear, torch semi-structured sparse kernels on CUDA",
    "layers-75": "the middle quarter of the decoder layers removed (75% kept)",
    "layers-50": "the middle half of the decoder layers removed (50% kept)",
    "wanda-50": "Wanda 50% unstructured pruning on random-token calibration, dense kernels (zeros kept in place)",
}
HF_VARIANTS = dict(VARIANTS)  # built and measured through transformers (studylib.bench.variants)
# served by vLLM (studylib.bench.served): its kernels on the same architecture, one engine per format, beside vLLM's
# own fp16 in the same process
VLLM_REFERENCE = "vllm-fp16"
VLLM_VARIANTS = {
    "vllm-fp16": "dense float16 served by vLLM: the reference of the vLLM formats",
    "vllm-fp8": "FP8 W8A8 made by vLLM as it loads (quantization 'fp8': per-tensor weight scales, dynamic "
                "activation scales), CUTLASS FP8 kernels",
    "vllm-gptq-w4": "GPTQ 4-bit, group 128 (checkpoint format gptq), vLLM's gptq_marlin",
    "vllm-gptq-w8": "GPTQ 8-bit, group 128, vLLM's gptq_marlin",
    "vllm-awq-w4": "AWQ 4-bit, group 128, zero points, vLLM's awq_marlin",
    "vllm-int8-w8a8": "INT8 W8A8 in compressed-tensors form (int8 weights per channel, dynamic per-token int8 "
                      "activations), vLLM's CUTLASS INT8 kernels",
    "vllm-nf4": "bitsandbytes NF4 quantized by vLLM as it loads a float16 checkpoint (random weights, written first)",
    "vllm-2of4": "2:4 sparse weights: not served by vLLM 0.26.0 (see studylib.bench.served.NOT_SERVED)",
    "vllm-layers-75": "the middle quarter of the decoder layers removed (a config with 24 of 32), served dense",
}
VARIANTS.update(VLLM_VARIANTS)
LAYER_KEEP = {"layers-75": 0.75, "layers-50": 0.5, "vllm-layers-75": 0.75}
LABELS = {"fp16": "fp16", "bf16": "bf16", "bnb-int8": "INT8 (bnb)", "bnb-nf4": "NF4 (bnb)", "gptq-w4": "GPTQ W4",
          "gptq-w8": "GPTQ W8", "sparse-2of4": "2:4 sparse", "layers-75": "75% layers", "layers-50": "50% layers",
          "wanda-50": "Wanda 50%",
          "vllm-fp16": "fp16 (vLLM)", "vllm-fp8": "FP8 (vLLM)", "vllm-gptq-w4": "GPTQ W4 (vLLM)",
          "vllm-gptq-w8": "GPTQ W8 (vLLM)", "vllm-awq-w4": "AWQ W4 (vLLM)", "vllm-int8-w8a8": "INT8 W8A8 (vLLM)",
          "vllm-nf4": "NF4 (vLLM)", "vllm-2of4": "2:4 sparse (vLLM)", "vllm-layers-75": "75% layers (vLLM)"}
SPARSE_KERNELS = ("auto", "cusparselt", "cutlass")
# the formats whose build is a timed compression, and the key of its time in the record's ``compression``
COMPRESSION = {"gptq-w4": "gptq-w4", "wanda-50": "wanda"}

# Formats whose decoding step is known not to be capturable as a CUDA graph: on CUDA their static-cache decode is not
# attempted (:func:`capture_skip`), the row's graph figures are None, its graph_mode says "not attempted: <why>" and
# its eager figures stand.
NO_GRAPH_CAPTURE = {  # the reason first: reports show the start of "not attempted: <reason>"
    "bnb-int8": ("LLM.int8() cannot be captured as a CUDA graph: its capture fails (H200, torch 2.11.0+cu130, "
                 "bitsandbytes 0.50.2: 'AcceleratorError: CUDA error: operation failed due to a previous error "
                 "during capture'), and a failed capture can leave the process's CUDA state unusable"),
}

GRAPH_MODE_CUDA = "cuda-graph"
GRAPH_OFF = "off (graph_decode false)"
GRAPH_NOT_ATTEMPTED = "not attempted"  # graph_mode's start for a format declared not capturable (no graph_error)
GRAPH_KEYS = ("graph_b1_ms", "graph_b1_ratio", "graph_floor_ratio", "graph_large_ms", "graph_large_ratio",
              "graph_mode", "graph_error", "graph_check", "host_load")

# The goals for the H200 run (targets to report against, not results; never asserted).
TARGETS = (
    ("gptq-w4", "decode_b1_ratio", "<=", 0.35, "GPTQ W4 batch-1 time per token, x fp16"),
    ("bnb-nf4", "decode_b1_ratio", "<=", 0.6, "NF4 batch-1 time per token, x fp16"),
    ("bnb-int8", "decode_b1_ratio", "<=", 0.8, "INT8 batch-1 time per token, x fp16"),
    ("fp16", "floor_ratio", "<=", 1.3, "fp16 batch-1 time per token, x its floor"),
    ("sparse-2of4", "prefill_speedup", ">=", 1.3, "2:4 prefill speed-up over fp16"),
    ("compression:gptq-w4", "seconds", "<=", 600, "GPTQ 4-bit compression of the model, seconds"),
    ("compression:wanda", "seconds", "<=", 120, "Wanda compression of the model, seconds"),
)
# the decode targets' fields and the graph figures that replace them where a row has them
GRAPH_FIELDS = {"decode_b1_ratio": "graph_b1_ratio", "floor_ratio": "graph_floor_ratio"}
EAGER_FIGURE = "eager decode (model.generate)"
REPORT_KEYS = ("decode_b1_ms", "decode_b1_ratio", "floor_ms", "floor_ratio", "decode_large_ms", "decode_large_ratio",
               "large_batch", "prefill_ms", "prefill_ratio", "prefill_speedup", "prefill_tokens", "peak_memory_bytes",
               "memory_ratio", "storage_bytes", "storage_ratio", "storage_note", "weight_bytes", "floor_bytes",
               "params", "layers")


def failed_row(name: str, err: BaseException) -> dict:
    """The row of a format that could not be built or measured: its error, kernel ``unavailable``."""
    import traceback

    return {"variant": name, "status": "failed", "kernel": UNAVAILABLE, "error": f"{type(err).__name__}: "
            f"{str(err)[:600]}", "traceback": "".join(traceback.format_exception(err))[-3000:]}


def reference_of(variant: str) -> str:
    """The format a run's ratios are taken against: fp16 through the same engine."""
    return VLLM_REFERENCE if variant in VLLM_VARIANTS else REFERENCE


def models(variant: str) -> list[str]:
    """The formats one run measures, in order: the reference, then ``variant`` (the reference alone for itself)."""
    ref = reference_of(variant)
    return [ref] if variant == ref else [ref, variant]


def describe_architecture(name: str) -> str:
    """'the llama-2-7b architecture (Llama-2-7B's, which ALMA-7B shares)' -- for captions and tables."""
    return f"the {name} architecture" + (f" ({ABOUT[name]})" if name in ABOUT else "")


def runs_text(n) -> str:
    return f"{n} run{'' if n == 1 else 's'}"


def static_mode(device) -> str:
    """The label of a static-cache decode on ``device``: captured on CUDA, plain steps elsewhere."""
    kind = getattr(device, "type", str(device).split(":")[0])
    return GRAPH_MODE_CUDA if kind == "cuda" else f"static-cache eager ({kind})"


def capture_skip(variant: str, device) -> str | None:
    """Why ``variant``'s decoding step is not captured on ``device`` (:data:`NO_GRAPH_CAPTURE`), or None. Only
    where a capture would happen (CUDA): elsewhere the static-cache step runs uncaptured for every format."""
    if static_mode(device) != GRAPH_MODE_CUDA:
        return None
    return NO_GRAPH_CAPTURE.get(variant)


def not_attempted_mode(why: str) -> str:
    """The graph_mode of a format whose capture is not attempted (its graph figures None, its graph_error None)."""
    return (f"{GRAPH_NOT_ATTEMPTED}: {why} [declared in studylib.bench.schema.NO_GRAPH_CAPTURE: no capture "
            "tried, the eager figures stand]")


def graph_not_attempted(row: dict) -> bool:
    """Whether a row's graph decode was not attempted (a format declared not capturable): no figure, no failure."""
    return str(row.get("graph_mode") or "").startswith(GRAPH_NOT_ATTEMPTED)


def has_graph(rows) -> bool:
    """Whether a record's rows carry the graph decode fields (records made before they existed do not)."""
    return any("graph_mode" in r for r in rows or [])


def _ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and b else None


def ratios(rows: list[dict], reference: str = REFERENCE) -> list[dict]:
    """Each row (a copy) with its ratios to the reference format measured in the same record. Times: the ratio of
    the times (below 1 is faster); prefill also as a speed-up (above 1 is faster). Rows that did not run, or a
    missing reference, give None. The graph decode figures are compared with the reference's graph figures
    (``graph_b1_ratio``, ``graph_large_ratio``) and the batch-1 one with the row's floor (``graph_floor_ratio``);
    None where either side has none."""
    rows = [dict(r) for r in rows]
    ok = lambda r: r.get("status", "ok") == "ok"  # noqa: E731
    ref = next((r for r in rows if r["variant"] == reference and ok(r)), None)
    for row in rows:
        measured = ok(row) and ref is not None
        pick = (lambda key: row.get(key) if measured else None)
        base = (lambda key: ref.get(key) if measured else None)
        row["decode_b1_ratio"] = _ratio(pick("decode_b1_ms"), base("decode_b1_ms"))
        row["decode_large_ratio"] = _ratio(pick("decode_large_ms"), base("decode_large_ms"))
        row["prefill_ratio"] = _ratio(pick("prefill_ms"), base("prefill_ms"))
        row["prefill_speedup"] = _ratio(base("prefill_ms"), pick("prefill_ms"))
        row["memory_ratio"] = _ratio(pick("peak_memory_bytes"), base("peak_memory_bytes"))
        row["storage_ratio"] = _ratio(pick("storage_bytes"), base("storage_bytes"))
        row["floor_ratio"] = _ratio(row.get("decode_b1_ms"), row.get("floor_ms")) if ok(row) else None
        row["graph_b1_ratio"] = _ratio(pick("graph_b1_ms"), base("graph_b1_ms"))
        row["graph_large_ratio"] = _ratio(pick("graph_large_ms"), base("graph_large_ms"))
        row["graph_floor_ratio"] = _ratio(row.get("graph_b1_ms"), row.get("floor_ms")) if ok(row) else None
    return rows


def _figure(field: str) -> str:
    if field in GRAPH_FIELDS:
        return EAGER_FIGURE
    return "prefill" if field.startswith("prefill") else "compression wall time" if field == "seconds" else field


def targets(bench: dict) -> list[dict]:
    """The issue's targets next to what was measured (``met`` None where nothing was measured).

    The batch-1 decode targets use the graph decode figure (static KV cache, CUDA graph replayed) of a row that has
    one -- the eager ``generate`` figure is launch-bound -- and the eager figure otherwise; ``figure`` says which
    (with the graph's mode), and ``eager`` keeps the eager value where the graph one was used."""
    rows = {r["variant"]: r for r in bench.get("variants", [])}
    out = []
    for key, field, op, goal, what in TARGETS:
        if key.startswith("compression:"):
            entry = (bench.get("compression") or {}).get(key.split(":", 1)[1]) or {}
        else:
            entry = rows.get(key) or {}
        ok = entry.get("status", "ok") == "ok"
        value = entry.get(field) if ok else None
        figure, eager = _figure(field), None
        graph_value = entry.get(GRAPH_FIELDS.get(field, "")) if ok else None
        if graph_value is not None:
            value, eager = graph_value, value
            figure = f"static-cache decode ({entry.get('graph_mode')})"
        met = None if value is None else (value <= goal if op == "<=" else value >= goal)
        row = {"target": what, "goal": f"{op} {goal:g}", "measured": value, "met": met, "figure": figure}
        if eager is not None:
            row["eager"] = eager
        out.append(row)
    return out


def report_rows(record: dict) -> list[dict]:
    """The benchmark record's rows as the tables and figures use them (plain values, variant order kept). The graph
    decode fields (:data:`GRAPH_KEYS`) are added only when the record has them, so a record without them reads as
    it is."""
    bench = record.get("benchmark") or {}
    graph = has_graph(bench.get("variants"))
    out = []
    for r in bench.get("variants", []):
        row = {"variant": r["variant"], "label": LABELS.get(r["variant"], r["variant"]), "status": r["status"],
               "kernel": r.get("kernel"), "error": r.get("error")}
        for key in REPORT_KEYS:
            row[key] = r.get(key)
        if graph:
            for key in GRAPH_KEYS:
                row[key] = r.get(key)
        out.append(row)
    return out
