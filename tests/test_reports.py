"""The reports that read several records together: the 7B benchmark's combined view (a format that failed in one
record taken from another, its ratios kept to that record's own fp16) and the distillation study's table and text."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from studylib.bench import benchmark
from studylib.report import paper, tables
from studylib.core import records
from tests.synthetic import benchmark_record, make

RNG_ERROR = "RuntimeError: Offset increment outside graph capture encountered unexpectedly."


def _failed(rec: dict, variant: str, error: str) -> None:
    rows = rec["benchmark"]["variants"]
    for i, r in enumerate(rows):
        if r["variant"] == variant:
            rows[i] = {"variant": variant, "status": "failed", "kernel": benchmark.UNAVAILABLE, "error": error}
    rec["benchmark"]["variants"] = benchmark.ratios(rows)


def _split_runs():
    """A main record whose GPTQ W4 failed after another format's graph capture failed, and a rerun of GPTQ W4 in a
    process of its own, with a slower fp16 of its own (so a ratio mixed across processes would show)."""
    main = benchmark_record(run="llama2-7b")
    for r in main["benchmark"]["variants"]:
        if r["variant"] == "layers-50":
            r.update(graph_b1_ms=None, graph_large_ms=None, graph_mode="failed: batch 1: AcceleratorError: capture",
                     graph_error="batch 1: AcceleratorError: capture")
        elif r["status"] == "ok":
            r.update(graph_b1_ms=r["decode_b1_ms"] / 2, graph_large_ms=r["decode_large_ms"] / 2,
                     graph_mode="cuda-graph", graph_error=None)
    order = ["fp16", "layers-50", "gptq-w4", "sparse-2of4"]  # the capture that fails comes first
    main["benchmark"]["variants"].sort(key=lambda r: order.index(r["variant"]))
    _failed(main, "gptq-w4", RNG_ERROR)
    main["benchmark"]["compression"]["gptq-w4"] = {"status": "failed", "error": RNG_ERROR}
    rerun = benchmark_record(run="llama2-7b-gptq4")
    rows = [r for r in rerun["benchmark"]["variants"] if r["variant"] in ("fp16", "gptq-w4")]
    for r in rows:
        r["decode_b1_ms"] *= 2  # this process ran at half the speed: its fp16 too
        r.update(graph_b1_ms=r["decode_b1_ms"] / 4, graph_large_ms=None, graph_mode="cuda-graph", graph_error=None)
    rerun["benchmark"]["variants"] = benchmark.ratios(rows)
    rerun["benchmark"]["compression"] = {"gptq-w4": {"status": "ok", "seconds": 222.0, "quantize_seconds": 150.0}}
    return main, rerun


def test_the_combined_view_takes_a_failed_format_from_another_record_with_its_own_reference():
    main, rerun = _split_runs()
    data = tables.benchmark_data([rerun, main])
    assert [r["run"] for r in data["runs"]] == ["llama2-7b", "llama2-7b-gptq4"]  # per-record sections stay
    c = data["combined"]
    assert c["record"] == "40_efficiency_7b/llama2-7b"  # the record with the most measured formats
    assert c["sources"] == ["40_efficiency_7b/llama2-7b", "40_efficiency_7b/llama2-7b-gptq4"]
    rows = {r["variant"]: r for r in c["rows"]}
    w4 = rows["gptq-w4"]
    assert w4["status"] == "ok" and w4["from_record"] == "40_efficiency_7b/llama2-7b-gptq4"
    assert w4["failed_in_main"] == RNG_ERROR
    # ratios to the rerun's own fp16 (14 ms), never to the main record's (7 ms)
    assert w4["decode_b1_ratio"] == pytest.approx(5.0 / 14.0)
    assert w4["graph_b1_vs_ref"] == pytest.approx(1.25 / 14.0) and w4["floor_vs_ref"] == pytest.approx(1.7 / 14.0)
    assert rows["fp16"]["graph_b1_vs_ref"] == pytest.approx(0.5) and "from_record" not in rows["fp16"]
    assert rows["sparse-2of4"]["status"] == "failed"  # failed everywhere: stays failed, nothing invented
    assert c["compression"]["gptq-w4"]["seconds"] == 222.0
    assert c["compression"]["gptq-w4"]["from_record"] == "40_efficiency_7b/llama2-7b-gptq4"
    assert c["compression"]["wanda"]["seconds"] == 60.0 and "from_record" not in c["compression"]["wanda"]
    assert c["reference_by_record"]["40_efficiency_7b/llama2-7b-gptq4"]["decode_b1_ms"] == 14.0
    # a record of another architecture is never mixed in
    other = benchmark_record(run="other")
    other["benchmark"]["architecture"] = "llama-2-13b"
    assert tables.benchmark_data([main, other])["combined"]["sources"] == ["40_efficiency_7b/other"]  # the fuller
    assert tables.benchmark_data([])["combined"] is None


def test_figure_and_paper_say_where_a_borrowed_format_was_measured(tmp_path):
    import matplotlib.pyplot as plt

    from studylib.report import figures

    main, rerun = _split_runs()
    data = tables.benchmark_data([main, rerun])
    (tmp_path / "benchmark.json").write_text(json.dumps(data, default=str))
    said = paper.text_benchmark(SimpleNamespace(tables=tmp_path))
    assert "GPTQ W4 did not run in `40_efficiency_7b/llama2-7b` (" + RNG_ERROR + ")" in said
    assert "measured in `40_efficiency_7b/llama2-7b-gptq4`, each in a process of its own" in said
    assert "after the capture of 50% layers failed" in said  # the last failed capture before the error
    assert "ranged from 7.00 to 14.0 ms through `generate`" in said
    assert "GPTQ 4-bit 222 s (in `40_efficiency_7b/llama2-7b-gptq4`)" in said and "Wanda 60.0 s" in said
    fig, caption, meta = figures.efficiency_7b(json.loads((tmp_path / "benchmark.json").read_text()))
    plt.close(fig)
    assert "GPTQ W4 (40_efficiency_7b/llama2-7b-gptq4)" in caption and meta["records"] == data["combined"]["sources"]
    # one record alone reads as before: no borrowed rows, no such sentences
    alone = tables.benchmark_data([benchmark_record()])
    (tmp_path / "benchmark.json").write_text(json.dumps(alone, default=str))
    said = paper.text_benchmark(SimpleNamespace(tables=tmp_path))
    assert "process of its own" not in said and "ranged from" not in said


def _gptq_not_captured(why: str) -> dict:
    """A benchmark record whose formats were all captured but GPTQ W4, whose capture was not attempted."""
    rec = benchmark_record()
    for r in rec["benchmark"]["variants"]:
        if r["status"] == "ok":
            r.update(graph_b1_ms=1.0, graph_large_ms=1.0, graph_mode="cuda-graph", graph_error=None)
    w4 = next(r for r in rec["benchmark"]["variants"] if r["variant"] == "gptq-w4")
    w4.update(graph_b1_ms=None, graph_large_ms=None, graph_mode=f"not attempted: {why}")
    rec["benchmark"]["variants"] = benchmark.ratios(rec["benchmark"]["variants"])
    return rec


def test_a_capture_not_attempted_is_said_in_the_table():
    rec = _gptq_not_captured("its kernel cannot be captured")
    text = tables.benchmark_table(tables.benchmark_data([rec]))
    assert "Graph decode not attempted: GPTQ W4 (not attempted: its kernel cannot be captured)." in text
    line = next(line for line in text.splitlines() if line.startswith("| GPTQ W4"))
    assert "not measured" in line and "failed" not in line


def _students(tmp_path):
    teacher = make("01_teacher", "teacher-lora", noise=0.3, efficiency={"params": 1_000_000,
                                                                        "storage_bytes": 2_000_000})
    kd = records.make_record(notebook="30_kd_data", run="kd", params={"run_name": "kd", "model_id": "t"},
                             profile="full", metrics={}, extra={"kd": {"pairs": 1234, "sources": 1236}})
    qlora = {"r": 64, "alpha": 128, "dropout": 0.0, "rslora": True, "double_quant": True, "compute_dtype": "bfloat16",
             "trainable_share": 0.05}
    recs = [teacher, kd]
    for notebook, run, noise, layers, ood in (("31_model_a", "a", 0.35, 2, 0), ("32_model_b", "b", 0.45, 1, 0),
                                              ("33_ood_size", "b-ood0", 0.45, 1, 0),
                                              ("33_ood_size", "b-ood16", 0.44, 1, 16)):
        rec = make(notebook, run, noise=noise, ood_noise=0.7 - 0.02 * ood,
                   params={"ood_total": ood, "epochs": 1.0, "learning_rate": 2e-4},
                   efficiency={"params": 600_000 if layers == 1 else 1_050_000},
                   extra={"training": {"steps": 10, "final_loss": 0.9, "qlora": qlora,
                                       "loss_log": [[1, 1.0], [5, 2.0], [10, 0.9]] if run == "a"
                                       else [[1, 8.0], [5, 3.0], [10, 2.5]]},
                          "training_data": {"human": 100, "kd": 50, "ood": ood, "total": 150 + ood},
                          "student": {"prune_recipe": [], "layers": layers,
                                      "storage_bytes": {"base_nf4": 1_000_000, "adapter": 200_000}}})
        if run == "b-ood0":  # the same setting as Model B, rerun: the same scores
            rec["metrics"] = json.loads(json.dumps(recs[-1]["metrics"]))
        rec["retention_chrf++"] = tables_retention(rec, teacher)
        rec["teacher_record"] = "01_teacher/teacher-lora.json"
        recs.append(rec)
    return recs


def tables_retention(rec, teacher):
    from studylib.runs import students

    return students.retention(rec["metrics"], teacher)


def test_the_students_table_and_text_come_from_their_records(tmp_path):
    recs = _students(tmp_path)
    data = tables.students_data(recs, "01_teacher/teacher-lora")
    assert [s["record"] for s in data["students"]] == ["31_model_a/a", "32_model_b/b", "33_ood_size/b-ood0",
                                                       "33_ood_size/b-ood16"]
    a = data["students"][0]
    assert a["storage_bytes"] == 1_200_000 and a["retention"]["n"] == 10
    assert 0 < a["retention"]["min"] <= a["retention"]["mean"] <= a["retention"]["max"]
    text = tables.students_table(data)
    assert "| 31_model_a/a | 2 | 0.00105 | 0.00120 | 150 (100 + 50 + 0) |" in text
    assert "KD data (30_kd_data/kd): 1,234 teacher translations" in text
    (tmp_path / "students.json").write_text(json.dumps(data, default=str))
    said = paper.text_students(SimpleNamespace(tables=tmp_path))
    assert "translations of 1,234 ALMA training sources" in said
    assert "LoRA rank 64, α 128, dropout 0, rank-stabilized scaling, double quantization, bfloat16 compute, 1 " \
           "epoch(s) at learning rate 0.0002" in said
    mean = f"{100 * a['retention']['mean']:.3g}"
    assert f"Model A (the teacher in NF4, recovered with QLoRA), 2 layers, trained on 150 pairs, keeps {mean} %" in said
    assert "with 105 % of its parameters and 60.0 % of its storage" in said
    assert "Adding 0 to 16 out-of-domain Tatoeba pairs" in said
    assert "The training loss of Model A rose from 1.00 (step 1) to 2.00 (step 5) before falling to 0.900 (step 10)" \
        in said and "training loss of Model B" not in said  # Model B's only fell
    assert "reproduces its scores in every direction" in said
    # nothing recorded: said, no table
    assert "Not measured yet" in tables.students_table(tables.students_data([], "01_teacher/teacher-lora"))
    (tmp_path / "students.json").write_text(json.dumps(tables.students_data([], "x/y")))
    assert "no records yet" in paper.text_students(SimpleNamespace(tables=tmp_path))


def test_a_sweep_run_that_differs_from_model_b_is_not_called_a_reproduction(tmp_path):
    recs = _students(tmp_path)
    zero = next(r for r in recs if r.get("run") == "b-ood0")
    first = sorted(zero["retention_chrf++"])[0]
    zero["retention_chrf++"][first] *= 0.99
    data = tables.students_data(recs, "01_teacher/teacher-lora")
    (tmp_path / "students.json").write_text(json.dumps(data, default=str))
    assert "reproduces" not in paper.text_students(SimpleNamespace(tables=tmp_path))


def test_sweep_ticks_read_in_thousands_and_a_zero_setting_keeps_its_place():
    import matplotlib.pyplot as plt

    from studylib.report import figures

    assert [figures._short(v) for v in (0.0, 8.0, 1000.0, 20000.0, 1500.0)] == ["0", "8", "1k", "20k", "1500"]
    fig, ax = plt.subplots()
    ax.plot([0, 1000, 5000, 20000], [1, 2, 3, 4])
    figures._x_ticks(ax, [0, 1000, 5000, 20000], log_x=True)
    assert ax.get_xscale() == "symlog" and [t.get_text() for t in ax.get_xticklabels()] == ["0", "1k", "5k", "20k"]
    # linear up to the smallest positive size: 0 -> 1k takes as much room as a decade above it
    x = ax.transData.transform([(0, 0), (1000, 0), (10000, 0)])[:, 0]
    assert x[1] - x[0] == pytest.approx(x[2] - x[1], rel=0.25)  # (symlog puts 0 -> 1 at 1.1 decades)
    plt.close(fig)


def test_the_figure_caption_names_a_capture_not_attempted_apart_from_the_graph_modes():
    import matplotlib.pyplot as plt

    from studylib.report import figures

    rec = _gptq_not_captured("cannot be captured")
    fig, caption, meta = figures.efficiency_7b(json.loads(json.dumps(tables.benchmark_data([rec]), default=str)))
    plt.close(fig)
    assert "captured once as a CUDA graph and replayed" in caption and "each step run as" not in caption
    assert "Graph decode not attempted (a kernel that cannot be captured; the table says why): GPTQ W4." in caption
    assert meta["graph_failed"] == []


def test_targets_are_read_from_the_combined_view_with_their_record():
    main, rerun = _split_runs()
    data = tables.benchmark_data([main, rerun])
    goals = {g["target"]: g for g in data["combined"]["targets"]}
    w4 = goals["GPTQ W4 batch-1 time per token, x fp16"]
    assert w4["record"] == "40_efficiency_7b/llama2-7b-gptq4" and w4["measured"] is not None
    assert goals["GPTQ 4-bit compression of the model, seconds"]["measured"] == 222.0
    assert goals["GPTQ 4-bit compression of the model, seconds"]["met"] is True
    assert goals["2:4 prefill speed-up over fp16"]["met"] is None  # failed everywhere: not measured, not "not met"
    text = tables.benchmark_table(data)
    assert "| GPTQ 4-bit compression of the model, seconds | <= 600 | 222 | met | compression wall time | " \
           "40_efficiency_7b/llama2-7b-gptq4 |" in text
    assert "| 2:4 prefill speed-up over fp16 | >= 1.3 | not measured | — |" in text


def test_the_paper_sorts_the_targets_into_met_not_met_and_not_measured(tmp_path):
    main, rerun = _split_runs()
    (tmp_path / "benchmark.json").write_text(json.dumps(tables.benchmark_data([main, rerun]), default=str))
    said = paper.text_benchmark(SimpleNamespace(tables=tmp_path))
    assert "met: fp16 batch-1 time per token 0.636× its floor (goal ≤ 1.3), GPTQ 4-bit compression of the model " \
           "222 s (goal ≤ 600) and Wanda compression of the model 60.0 s (goal ≤ 120)" in said
    assert "not met: GPTQ W4 batch-1 time per token 0.357× fp16 (goal ≤ 0.35)" in said
    assert "not measured: NF4 batch-1 time per token, INT8 batch-1 time per token and 2:4 prefill speed-up" in said


def test_a_format_measured_again_elsewhere_is_said_beside_its_figure_here(tmp_path):
    """When the main record holds every format, a rerun of one of them in a process of its own is not borrowed, but
    the paper gives its ratio there beside the one here, and the reference's spread across the processes."""
    main, rerun = _split_runs()
    main = benchmark_record(run="llama2-7b")  # every format measured in one process this time
    for r in main["benchmark"]["variants"]:
        if r["status"] == "ok":
            r.update(graph_b1_ms=r["decode_b1_ms"] / 3, graph_large_ms=None, graph_mode="cuda-graph", graph_error=None)
    main["benchmark"]["variants"] = benchmark.ratios(main["benchmark"]["variants"])
    data = tables.benchmark_data([main, rerun])
    c = data["combined"]
    assert c["sources"] == ["40_efficiency_7b/llama2-7b"] and not any(r.get("from_record") for r in c["rows"])
    rep = c["repeats"]["gptq-w4"]
    assert rep["main"]["record"] == "40_efficiency_7b/llama2-7b"
    assert [o["record"] for o in rep["others"]] == ["40_efficiency_7b/llama2-7b-gptq4"]
    theirs = {r["variant"]: r for r in rerun["benchmark"]["variants"]}
    there = theirs["gptq-w4"]["graph_b1_ms"] / theirs["fp16"]["graph_b1_ms"]  # to the rerun's own fp16
    assert rep["others"][0]["graph_b1_ratio"] == pytest.approx(there)
    assert rep["main"]["graph_b1_ratio"] == pytest.approx(rep["main"]["graph_b1_ms"] / (7 / 3))  # to this fp16
    assert there != pytest.approx(rep["others"][0]["graph_b1_ms"] / (7 / 3))  # a mixed ratio would differ
    assert set(c["repeats"]) == {"fp16", "gptq-w4"}  # only formats both records measured
    (tmp_path / "benchmark.json").write_text(json.dumps(data, default=str))
    said = paper.text_benchmark(SimpleNamespace(tables=tmp_path))
    here = rep["main"]["graph_b1_ratio"]
    assert (f"GPTQ W4 in `40_efficiency_7b/llama2-7b-gptq4` ({tables.fmt_sig(there)}× its fp16 through the "
            f"static-cache graph; {tables.fmt_sig(here)}× here)") in said
    assert "Across these 2 processes, fp16's own batch-one time per token ranged from 7.00 to 14.0 ms" in said
    assert "did not run in" not in said
    # a record alone: no such sentence
    (tmp_path / "benchmark.json").write_text(json.dumps(tables.benchmark_data([main]), default=str))
    assert "Measured again" not in paper.text_benchmark(SimpleNamespace(tables=tmp_path))


def test_a_reason_in_a_table_note_keeps_its_main_clause():
    why = "its kernel cannot be captured (H200, 2026-11-21, torch 2.11: the capture failed with 'X (Y)')"
    assert tables.short_reason(f"not attempted: {why}") == "not attempted: its kernel cannot be captured"
    long = "word " * 60
    cut = tables.short_reason(long, limit=40)
    assert cut.endswith("…") and len(cut) <= 41 and not cut[:-1].endswith(" ")
    rec = _gptq_not_captured(why)
    text = tables.benchmark_table(tables.benchmark_data([rec]))
    assert "GPTQ W4 (not attempted: its kernel cannot be captured)." in text and "2026-11-21" not in text
