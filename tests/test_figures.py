import json

import pytest

from studylib.core import records
from studylib.report import benchmark, cost, figures, significance, summary
from synthetic import core, everything

REF = "01_teacher/teacher-lora"


def _inputs(results):
    summary.write_summary(results, "full")
    significance.write(results, "full", REF, n_samples=100)
    table = summary.load_summary(summary.summary_path(results, "full"))
    return table, significance.read_table(significance.table_path(results, "full"))


@pytest.fixture(scope="module")
def full_study(tmp_path_factory):
    results = tmp_path_factory.mktemp("study") / "results"
    everything(results)
    return results, *_inputs(results)


def _benchmark(results):
    return benchmark.benchmark_data(summary.load_records(results, "full"))


def test_every_figure_is_drawn_when_its_records_exist(full_study, tmp_path):
    results, table, sig = full_study
    drawn = figures.draw_all(table, sig, tmp_path, REF, benchmark=_benchmark(results))
    assert [f.name for f in drawn] == [name for name, _, _ in figures.FIGURES]
    assert all(f.status == "drawn" for f in drawn), [(f.name, f.reason) for f in drawn]
    for f in drawn:
        for ext in ("pdf", "png"):
            assert (tmp_path / f"{f.name}.{ext}").stat().st_size > 1000
        assert f.caption
    manifest = json.loads((tmp_path / "figures.json").read_text())
    assert manifest["reference"] == REF and len(manifest["figures"]) == len(figures.FIGURES)
    by_name = {f.name: f for f in drawn}
    assert by_name["gptq_bits"].data["groups"] == ["gptq, calib 16"]  # the calibration sweep is not a bits sweep
    assert by_name["calibration"].data["groups"] == ["gptq, bits 3"]
    assert sorted(by_name["prune_depth"].data["groups"]) == ["layer-prune-greedy, before recovery",
                                                             "layer-prune-greedy, recovered (full)"]
    assert len(by_name["ood_size"].data["groups"]) == 1
    frontier = by_name["pareto"].data["frontier"]
    assert set(frontier) == {f"{g} vs {c}" for g in ("xx-en", "en-xx") for c in ("peak_memory_gb", "time_per_token_ms")}
    # the cheapest run in memory is always on the frontier; the record without scores never appears
    assert frontier["xx-en vs peak_memory_gb"][0] == "15_gptq_bits/teacher-bits2"
    assert not any("30_kd_data" in r for runs in frontier.values() for r in runs)
    bench = by_name["efficiency_7b"]
    assert bench.data["not_run"] == ["2:4 sparse"] and "random weights" in bench.caption
    assert "2,400 GB/s" in bench.caption and "sparse" in bench.caption  # numbers from the record; failures named
    assert bench.data["records"] == ["40_efficiency_7b/llama2-7b"]
    assert all("made by an older layout" not in f.caption for f in drawn)  # no stale record here


def test_the_benchmark_table_comes_from_its_record_and_says_when_there_is_none(full_study, tmp_path):
    results, _, _ = full_study
    data = _benchmark(results)
    text = benchmark.benchmark_table(data)
    assert data["status"] == "measured" and [r["variant"] for r in data["runs"][0]["rows"]][:2] == ["fp16", "gptq-w4"]
    lines = text.splitlines()
    assert lines[0] == "**40_efficiency_7b/llama2-7b** (NVIDIA H200, " + data["runs"][0]["date"] + "; one process)"
    assert lines[2].startswith("| Format | Kernel | Layers | Batch 1 ms/token | × fp16 | × floor | Batch 16 ms/token")
    gptq = next(line for line in lines if line.startswith("| GPTQ W4"))
    assert "| MarlinLinear x224 |" in gptq and "| 0.357× |" in gptq and "| 1.47× |" in gptq  # 2.5/7.0, 2.5/1.7
    assert "unavailable: RuntimeError: no semi-structured sparse kernel ran" in text
    assert "GPTQ 4-bit: 400 s" in text and "Wanda at sparsity 0.5: 60.0 s" in text and "random weights" in text
    empty = benchmark.benchmark_data([])
    assert empty["status"] == "not measured" and "Not measured yet" in benchmark.benchmark_table(empty)
    drawn = {f.name: f for f in figures.draw_all(None, None, tmp_path, REF, benchmark=empty)}
    assert drawn["efficiency_7b"].status == "skipped" and "not measured yet" in drawn["efficiency_7b"].reason
    assert not (tmp_path / "efficiency_7b.png").exists()


def test_sweep_figures_are_skipped_with_a_reason_and_never_left_stale(tmp_path):
    results = tmp_path / "results"
    core(results)
    table, sig = _inputs(results)
    out = tmp_path / "figures"
    out.mkdir()
    (out / "gptq_bits.png").write_bytes(b"an old figure")
    drawn = {f.name: f for f in figures.draw_all(table, sig, out, REF)}
    assert drawn["quality_by_direction"].status == drawn["pareto"].status == "drawn"
    for name in ("gptq_bits", "calibration", "prune_depth", "ood_size"):
        assert drawn[name].status == "skipped" and drawn[name].reason
        assert not (out / f"{name}.png").exists() and not (out / f"{name}.pdf").exists()
    assert "GPTQ" in drawn["gptq_bits"].reason


def test_no_records_at_all_skips_everything(tmp_path):
    drawn = figures.draw_all(summary.load_summary(tmp_path / "missing.csv"), None, tmp_path / "f", REF)
    assert all(f.status == "skipped" and ("no scored run" in f.reason or "not measured" in f.reason) for f in drawn)


def test_one_point_is_not_a_sweep(tmp_path):
    from synthetic import make

    results = tmp_path / "results"
    core(results)
    recipe = [{"method": "gptq", "bits": 4, "group_size": 128}]
    records.write_record(make("12_gptq", "gptq4", family="quantization",
                              params={"recipe": recipe, "calib_per_direction": 8},
                              extra={"compression": {"recipe": [{"method": "gptq", "params": recipe[0]}],
                                                     "calibration": {"n": 1}}}), results)
    table, sig = _inputs(results)
    drawn = {f.name: f for f in figures.draw_all(table, sig, tmp_path / "f", REF)}
    assert drawn["gptq_bits"].status == "skipped" and "sweep" in drawn["gptq_bits"].reason
    assert drawn["calibration"].status == "skipped"


def test_pareto_front():
    #            0        1        2         3        4 (missing)  5 (equal to 1)
    costs = [1.0, 2.0, 3.0, 2.5, None, 2.0]
    quality = [10.0, 20.0, 15.0, 25.0, 30.0, 20.0]
    assert cost.pareto_front(costs, quality) == [0, 1, 5, 3]
    assert cost.pareto_front([1, 1], [5, 6]) == [1]
    assert cost.pareto_front([], []) == []


def test_runs_table_has_one_row_per_scored_run(full_study):
    _, table, _ = full_study
    table = summary.runs_table(table)
    assert table[["notebook", "run"]].duplicated().sum() == 0
    assert "30_kd_data" not in set(table["notebook"])
    row = table[table["run"] == "modelb-ood4"].iloc[0]
    assert row["ood_total"] == 4 and row["ood xx-en:chrf++"] > 0 and row["recovery"] == "qlora"
    assert list(table["run"][:3]) == ["base-3shot", "teacher-full", "teacher-lora"]
