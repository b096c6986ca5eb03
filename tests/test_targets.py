"""targets.json and the engines report: what they read from records, on synthetic records (no measured result is
asserted here: the numbers are made up for the mechanics)."""

from types import SimpleNamespace

from studylib.core.records import LAYOUT
from studylib.report import engines as ER
from studylib.report import targets as T
from studylib.report.markdown import write_json
from synthetic import make

TEACHER = "gemma3-270m-lora"


def bench_record(run, rows, layout=LAYOUT):
    return {"notebook": "40_efficiency_7b", "run": run, "layout": layout, "metrics": {},
            "benchmark": {"variants": rows, "reference": rows[0]["variant"]}}


def engines_record(seconds=40.0, share=0.98, run="teacher-lora"):
    passes = [{"engine": "hf", "pooled": True, "seconds": 300.0, "start_seconds": None, "segments": 10,
               "new_tokens": 50, "segments_per_s": 10 / 300, "info": {"version": "5.17.0"},
               "averages": {"xx-en": {"chrf++": 40.0}, "en-xx": {"chrf++": 30.0}}},
              {"engine": "vllm", "pooled": True, "seconds": seconds, "start_seconds": 20.0, "segments": 10,
               "new_tokens": 50, "segments_per_s": 10 / seconds, "info": {"version": "0.26.0", "batch_invariant": True},
               "averages": {"xx-en": {"chrf++": 40.1}, "en-xx": {"chrf++": 30.0}}},
              {"engine": "vllm", "pooled": False, "seconds": seconds + 5, "start_seconds": None, "segments": 10,
               "new_tokens": 50, "info": {"version": "0.26.0", "batch_invariant": True}, "averages": {}}]
    return {"notebook": "41_engines", "run": run, "layout": LAYOUT, "metrics": {},
            "params": {"model_id": "m", "max_new_tokens": 256}, "environment": {"device": {"name": "GPU"}},
            "engines": {"reference": "hf", "passes": passes,
                        "agreement": {"vllm": {"share": 0.6, "identical": 6, "segments": 10,
                                               "chrf++": {"delta": 0.1, "ci_low": -0.2, "ci_high": 0.3,
                                                          "n_samples": 1000}}},
                        "rerun": {"engine": "vllm", "share": share, "segments": 10,
                                  "per_direction": {"de-en": 1.0, "en-is": share}}}}


def by_id(rows):
    return {r["id"]: r for r in rows}


def test_every_target_is_listed_and_absent_ones_are_null():
    rows = T.targets_data([])
    assert [r["id"] for r in rows] == [t[0] for t in T.TARGETS] + [t[0] for t in T.COMPUTED]
    assert {"fp16-floor", "w4-decode", "fp8-decode", "int8-decode", "nf4-decode", "sparse24-prefill",
            "eval-throughput", "identical-rerun"} <= set(by_id(rows))
    assert all(r["measured"] is None and r["met"] is None and r["record"] is None for r in rows)
    assert set(rows[0]) == {"id", "target", "goal", "measured", "met", "record", "figure", "stale", "why"}
    assert all(r["why"] for r in rows)


def test_values_come_from_the_first_record_that_measured_them():
    vllm = bench_record("llama2-7b-vllm-fp8", [
        {"variant": "vllm-fp16", "status": "ok", "floor_ratio": 1.5, "decode_b1_ratio": 1.0},
        {"variant": "vllm-fp8", "status": "ok", "decode_b1_ratio": 0.5, "kernel": "vllm 0.26.0 Fp8LinearMethod/K"}])
    hf = bench_record("llama2-7b-gptq-w4", [
        {"variant": "fp16", "status": "ok", "graph_floor_ratio": 2.0},
        {"variant": "gptq-w4", "status": "ok", "graph_b1_ratio": 0.8}])
    failed = bench_record("llama2-7b-vllm-gptq-w4", [
        {"variant": "vllm-fp16", "status": "ok", "floor_ratio": 1.4},
        {"variant": "vllm-gptq-w4", "status": "failed", "decode_b1_ratio": 0.1}])
    old = bench_record("llama2-7b", [{"variant": "fp16", "status": "ok"},
                                     {"variant": "sparse-2of4", "status": "ok", "prefill_speedup": 0.05}], layout=1)
    rows = by_id(T.targets_data([vllm, hf, failed, old, engines_record()]))
    assert rows["fp16-floor"]["measured"] == 1.5 and rows["fp16-floor"]["met"] is False  # vLLM's fp8 record first
    assert rows["fp8-decode"]["measured"] == 0.5 and rows["fp8-decode"]["met"] is True
    assert rows["fp8-decode"]["figure"].endswith("(vllm 0.26.0 Fp8LinearMethod/K)")  # the kernel vLLM picked
    # a failed row is not a measurement: the transformers path's figure is read instead
    assert rows["w4-decode"]["measured"] == 0.8 and rows["w4-decode"]["record"] == "40_efficiency_7b/llama2-7b-gptq-w4.json"
    assert rows["sparse24-prefill"]["measured"] == 0.05 and rows["sparse24-prefill"]["stale"] is True
    assert rows["eval-throughput"]["measured"] == 40.0 and rows["eval-throughput"]["met"] is True
    assert rows["identical-rerun"]["measured"] == 0.98 and rows["identical-rerun"]["met"] is False
    assert rows["int8-decode"]["met"] is None
    table = T.targets_table(list(rows.values()))
    assert "not measured" in table and "not met" in table and "§" in table


def test_text_says_met_not_met_and_absent(tmp_path):
    rows = T.targets_data([engines_record(share=1.0)])
    write_json(rows, tmp_path / "targets.json")
    text = T.text_targets(SimpleNamespace(tables=tmp_path))
    assert text.startswith(f"Of the {len(rows)} targets, met: ")
    assert "`identical-rerun`" in text and "not measured yet: " in text


def test_the_determinism_run_comes_first_for_the_rerun_and_second_for_the_time():
    det = engines_record(seconds=45.0, share=1.0, run="teacher-lora-vllm")
    rows = by_id(T.targets_data([engines_record(), det]))
    assert rows["identical-rerun"]["measured"] == 1.0 and rows["identical-rerun"]["met"] is True
    assert rows["identical-rerun"]["record"] == "41_engines/teacher-lora-vllm.json"
    assert rows["eval-throughput"]["measured"] == 40.0  # the record with hf beside it
    assert by_id(T.targets_data([det]))["eval-throughput"]["measured"] == 45.0


def test_the_engines_report_tells_the_repeat_from_the_rerun(tmp_path):
    rec = engines_record()
    again = dict(rec["engines"]["passes"][1], seconds=41.0)
    rec["engines"]["passes"].insert(2, again)
    rec["engines"]["passes"][3]["info"] = {"version": "0.26.0", "batch_invariant": True,
                                          "kwargs": {"enable_chunked_prefill": False}}
    rec["engines"]["repeat"] = {"engine": "vllm", "share": 0.995, "segments": 10, "per_direction": {}}
    data = ER.engines_data([rec])
    assert [p["kind"] for p in data[0]["passes"]] == ["first", "first", "repeat", "rerun"]
    assert "all directions, again" in ER.engines_table(data)
    write_json(data, tmp_path / "engines.json")
    text = ER.text_engines(SimpleNamespace(tables=tmp_path))
    assert "in 40.0 s" in text  # the agreement reads the first pooled pass, not the repeat
    assert "repeated 99.50%" in text and "every prompt prefilled whole" in text


def test_the_engines_report_reads_every_pass(tmp_path):
    data = ER.engines_data([engines_record()])
    assert len(data) == 1 and [p["engine"] for p in data[0]["passes"]] == ["hf", "vllm", "vllm"]
    table = ER.engines_table(data)
    assert table.count("\n| 41_engines/teacher-lora") == 3 and "each direction alone" in table
    write_json(data, tmp_path / "engines.json")
    text = ER.text_engines(SimpleNamespace(tables=tmp_path))
    assert "300.0 s" in text and "7.50× faster" in text and "within noise" in text and "98.00%" in text
    assert ER.text_engines(SimpleNamespace(tables=tmp_path / "none")).startswith("The engines have not")


def test_computed_targets_from_synthetic_records():
    teacher = make("01_teacher", TEACHER, noise=0.2, params={"n_test": None})
    for d, m in teacher["metrics"].items():
        m["runaway_rate"] = 0.01 if d != "de-en" else 0.03
    nf4 = make("11_bnb_nf4", "teacher-lora-nf4", noise=0.4)
    wanda = make("20_wanda", "teacher-lora-wanda50", n=10)  # other segments: no retention
    student = make("31_model_a", "teacher-nf4-qlora", noise=0.3, params={"seed": 1})
    rows = by_id(T.targets_data([teacher, nf4, wanda, student]))
    assert rows["teacher-runaway-max"]["measured"] == 0.03 and rows["teacher-runaway-max"]["met"] is False
    assert rows["teacher-xx-en-chrf++"]["measured"] == teacher["averages"]["xx-en"]["chrf++"]
    ratios = [nf4["metrics"][d]["chrf++"] / teacher["metrics"][d]["chrf++"] for d in nf4["metrics"]]
    assert abs(rows["nf4-retention"]["measured"] - sum(ratios) / len(ratios)) < 1e-12
    assert rows["nf4-retention"]["record"] == "11_bnb_nf4/teacher-lora-nf4.json"
    assert rows["wanda50-retention"]["measured"] is None and "differ" in rows["wanda50-retention"]["why"]
    assert rows["awq-w4-retention"]["why"] == "no AWQ record with translation scores"
    assert rows["wmt24-rank-spearman"]["why"] == "no WMT24 record"
    assert rows["model-a-retention"]["measured"] is not None


def test_teacher_scores_need_a_full_size_record_and_rates_their_key():
    teacher = make("01_teacher", TEACHER, params={"n_test": 200})
    rows = by_id(T.targets_data([teacher]))
    assert rows["teacher-en-xx-chrf++"]["measured"] is None and "full-size" in rows["teacher-en-xx-chrf++"]["why"]
    assert rows["teacher-runaway-max"]["why"] == "no record of the reference teacher carries failure rates"
    assert rows["nf4-retention"]["why"] == "no NF4 record with translation scores"
    table = T.targets_table(list(rows.values()))
    assert "— (no record of the reference teacher carries failure rates)" in table


def test_teacher_targets_fall_back_to_a_full_size_record_of_its_saved_model():
    teacher = make("01_teacher", TEACHER, params={"n_test": 200})
    full = engines_record(run="teacher-lora-vllm")
    full["params"].update(model_id=f"results/artifacts/01_teacher/{TEACHER}", n_test=None)
    full["engines"]["passes"][0]["metrics"] = {"de-en": {"runaway_rate": 0.01}, "en-is": {"runaway_rate": 0.5}}
    recipe = engines_record(run="teacher-lora-gguf")  # the same model with a recipe is not the teacher
    recipe["params"].update(model_id=f"results/artifacts/01_teacher/{TEACHER}", n_test=None, recipe=[{"method": "x"}])
    rows = by_id(T.targets_data([teacher, recipe, full]))
    for tid, value in (("teacher-xx-en-chrf++", 40.0), ("teacher-en-xx-chrf++", 30.0), ("teacher-runaway-max", 0.5)):
        assert rows[tid]["measured"] == value and rows[tid]["record"] == "41_engines/teacher-lora-vllm.json"
        assert "all segments (its saved model decoded by hf 5.17.0)" in rows[tid]["figure"]
    sample = by_id(T.targets_data([teacher, recipe]))
    assert "full-size" in sample["teacher-xx-en-chrf++"]["why"]


def test_student_seeds_and_storage_share_from_synthetic_students():
    teacher = make("01_teacher", TEACHER, efficiency={"storage_bytes": 1000})
    student = {"student": {"storage_bytes": {"base_nf4": 300, "adapter": 20}}}
    recs = [teacher, *(make("32_model_b", f"middle8-nf4-qlora{'-s' + str(s) if s else ''}", params={"seed": s},
                            extra=student) for s in (0, 1)),
            make("31_model_a", "teacher-nf4-qlora", params={"seed": 0}, extra=student)]
    recs[1]["run"] = "middle8-nf4-qlora"
    rows = by_id(T.targets_data(recs))
    assert rows["student-seeds"]["measured"] == 1 and rows["student-seeds"]["met"] is False  # model A: one seed
    assert rows["student-seeds"]["record"] == "31_model_a/teacher-nf4-qlora.json"
    assert abs(rows["model-b-storage-share"]["measured"] - 0.32) < 1e-12
    rows = by_id(T.targets_data(recs[:3]))
    assert rows["student-seeds"]["measured"] == 2


def test_student_targets_read_the_setting_its_sweep_keeps_on_dev_over_its_seeds():
    """Once Model B's sweep on the reference teacher has records, its targets are the mean over the seeds of the
    learning rate kept on dev (test scores play no part); before, the older single run, saying the sweep has none."""
    teacher = make("01_teacher", TEACHER, efficiency={"storage_bytes": 1000})
    older = make("32_model_b", "middle8-nf4-qlora", extra={"student": {"storage_bytes": {"base_nf4": 700, "adapter": 0}}})
    parent = T.MODEL_B_SWEEP[1]

    def setting(lr, seed, dev, noise, base):
        return make("32_model_b", f"{parent}-lr{lr}-seed{seed}", noise=noise, params={"seed": seed},
                    sweep={"parent": parent, "axes": {"learning_rate": lr, "seed": seed}},
                    extra={"training": {"dev_selection": {"best_score": dev, "best_step": 5, "planned_steps": 10,
                                                          "stopped_early": True, "metric": "chrf++"}},
                           "student": {"storage_bytes": {"base_nf4": base, "adapter": 10}}})
    kept = [setting(5e-05, s, dev=31.0 + s, noise=0.35, base=590) for s in (0, 1)]
    other = [setting(0.0002, s, dev=29.0, noise=0.1, base=590) for s in (0, 1)]  # better on test, worse on dev
    before = by_id(T.targets_data([teacher, older]))
    assert before["model-b-storage-share"]["measured"] == 0.7
    assert f"{parent} has no record yet" in before["model-b-storage-share"]["figure"]
    rows = by_id(T.targets_data([teacher, older, *other, *kept]))
    share = rows["model-b-storage-share"]
    assert share["measured"] == 0.6 and share["record"] == f"32_model_b/{kept[0]['run']}.json"
    assert "mean over 2 seeds" in share["figure"] and "learning_rate 5e-05" in share["figure"]
    expected = [sum(r["metrics"][d]["chrf++"] / teacher["metrics"][d]["chrf++"] for d in r["metrics"]) / len(r["metrics"])
                for r in kept]
    assert abs(rows["model-b-retention"]["measured"] - sum(expected) / 2) < 1e-12


def _full_teacher(lr: float, dev: float, noise: float) -> dict:
    rec = make("01_teacher", f"gemma3-270m-full-dev-lr{lr}", family="teacher", noise=noise, params={"n_test": None},
               sweep={"parent": "gemma3-270m-full-dev", "axes": {"learning_rate": lr}},
               extra={"training": {"dev_selection": {"best_score": dev, "best_step": 10, "planned_steps": 10,
                                                     "stopped_early": False, "metric": "chrf++", "dev": {"n": 20}}}})
    for i, d in enumerate(rec["metrics"]):
        rec["metrics"][d]["runaway_rate"] = 0.01 * i
    return rec


def test_teacher_targets_read_the_full_fine_tuned_teacher_kept_on_dev():
    """The reference teacher of the targets is the full fine-tuned one whose setting has the best dev score (test
    scores play no part), once its sweep has a full-size record; the LoRA teacher's stay the retention reference."""
    lora = make("01_teacher", TEACHER, params={"n_test": 200})
    worse_on_dev = _full_teacher(5e-05, dev=30.0, noise=0.1)  # better on test, worse on dev: not kept
    kept = _full_teacher(0.0001, dev=32.0, noise=0.4)
    rows = by_id(T.targets_data([lora, worse_on_dev, kept]))
    for tid, group in (("teacher-xx-en-chrf++", "xx-en"), ("teacher-en-xx-chrf++", "en-xx")):
        assert rows[tid]["record"] == f"01_teacher/{kept['run']}.json"
        assert rows[tid]["measured"] == kept["averages"][group]["chrf++"]
        assert "the full fine-tuned teacher kept on dev, of 2 settings recorded" in rows[tid]["figure"]
    assert rows["teacher-runaway-max"]["record"] == f"01_teacher/{kept['run']}.json"
    assert rows["teacher-runaway-max"]["measured"] == max(m["runaway_rate"] for m in kept["metrics"].values())
    sampled = _full_teacher(0.0001, dev=32.0, noise=0.4)
    sampled["params"]["n_test"] = 200  # a sample is not every test segment: the LoRA teacher's records stand
    assert "full-size" in by_id(T.targets_data([lora, sampled]))["teacher-xx-en-chrf++"]["why"]


def test_retention_is_against_the_teacher_the_record_was_made_from():
    """A method run on the full fine-tuned teacher is set against that teacher; one on the LoRA teacher against the
    LoRA teacher (their segments differ: 200 against every one), and the full teacher's record is read first."""
    lora = make("01_teacher", TEACHER, n=10, params={"n_test": 10})
    kept = _full_teacher(0.0001, dev=32.0, noise=0.2)
    full_model = f"results/artifacts/01_teacher/{kept['run']}/merged"
    on_lora = make("11_bnb_nf4", "teacher-lora-nf4", noise=0.4, n=10,
                   params={"model_id": "results/artifacts/01_teacher/gemma3-270m-lora"})
    on_full = make("11_bnb_nf4", "teacher-full-nf4", noise=0.5, params={"model_id": full_model, "n_test": None})
    assert T.teacher_of(on_full, {"01_teacher/" + kept["run"]: kept})["run"] == kept["run"]
    assert T.teacher_of(on_lora, {"01_teacher/" + TEACHER: lora})["run"] == TEACHER
    alone = by_id(T.targets_data([lora, kept, on_lora]))["nf4-retention"]
    assert alone["record"] == "11_bnb_nf4/teacher-lora-nf4.json" and alone["measured"] is not None
    both = by_id(T.targets_data([lora, kept, on_lora, on_full]))["nf4-retention"]
    ratios = [on_full["metrics"][d]["chrf++"] / kept["metrics"][d]["chrf++"] for d in on_full["metrics"]]
    assert both["record"] == "11_bnb_nf4/teacher-full-nf4.json"
    assert abs(both["measured"] - sum(ratios) / len(ratios)) < 1e-12


def test_retention_and_teacher_targets_compare_like_decodings_only():
    """The teacher's own evaluation came before its decoding was chosen on dev; a method decoded with the chosen
    repetition penalty is set against the teacher's 00_baseline run with that choice, and against no other record."""
    lora = make("01_teacher", TEACHER, n=10, params={"n_test": 10})
    kept = _full_teacher(0.0001, dev=32.0, noise=0.2)
    artifact = f"results/artifacts/01_teacher/{kept['run']}/merged"
    chosen = {"model_id": artifact, "n_test": None, "repetition_penalty": 1.1,
              "decoding_record": f"02_decoding/{kept['run']}.json"}
    on_full = make("11_bnb_nf4", "teacher-full-nf4", noise=0.5, params=chosen)
    absent = by_id(T.targets_data([lora, kept, on_full]))["nf4-retention"]
    assert absent["measured"] is None and "repetition_penalty 1.1" in absent["why"] and "repetition_penalty 1.0" in absent["why"]
    on_lora = make("11_bnb_nf4", "teacher-lora-nf4", noise=0.4, n=10,
                   params={"model_id": "results/artifacts/01_teacher/gemma3-270m-lora"})
    later = by_id(T.targets_data([lora, kept, on_full, on_lora]))["nf4-retention"]
    assert later["record"] == "11_bnb_nf4/teacher-lora-nf4.json" and later["measured"] is not None
    assert "not read: 11_bnb_nf4/teacher-full-nf4: decoded with repetition_penalty 1.1" in later["figure"]
    again = make("00_baseline", kept["run"], noise=0.25, params=chosen)
    for d in again["metrics"]:
        again["metrics"][d]["runaway_rate"] = 0.0
    by_key = {"01_teacher/" + kept["run"]: kept, "00_baseline/" + kept["run"]: again}
    assert T.teacher_of(on_full, by_key) is again
    rows = by_id(T.targets_data([lora, kept, again, on_full]))
    ratios = [on_full["metrics"][d]["chrf++"] / again["metrics"][d]["chrf++"] for d in on_full["metrics"]]
    assert abs(rows["nf4-retention"]["measured"] - sum(ratios) / len(ratios)) < 1e-12
    for tid, group in (("teacher-xx-en-chrf++", "xx-en"), ("teacher-en-xx-chrf++", "en-xx")):
        assert rows[tid]["record"] == f"00_baseline/{kept['run']}.json"
        assert rows[tid]["measured"] == again["averages"][group]["chrf++"]
        assert "decoded with the choice of 02_decoding/" in rows[tid]["figure"]
    assert rows["teacher-runaway-max"]["record"] == f"00_baseline/{kept['run']}.json"
    assert rows["teacher-runaway-max"]["measured"] == 0.0


def test_wmt24_rank_correlation_reads_runs_that_decoded_wmt24_beside_wmt22():
    """Each run with ``also_tests`` (params also_test: [wmt24]) gives a pair of en→xx chrF++ scores; ranks that agree
    give 1, reversed ones -1; fewer than three runs give none."""
    runs = [make("11_bnb_nf4", f"run{i}", noise=0.1 * (i + 1)) for i in range(3)]

    def with_wmt24(scores):
        for r, s in zip(runs, scores):
            r["also_tests"] = {"wmt24": {"metrics": {}, "averages": {"en-xx": {"chrf++": s}}}}
        return by_id(T.targets_data(runs))["wmt24-rank-spearman"]

    wmt22 = [r["averages"]["en-xx"]["chrf++"] for r in runs]
    order = sorted(range(3), key=lambda i: wmt22[i])
    agree = [0.0] * 3
    for rank, i in enumerate(order):
        agree[i] = 10.0 + rank
    assert with_wmt24(agree)["measured"] == 1.0
    assert with_wmt24([20.0 - a for a in agree])["measured"] == -1.0
    runs.pop()
    assert "2 methods" in with_wmt24(agree[:2])["why"]
