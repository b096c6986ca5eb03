import pytest

from studylib.runs.params import ParamsError, read_spec, setting_name
from studylib.runs.baseline import BaselineParams
from studylib.runs.teacher import TeacherParams


def test_defaults_are_the_smoke_profile():
    cfg = BaselineParams.load()
    assert cfg.profile == "smoke" and cfg.model_id == "tiny-gemma3"
    assert len(cfg.directions) == 10 and cfg.sweep is None


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
    with pytest.raises(ParamsError, match=message) as err:
        BaselineParams.build({key: value}, "somewhere.yaml")
    assert str(err.value).startswith("somewhere.yaml: ") and "\n" not in str(err.value)


def test_unknown_key_is_named_with_the_closest_parameter():
    with pytest.raises(ParamsError, match="'batch_sise' is not a parameter of 00_baseline; did you mean 'batch_size'"):
        BaselineParams.build({"batch_sise": 4}, "p.yaml")
    with pytest.raises(ParamsError, match="'zzz' is not a parameter of 00_baseline$"):
        BaselineParams.build({"zzz": 1}, "p.yaml")


def test_teacher_checks():
    assert TeacherParams.load(setting={"method": "lora"}).method == "lora"
    for key, value in [("method", "qlora"), ("learning_rate", 2), ("epochs", 0), ("prompt_style", "alma-fewshot"),
                       ("lora_dropout", 1.0), ("baseline_record", "x.json")]:
        with pytest.raises(ParamsError):
            TeacherParams(**{key: value, **({"shots": 3} if key == "prompt_style" else {})})


def test_a_params_file_for_another_notebook_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("notebook: 01_teacher\nparameters: {run_name: r}\n")
    with pytest.raises(ParamsError, match="the file is for notebook 01_teacher"):
        BaselineParams.load(path)
    assert TeacherParams.load(path).run_name == "r" and TeacherParams.load(path).profile == "full"
    assert TeacherParams.load(path, profile="smoke").model_id == "tiny-gemma3"  # smoke: the defaults, same name


def test_a_sweep_file_needs_one_setting_and_names_it(tmp_path):
    from studylib.runs.quantization import CalibrationSizeParams, GPTQBitsParams

    path = tmp_path / "s.yaml"
    path.write_text("notebook: 15_gptq_bits\nparameters: {run_name: t, recipe: [{method: gptq, bits: 4, group_size: 64}]}\n"
                    "sweep: {bits: [2, 8]}\n")
    with pytest.raises(ParamsError, match=r"declares a sweep over bits: give one setting of it, e.g. setting = \{'bits': 2\}"):
        GPTQBitsParams.load(path)
    cfg = GPTQBitsParams.load(path, {"bits": 8})
    assert cfg.run_name == "t-bits8" and cfg.recipe == [{"method": "gptq", "bits": 8, "group_size": 64}]
    assert cfg.sweep == {"parent": "t", "axes": {"bits": 8}} and cfg.identity()["family"] == "quantization"
    assert read_spec(path).settings("full") == [{"bits": 2}, {"bits": 8}]
    assert read_spec(path).settings("smoke") == [{"bits": 2}, {"bits": 4}]  # the class's SMOKE_SWEEP
    calib = CalibrationSizeParams.load(setting={"calib_per_direction": 3})
    assert calib.run_name == "smoke-calib3" and calib.calib_per_direction == 3


def test_run_names_of_settings():
    assert setting_name("t", {"strategy": "iterative", "depth": 4, "stage": "after"}) == "t-iterative-d4-after"
    assert setting_name("m", {"ood_total": 1000}) == "m-ood1000"
    assert setting_name("g", {"calib_per_direction": 8}) == "g-calib8"


def test_student_and_kd_checks():
    from studylib.runs.distillation import KDParams
    from studylib.runs.students import ModelBParams, OODSizeParams, StudentParams

    assert StudentParams().qlora_r == 64 and StudentParams().rslora  # the paper's QLoRA defaults
    for cls, kwargs, message in [
        (StudentParams, {"qlora_r": 0}, "qlora_r"),
        (StudentParams, {"ood_total": -1}, "ood_total"),
        (StudentParams, {"kd_data": "kd.txt"}, "kd_data"),
        (StudentParams, {"prune_recipe": [{"method": "nope"}]}, "unknown method"),
        (ModelBParams, {"prune_recipe": []}, "pruned student"),
        (OODSizeParams, {"ood_total": -5}, "ood_total"),
        (KDParams, {"kd_per_direction": 0}, "kd_per_direction"),
    ]:
        with pytest.raises(ParamsError, match=message):
            cls(**kwargs)


def test_a_runs_seeds_share_their_test_segments(data_root):
    """``seed`` moves training (data order, samples); the test subsample is drawn by ``test_seed``, so the seeds of a
    run are scored on the same segments as each other and as every other run."""
    from studylib.core import evaluation
    from studylib.runs.params import EvalParams

    def srcs(**kw):
        cfg = EvalParams(n_test=5, directions=["de-en", "en-is"], data_dir=str(data_root), **kw)
        return {d: [ex.src for ex in exs] for d, exs in evaluation.load_test_sets(cfg).items()}

    assert srcs(seed=0) == srcs(seed=2)
    assert srcs(test_seed=1) != srcs(test_seed=0)
    with pytest.raises(ParamsError, match="test_seed must be an integer"):
        EvalParams(test_seed="x")


@pytest.mark.parametrize("cls_path", ["studylib.runs.students:StudentParams", "studylib.runs.teacher:TeacherParams"])
def test_early_stopping_on_dev_is_all_or_nothing(cls_path):
    import importlib

    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    ok = cls(dev_per_direction=100, dev_every=50, dev_patience=3)
    assert (ok.dev_per_direction, ok.dev_every, ok.dev_patience) == (100, 50, 3)
    assert cls(dev_per_direction=100, dev_every=50).dev_patience is None  # score to the end, keep the best
    with pytest.raises(ParamsError, match="need dev_per_direction"):
        cls(dev_every=50)
    with pytest.raises(ParamsError, match="dev_every must be a positive integer"):
        cls(dev_per_direction=100)
    with pytest.raises(ParamsError, match="dev_patience"):
        cls(dev_per_direction=100, dev_every=5, dev_patience=0)
