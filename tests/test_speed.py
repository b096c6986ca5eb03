"""42_speed (studylib.runs.speed): one format timed beside the model it is built from, in one process."""

import pytest

from studylib.runs import speed
from studylib.runs.params import ParamsError
from studylib.runs.speed import FORMATS, SpeedParams


def test_every_format_is_a_valid_recipe_and_bad_values_fail_before_any_model_loads():
    for name in FORMATS:
        assert SpeedParams(variant=name).recipe == FORMATS[name]
    with pytest.raises(ParamsError, match="variant must be one of"):
        SpeedParams(variant="int3")
    with pytest.raises(ParamsError, match="leave recipe out"):
        SpeedParams(variant="nf4", recipe=[{"method": "bnb-int8"}])
    with pytest.raises(ParamsError, match="repeats"):
        SpeedParams(repeats=0)


def test_ratios_divide_the_format_by_its_reference():
    ref = {"decode": {"batch1": {"time_per_token_ms": 4.0}, "batch16": {"time_per_token_ms": 8.0}},
           "peak_memory_bytes": 100, "storage_bytes": 200, "params": 10}
    got = {"decode": {"batch1": {"time_per_token_ms": 2.0}, "batch16": {"time_per_token_ms": 10.0}},
           "peak_memory_bytes": 50, "storage_bytes": None, "params": 10}
    assert speed.ratios(ref, got) == {"time_per_token_batch1": 0.5, "time_per_token_batch16": 1.25,
                                      "peak_memory_bytes": 0.5, "params": 1.0}


def test_a_second_reference_reading_is_averaged_into_the_ratio_and_its_drift_recorded():
    ref = {"decode": {"batch1": {"time_per_token_ms": 4.0}, "batch16": {"time_per_token_ms": 8.0}}}
    after = {"decode": {"batch1": {"time_per_token_ms": 6.0}, "batch16": {"time_per_token_ms": 8.0}}}
    got = {"decode": {"batch1": {"time_per_token_ms": 2.5}, "batch16": {"time_per_token_ms": 4.0}}}
    assert speed.reference_ms(ref, after, "batch1") == 5.0 and speed.reference_ms(ref, None, "batch1") == 4.0
    assert speed.ratios(ref, got, after) == {"time_per_token_batch1": 0.5, "time_per_token_batch16": 0.5}
    assert speed.drift(ref, after) == {"time_per_token_batch1": 1.5, "time_per_token_batch16": 1.0}
    assert speed.drift(ref, None) == {}


def test_a_format_is_timed_beside_its_reference_and_recorded(data_root):
    cfg = SpeedParams(variant="wanda-50", data_dir=str(data_root), speed_batch_sizes=[1, 2], speed_new_tokens=2,
                      repeats=1, calib_per_direction=1)
    texts = speed.calibration_texts(cfg)
    assert texts and len(texts) == len(cfg.calib_directions)
    model, tokenizer = speed.load(cfg)
    reference = speed.measure(model, tokenizer, cfg)
    model, described, seconds = speed.build(model, tokenizer, cfg, texts)
    measured = speed.measure(model, tokenizer, cfg, described)
    once = speed.make(cfg, reference, measured, described, seconds)
    with pytest.raises(AssertionError, match="not timed again"):
        speed.check_record(once, cfg)
    model = None
    speed.release()
    model, _ = speed.load(cfg)
    after = speed.measure(model, tokenizer, cfg, storage=False)
    assert after["storage_bytes"] is None and after["nonzero_params"] == reference["nonzero_params"]
    record = speed.make(cfg, reference, measured, described, seconds, after)
    speed.check_record(record, cfg)
    assert set(record["speed"]["drift"]) == {"time_per_token_batch1", "time_per_token_batch2"}
    assert record["what"]["family"] == "efficiency" and record["what"]["method"] == "wanda-50"
    assert record["metrics"] == {} and record["efficiency"]["nonzero_params"] < reference["nonzero_params"]
    assert record["compression"]["seconds"] > 0 and set(record["speed"]["ratios"]) >= {"time_per_token_batch1",
                                                                                      "time_per_token_batch2"}
    assert record["efficiency"]["decode"]["batch1"]["gpu_processes"] is None  # no GPU here


def test_the_reference_alone_needs_no_calibration_and_builds_nothing(data_root):
    cfg = SpeedParams(variant="bf16", data_dir=str(data_root))
    assert speed.calibration_texts(cfg) is None
    model, tokenizer = speed.load(cfg)
    same, described, seconds = speed.build(model, tokenizer, cfg, None)
    assert same is model and described == [] and seconds == 0.0


def _record(variant, ratio, processes=1, ref_ms=10.0, after_ms=None):
    ref = {"decode": {"batch1": {"time_per_token_ms": ref_ms, "gpu_processes": processes}}}
    eff = {"decode": {"batch1": {"time_per_token_ms": ref_ms * ratio, "gpu_processes": processes}}}
    speed_ = {"variant": variant, "reference": ref, "ratios": {"time_per_token_batch1": ratio, "storage_bytes": 0.3}}
    if after_ms:  # timed again after the format (A-B-A); older records hold one reading
        speed_.update(reference_after={"decode": {"batch1": {"time_per_token_ms": after_ms, "gpu_processes": 1}}},
                      drift={"time_per_token_batch1": after_ms / ref_ms},
                      reference_ms={"batch1": (ref_ms + after_ms) / 2})
    return {"notebook": "42_speed", "run": f"teacher-lora-{variant}", "layout": 99, "efficiency": eff,
            "environment": {"device": {"name": "NVIDIA H200"}, "date": "2026-12-07T00:00:00+00:00"},
            "speed": speed_}


def test_the_report_sets_each_format_beside_its_own_reference(tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    from studylib.core import records
    from studylib.report import speed as report

    monkeypatch.setattr(records, "is_stale", lambda rec: False)
    rows = report.speed_data([_record("nf4", 1.4), _record("gptq-w4", 0.8, processes=2),
                              _record("awq-w4", 0.5, ref_ms=10.0, after_ms=11.0), {"notebook": "11_bnb_nf4"}])
    assert [r["variant"] for r in rows] == ["awq-w4", "gptq-w4", "nf4"] and rows[1]["shared"] and not rows[2]["shared"]
    assert rows[0]["batches"]["batch1"]["reference_ms"] == 10.5 and rows[2]["batches"]["batch1"]["drift"] is None
    table = report.speed_table(rows)
    assert "14.00 / 10.00 (1.40×)" in table and "(GPU shared)" in table and report.speed_table([]) == ""
    assert "1.100×" in table and "— (timed once)" in table
    (tmp_path / "speed.json").write_text(json.dumps(rows))
    text = report.text_speed_formats(SimpleNamespace(tables=tmp_path))
    assert "faster: `awq-w4` 0.50× and `gptq-w4` 0.80×" in text and "not faster: `nf4` 1.40×" in text and "shared" in text
    assert "1.100 to 1.100 within its job (1 of 3 jobs" in text


def test_the_sentence_says_how_far_the_reference_moved_between_jobs(tmp_path, monkeypatch):
    """The same bf16 model timed in several jobs reads differently: the text says by how much, from the records."""
    import json
    from types import SimpleNamespace

    from studylib.core import records
    from studylib.report import speed as report

    monkeypatch.setattr(records, "is_stale", lambda rec: False)
    rows = report.speed_data([_record("nf4", 1.4, ref_ms=19.0), _record("int8", 4.3, ref_ms=23.5)])
    (tmp_path / "speed.json").write_text(json.dumps(rows))
    text = report.text_speed_formats(SimpleNamespace(tables=tmp_path))
    assert "read 19.00 to 23.50 ms a token in these 2 jobs" in text
    (tmp_path / "speed.json").write_text(json.dumps(rows[:1]))
    assert "read " not in report.text_speed_formats(SimpleNamespace(tables=tmp_path))
