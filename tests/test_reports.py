"""The report side read as a whole: the summary, the stale mark, the 7B benchmark (any number of records, each read
against its own fp16), the distillation study, the sweep view of the ablation notebooks and the one entry point."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from studylib.core import records
from studylib.report import __main__ as entry
from studylib.report import benchmark, figures, students, summary, sweep, tables
from studylib.report.markdown import STALE
from synthetic import benchmark_record, core, make, with_ratios

REF = "01_teacher/teacher-lora"


def _metrics():
    return {"de-en": {"bleu": 20.0, "chrf": 50.0, "chrf++": 48.0, "n": 3},
            "cs-en": {"bleu": 10.0, "chrf": 40.0, "chrf++": 38.0, "n": 3},
            "en-de": {"bleu": 5.0, "chrf": 30.0, "chrf++": 28.0, "n": 3}}


def test_the_summary_says_what_each_run_is_and_which_records_are_stale(tmp_path):
    for run, layout in (("a", None), ("b", 1)):
        rec = records.make_record(notebook="00_baseline", run=run, params={"model_id": run}, profile="full",
                                  metrics=_metrics(), efficiency={"params": 10, "storage_gb": 0.1}, family="base")
        if layout:
            rec["layout"] = layout
        records.write_record(rec, tmp_path)
    table = summary.summary_table(summary.load_records(tmp_path))
    assert len(table) == 2 * (3 + 2)  # 3 directions + 2 averages per run
    row = table[(table.run == "b") & (table.direction == "de-en")].iloc[0]
    assert row["chrf++"] == 48.0 and row["params"] == 10 and row["family"] == "base" and row["stale"]
    assert not table[table.run == "a"]["stale"].any()
    assert not {"errata", "errata_fields"} & set(table.columns)
    out = summary.write_summary(tmp_path, "full")
    assert out.name == "summary-full.csv" and out.read_text().count("\n") == len(table) + 1
    assert summary.stale_runs(summary.load_summary(out)) == {("00_baseline", "b")}
    assert summary.load_records(tmp_path, profile="smoke") == []


def _study_with_a_stale_record(results):
    """The core runs and two quantized runs, one of them made by an older layout."""
    core(results)
    for run, noise, layout in (("int8-old", 0.32, 1), ("nf4-new", 0.4, None)):
        rec = make("10_bnb_int8", run, family="quantization", noise=noise, params={"recipe": [{"method": "bnb-int8"}]})
        if layout:
            rec["layout"] = layout
        records.write_record(rec, results)


def test_one_entry_point_writes_everything_and_marks_a_stale_record_once_wherever_it_is_named(tmp_path, capsys):
    results, figs, out = tmp_path / "results", tmp_path / "figures", tmp_path / "paper"
    _study_with_a_stale_record(results)
    argv = ["--results", str(results), "--reference", REF, "--figures", str(figs), "--out", str(out)]
    assert entry.main(argv) == 0
    assert (results / "summary-full.csv").is_file() and (results / "significance-full.csv").is_file()
    assert (figs / "figures.json").is_file() and (out / "paper.html").is_file()
    meaning = f"{STALE} made by an older layout of the code; remade by the next full run."
    for name in ("main.md", "directions-chrf++.md", "directions-bleu.md", "significance.md", "commands.md",
                 "environment.md"):
        text = (results / "tables" / name).read_text()
        rows = [line for line in text.splitlines() if line.startswith("|")]
        assert meaning in text, name
        assert all(line.count(STALE) == (1 if "int8-old" in line.split("|")[1] else 0) for line in rows
                   if "environment" not in name), name
        assert sum(line.count(STALE) for line in rows) == (1 if "significance" not in name else 2), name  # 2 metrics
    manifest = json.loads((figs / "figures.json").read_text())
    drawn = [f for f in manifest["figures"] if f["status"] == "drawn"]
    assert drawn and all(meaning in f["caption"] for f in drawn)
    paper_md = (out / "paper.md").read_text()
    assert "1 of the 5 records here was made by an older layout of the code" in paper_md
    # the same run again writes the same bytes
    before = {p: p.read_bytes() for d in (results, figs, out) for p in sorted(d.rglob("*")) if p.is_file()}
    assert entry.main(argv) == 0
    assert {p: p.read_bytes() for d in (results, figs, out) for p in sorted(d.rglob("*")) if p.is_file()} == before


def test_the_entry_point_refuses_missing_records_or_reference_in_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert entry.main(["--results", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no full-profile record" in err and str(empty) in err
    core(tmp_path / "results")
    assert entry.main(["--results", str(tmp_path / "results"), "--reference", "01_teacher/absent"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reference 01_teacher/absent has no full-profile record" in err
    assert entry.main(["--results", str(tmp_path / "results"), "--profile", "smoke", "--reference", REF]) == 2
    assert "no smoke-profile record" in capsys.readouterr().err


# --------------------------------------------------------------------- the 7B benchmark


def _per_format(variant: str, slowdown: float = 1.0, run: str | None = None) -> dict:
    """A record of one format beside its own fp16, in a process ``slowdown`` times slower than the others."""
    rec = benchmark_record(run=run or f"llama2-7b-{variant}", variants=("fp16", variant))
    rows = rec["benchmark"]["variants"]
    for r in rows:
        r["decode_b1_ms"] *= slowdown
    rec["benchmark"]["variants"] = with_ratios(rows)
    return rec


def test_any_number_of_benchmark_records_read_the_same_each_against_its_own_fp16(tmp_path):
    import matplotlib.pyplot as plt

    old = benchmark_record(run="llama2-7b")
    old["layout"] = 1
    recs = [_per_format("layers-50", slowdown=2.0), old, _per_format("gptq-w4")]
    data = benchmark.benchmark_data(recs)
    assert [r["run"] for r in data["runs"]] == ["llama2-7b", "llama2-7b-gptq-w4", "llama2-7b-layers-50"]
    assert [r["stale"] for r in data["runs"]] == [True, False, False] and set(data) == {"status", "runs"}
    slow = {r["variant"]: r for r in data["runs"][2]["rows"]}
    assert slow["fp16"]["decode_b1_ms"] == 7.0 * 2 and slow["layers-50"]["decode_b1_ratio"] == pytest.approx(3.6 / 7.0)
    assert slow["layers-50"]["floor_vs_ref"] == pytest.approx(2.9 / 14.0)  # the floor over this record's own fp16
    text = benchmark.benchmark_table(data)
    sections = text.split("**40_efficiency_7b/")[1:]
    assert [s.split("**")[0] for s in sections] == ["llama2-7b", "llama2-7b-gptq-w4", "llama2-7b-layers-50"]
    assert sections[0].startswith(f"llama2-7b** {STALE} (NVIDIA H200") and STALE not in sections[1].split("\n")[0]
    assert "| GPTQ W4 | MarlinLinear x224 | 32 | 2.50 | 0.357× | 1.47× |" in sections[1]
    assert "unavailable: RuntimeError: no semi-structured sparse kernel ran" in sections[0]
    assert "| GPTQ 4-bit compression of the model, seconds | <= 600 | 400 | met |" in sections[1]
    assert "NF4 batch-1" not in text  # a target no record measured is not listed
    assert text.rstrip().endswith("§ made by an older layout of the code; remade by the next full run.")
    fig, caption, meta = benchmark.efficiency_7b(json.loads(json.dumps(data)))
    plt.close(fig)
    assert meta["records"] == [r["record"] for r in data["runs"]]
    assert "50% layers · llama2-7b-layers-50" in meta["formats"] and f"fp16 · llama2-7b {STALE}" in meta["formats"]
    assert meta["not_run"] == [f"2:4 sparse · llama2-7b {STALE}"]
    assert "3 benchmark records, one block of bars each" in caption and "2,400 GB/s" in caption
    (tmp_path / "benchmark.json").write_text(json.dumps(data))
    said = benchmark.text_benchmark(SimpleNamespace(tables=tmp_path))
    assert said.count("In `40_efficiency_7b/") == 3
    assert "In `40_efficiency_7b/llama2-7b-layers-50`, on NVIDIA H200, the llama-2-7b architecture" in said
    assert "fp16 decodes at 14.0 ms per token" in said and "fp16 decodes at 7.00 ms per token" in said
    assert "The fastest format at batch size one is 50% layers (0.514× the time of fp16" in said
    assert "Compressing the model at this scale took: GPTQ 4-bit 400 s and Wanda 60.0 s" in said
    assert "not met: GPTQ W4 batch-1 time per token 0.357× fp16 (goal ≤ 0.35)" in said
    empty = benchmark.benchmark_data([])
    assert empty["status"] == "not measured" and "Not measured yet" in benchmark.benchmark_table(empty)


def _with_graph(rec: dict, not_attempted: str | None = None, failed: str | None = None) -> dict:
    for r in rec["benchmark"]["variants"]:
        if r["status"] == "ok":
            r.update(graph_b1_ms=r["decode_b1_ms"] / 2, graph_large_ms=r["decode_large_ms"] / 2,
                     graph_mode="cuda-graph", graph_error=None)
        if r["variant"] == "gptq-w4" and not_attempted:
            r.update(graph_b1_ms=None, graph_large_ms=None, graph_mode=f"not attempted: {not_attempted}")
        if r["variant"] == "layers-50" and failed:
            r.update(graph_b1_ms=None, graph_large_ms=None, graph_mode=f"failed: {failed}", graph_error=failed)
    rec["benchmark"]["variants"] = with_ratios(rec["benchmark"]["variants"])
    return rec


def test_graph_figures_stand_beside_the_eager_ones_and_a_missing_one_says_why(tmp_path):
    import matplotlib.pyplot as plt

    why = "its kernel cannot be captured (H200, 2026-11-21, torch 2.11: the capture failed with 'X (Y)') " * 2
    data = benchmark.benchmark_data([_with_graph(benchmark_record(), not_attempted=why,
                                                 failed="batch 1: AcceleratorError: capture")])
    text = benchmark.benchmark_table(data)
    header = text.splitlines()[2]
    assert header.startswith("| Format | Kernel | Layers | Batch 1 ms/token (eager) | × fp16 | × floor | "
                             "Batch 1 ms/token (graph) |")
    w4 = next(line for line in text.splitlines() if line.startswith("| GPTQ W4"))
    assert "not measured" in w4 and "failed" not in w4
    half = next(line for line in text.splitlines() if line.startswith("| 50% layers"))
    assert "| failed |" in half
    assert "Graph decode not attempted: GPTQ W4 (its kernel cannot be captured" in text
    assert "Graph decode failed (the eager figures stand): 50% layers (batch 1: AcceleratorError: capture)" in text
    fig, caption, meta = benchmark.efficiency_7b(json.loads(json.dumps(data)))
    plt.close(fig)
    assert "Hatched bars" in caption and meta["graph_failed"] == ["50% layers"]
    assert "Graph decode not attempted (a kernel that cannot be captured; the table says why): GPTQ W4." in caption
    (tmp_path / "benchmark.json").write_text(json.dumps(data))
    said = benchmark.text_benchmark(SimpleNamespace(tables=tmp_path))
    assert "through `generate`" in said and "fp16 decodes at 3.50 ms per token at batch size one" in said
    assert "The graph decode at batch size one failed for 50% layers" in said


# --------------------------------------------------------------------- the distillation study


def _students():
    teacher = make("01_teacher", "teacher-lora", family="teacher", noise=0.3,
                   efficiency={"params": 1_000_000, "storage_bytes": 2_000_000})
    kd = records.make_record(notebook="30_kd_data", run="kd", params={"run_name": "kd", "model_id": "t"},
                             profile="full", metrics={}, extra={"kd": {"pairs": 1234, "sources": 1236}},
                             family="distillation", method="kd-data")
    qlora = {"r": 64, "alpha": 128, "dropout": 0.0, "rslora": True, "double_quant": True, "compute_dtype": "bfloat16",
             "trainable_share": 0.05}
    recs = [teacher, kd]
    for notebook, run, noise, layers, ood in (("31_model_a", "a", 0.35, 2, 0), ("32_model_b", "b", 0.45, 1, 0),
                                              ("33_ood_size", "b-ood0", 0.45, 1, 0),
                                              ("33_ood_size", "b-ood16", 0.44, 1, 16)):
        sweep_of = {"parent": "b", "axes": {"ood_total": ood}} if notebook == "33_ood_size" else None
        rec = make(notebook, run, family="distillation", sweep=sweep_of, noise=noise, ood_noise=0.7 - 0.02 * ood,
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
        rec["retention_chrf++"] = _retention(rec, teacher)
        rec["teacher_record"] = "01_teacher/teacher-lora.json"
        recs.append(rec)
    return recs


def _retention(rec, teacher):
    from studylib.runs import students as run_students

    return run_students.retention(rec["metrics"], teacher)


def test_the_students_table_and_text_come_from_their_records(tmp_path):
    recs = _students()
    recs[2]["layout"] = 1  # Model A made by an older layout
    data = students.students_data(recs, REF)
    assert [s["record"] for s in data["students"]] == ["31_model_a/a", "32_model_b/b", "33_ood_size/b-ood0",
                                                       "33_ood_size/b-ood16"]
    a = data["students"][0]
    assert a["storage_bytes"] == 1_200_000 and a["retention"]["n"] == 10 and a["stale"]
    assert 0 < a["retention"]["min"] <= a["retention"]["mean"] <= a["retention"]["max"]
    text = students.students_table(data)
    assert f"| 31_model_a/a {STALE} | 2 | 0.00105 | 0.00120 | 150 (100 + 50 + 0) |" in text
    assert "| 32_model_b/b | 1 |" in text and "§ made by an older layout" in text
    assert "KD data (30_kd_data/kd): 1,234 teacher translations" in text
    (tmp_path / "students.json").write_text(json.dumps(data, default=str))
    said = students.text_students(SimpleNamespace(tables=tmp_path))
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
    assert "Not measured yet" in students.students_table(students.students_data([], REF))
    (tmp_path / "students.json").write_text(json.dumps(students.students_data([], "x/y")))
    assert "no records yet" in students.text_students(SimpleNamespace(tables=tmp_path))


def test_a_sweep_run_that_differs_from_model_b_is_not_called_a_reproduction(tmp_path):
    recs = _students()
    zero = next(r for r in recs if r.get("run") == "b-ood0")
    zero["retention_chrf++"][sorted(zero["retention_chrf++"])[0]] *= 0.99
    (tmp_path / "students.json").write_text(json.dumps(students.students_data(recs, REF), default=str))
    assert "reproduces" not in students.text_students(SimpleNamespace(tables=tmp_path))


# --------------------------------------------------------------------- the sweep view of the ablation notebooks


def _depth_sweep(results, stale_stage: str | None = None):
    for strategy in ("iterative", "middle"):
        for depth in (1, 2, 3):
            for stage, recovery, noise in (("before", "none", 0.3 + 0.15 * depth), ("after", "full", 0.3 + 0.05 * depth)):
                step = [{"method": f"layer-prune-{'greedy' if strategy == 'iterative' else 'middle'}", "depth": depth}]
                rec = make("27_prune_depth", f"teacher-{strategy}-d{depth}-{stage}", family="pruning", noise=noise,
                           sweep={"parent": "teacher", "axes": {"strategy": strategy, "depth": depth, "stage": stage}},
                           params={"strategy": strategy, "depth": depth, "recovery": recovery}, n=4,
                           extra={"compression": {"recipe": [{"method": s["method"], "params": {"depth": depth}}
                                                             for s in step]}})
                if stage == stale_stage:
                    rec["layout"] = 1
                records.write_record(rec, results)
    other = make("27_prune_depth", "another-d1-before", family="pruning", n=4,
                 sweep={"parent": "another", "axes": {"depth": 1}}, params={"strategy": "middle", "depth": 1})
    records.write_record(other, results)


def test_the_sweep_view_gives_one_row_per_setting_and_chrf_against_the_numeric_axis(tmp_path):
    import matplotlib.pyplot as plt

    _depth_sweep(tmp_path, stale_stage="before")
    table, fig, message = sweep.view("27_prune_depth", "teacher", results=tmp_path)
    assert len(table) == 12 and "another-d1-before" not in set(table["run"])
    assert list(table.columns[:3]) == ["strategy", "depth", "stage"]
    assert {"xx→en chrF++", "en→xx chrF++", "xx→en BLEU", "en→xx BLEU", "storage_gb", "peak_memory_gb",
            "time_per_token_ms", "stale"} <= set(table.columns)
    first = table.iloc[0]
    assert (first["strategy"], first["depth"], first["stage"]) == ("iterative", 1, "after")
    rec = records.read_record(tmp_path / "runs" / "27_prune_depth" / f"{first['run']}.json")
    assert first["xx→en chrF++"] == pytest.approx(rec["averages"]["xx-en"]["chrf++"])
    assert table["stale"].sum() == 6 and message == ("12 settings of 27_prune_depth/teacher; 6 stale (§: made by an "
                                                     "older layout of the code; remade by the next full run).")
    lines = fig.axes[0].get_lines()
    assert sorted(line.get_label() for line in lines) == ["iterative, after", f"iterative, before {STALE}",
                                                         "middle, after", f"middle, before {STALE}"]
    assert all(list(line.get_xdata()) == [1, 2, 3] for line in lines)
    assert fig.axes[0].get_xlabel() == "depth" and len(fig.axes[1].get_lines()) == 4
    plt.close(fig)
    table, fig, message = sweep.view("27_prune_depth", "nothing-yet", results=tmp_path)
    assert table.empty and fig is None and "No record of the sweep 'nothing-yet'" in message
    table, fig, message = sweep.view("15_gptq_bits", "teacher", results=tmp_path)
    assert table.empty and fig is None and "15_gptq_bits" in message


def test_sweep_ticks_read_in_thousands_and_a_zero_setting_keeps_its_place():
    import matplotlib.pyplot as plt

    from studylib.report import plot

    assert [plot.short(v) for v in (0.0, 8.0, 1000.0, 20000.0, 1500.0)] == ["0", "8", "1k", "20k", "1500"]
    fig, ax = plt.subplots()
    ax.plot([0, 1000, 5000, 20000], [1, 2, 3, 4])
    plot.x_ticks(ax, [0, 1000, 5000, 20000], log_x=True)
    assert ax.get_xscale() == "symlog" and [t.get_text() for t in ax.get_xticklabels()] == ["0", "1k", "5k", "20k"]
    # linear up to the smallest positive size: 0 -> 1k takes as much room as a decade above it
    x = ax.transData.transform([(0, 0), (1000, 0), (10000, 0)])[:, 0]
    assert x[1] - x[0] == pytest.approx(x[2] - x[1], rel=0.25)  # (symlog puts 0 -> 1 at 1.1 decades)
    plt.close(fig)


def test_tables_and_figures_write_in_their_own_places(tmp_path):
    results = tmp_path / "results"
    _study_with_a_stale_record(results)
    summary.write_summary(results, "full")
    written = {p.name for p in tables.write(results, "full", REF)}
    assert {"main.md", "main.csv", "significance.md", "benchmark.md", "benchmark.json", "students.json",
            "setup.json", "commands.md", "environment.md"} <= written
    drawn = {f.name: f.status for f in figures.write(results, "full", REF, tmp_path / "figures")}
    assert drawn["quality_by_direction"] == "drawn" and drawn["efficiency_7b"] == "skipped"
