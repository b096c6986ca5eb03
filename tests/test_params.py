import pytest

from studylib.core.params import BaselineParams, ParamsError, TeacherParams, check_overrides


def test_defaults_are_the_smoke_profile():
    cfg = BaselineParams()
    assert cfg.profile == "smoke" and cfg.model_id == "tiny-gemma3"
    assert len(cfg.directions) == 10


@pytest.mark.parametrize("key,value,message", [
    ("profile", "quick", "profile"),
    ("directions", ["de-fr"], "unknown directions"),
    ("n_test", 0, "n_test"),
    ("prompt_style", "chat", "prompt_style"),
    ("shots", 7, "shots"),
    ("metrics", ["bleu", "ter"], "metrics"),
    ("metrics", ["comet"], "comet_checkpoint"),
    ("dtype", "int4", "dtype"),
    ("model_id", "not a model", "offline default"),
    ("run_name", "../x", "run_name"),
    ("batch_size", 1.5, "batch_size"),
])
def test_bad_values_are_one_clear_error(key, value, message):
    with pytest.raises(ParamsError, match=message):
        check_overrides("00_baseline", {key: value})


def test_unknown_key_names_the_declared_ones():
    with pytest.raises(ParamsError, match="does not declare learning_rate.*declares: profile"):
        check_overrides("00_baseline", {"learning_rate": 1e-4})
    with pytest.raises(ParamsError, match="unknown notebook"):  # no such notebook file
        check_overrides("99_nothing", {})


def test_teacher_checks():
    assert check_overrides("01_teacher", {"method": "lora"}).method == "lora"
    for key, value in [("method", "qlora"), ("learning_rate", 2), ("epochs", 0), ("prompt_style", "alma-fewshot"),
                       ("lora_dropout", 1.0), ("baseline_record", "x.json")]:
        with pytest.raises(ParamsError):
            TeacherParams(**{key: value, **({"shots": 3} if key == "prompt_style" else {})})


def test_from_namespace_takes_only_declared_names():
    ns = {"model_id": "tiny-gemma3", "n_test": 2, "unrelated": 1, "__name__": "x"}
    cfg = BaselineParams.from_namespace(ns)
    assert cfg.n_test == 2 and cfg.as_dict()["n_test"] == 2


def test_student_and_kd_checks():
    from studylib.core.params import KDParams, ModelBParams, OODSweepParams, StudentParams

    assert StudentParams().qlora_r == 64 and StudentParams().rslora  # the paper's QLoRA defaults
    for cls, kwargs, message in [
        (StudentParams, {"qlora_r": 0}, "qlora_r"),
        (StudentParams, {"ood_total": -1}, "ood_total"),
        (StudentParams, {"kd_data": "kd.txt"}, "kd_data"),
        (StudentParams, {"prune_recipe": [{"method": "nope"}]}, "unknown method"),
        (ModelBParams, {"prune_recipe": []}, "pruned student"),
        (OODSweepParams, {"ood_sizes": [-5]}, "ood_sizes"),
        (KDParams, {"kd_per_direction": 0}, "kd_per_direction"),
    ]:
        with pytest.raises(ParamsError, match=message):
            cls(**kwargs)
