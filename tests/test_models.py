import pytest

from studylib.core import models


def test_spec_rejects_bad_values_before_loading():
    with pytest.raises(ValueError, match="dtype"):
        models.ModelSpec("tiny-gemma3", dtype="float8")
    with pytest.raises(ValueError, match="device"):
        models.ModelSpec("tiny-gemma3", device="tpu")
    with pytest.raises(models.ModelNotAvailable, match="gemma-3-270m"):
        models.ModelSpec("not a model id at all")


def test_model_kind(tmp_path):
    assert models.model_kind("gemma-3-270m") == "default"
    assert models.model_kind("tiny-gemma3") == "tiny"
    assert models.model_kind("haoranxu/ALMA-7B") == "hub"
    assert models.model_kind(str(tmp_path)) == "local"
    with pytest.raises(models.ModelNotAvailable, match="config.json"):
        models.checkpoint_path(str(tmp_path))


def test_a_training_runs_folder_named_as_a_model_says_where_its_checkpoint_is(tmp_path):
    """A fine-tuning run writes ``<dir>/merged``; naming ``<dir>`` fails at once and names the checkpoint."""
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    with pytest.raises(models.ModelNotAvailable, match=r"a training run's folder: its checkpoint is .*merged"):
        models.checkpoint_path(str(tmp_path))


def test_another_runs_artifact_is_found_where_that_run_wrote_it(monkeypatch, tmp_path):
    """A params-style 'results/artifacts/...' id is read under the results root ($STUDYLIB_RESULTS: the GPU machine's
    /tmp/results), where the run that made it wrote it; one that is not there yet says another run makes it."""
    made = tmp_path / "artifacts" / "01_teacher" / "full-x"
    made.mkdir(parents=True)
    (made / "config.json").write_text("{}")
    monkeypatch.setenv("STUDYLIB_RESULTS", str(tmp_path))
    assert models.model_kind("results/artifacts/01_teacher/full-x") == "local"
    assert models.checkpoint_path("results/artifacts/01_teacher/full-x") == str(made)
    with pytest.raises(models.ModelNotAvailable, match="not there: another run makes it"):
        models.ModelSpec("results/artifacts/01_teacher/not-made-yet")


def test_params_naming_an_artifact_not_made_yet_load_and_fail_only_when_the_model_loads(tmp_path, monkeypatch):
    """The workflow plans a run whose teacher another run makes (a clean clone has no full teacher: git ignores it)."""
    from studylib.runs.params import EvalParams, ParamsError

    monkeypatch.setenv("STUDYLIB_RESULTS", str(tmp_path))
    cfg = EvalParams(model_id="results/artifacts/01_teacher/not-made-yet")
    assert cfg.uses() == ["results/artifacts/01_teacher/not-made-yet"]
    with pytest.raises(ParamsError, match="neither a local checkpoint"):
        EvalParams(model_id="no/such/thing/here")


def test_hub_id_without_hub_fails_at_once_naming_the_offline_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelNotAvailable, match="gemma-3-270m"):
        models.checkpoint_path("haoranxu/ALMA-7B")


def test_hub_id_with_unreachable_hub_names_the_offline_default(monkeypatch, tmp_path):
    import huggingface_hub

    def unreachable(self, *a, **k):
        raise OSError("no route to host")

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(models.ModelNotAvailable, match="offline default model_id='gemma-3-270m'") as err:
        models.checkpoint_path("Unbabel/TowerInstruct-7B-v0.2")
    message = str(err.value)
    assert "\n" not in message and "'Unbabel/TowerInstruct-7B-v0.2'" in message and "no route to host" in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chain of hub-client tracebacks


def test_a_hub_that_never_answers_is_given_up_on_quickly(monkeypatch, tmp_path):
    """A network that swallows packets (the name lookup or the request never returns) must not hold the run."""
    import threading
    import time

    import huggingface_hub

    release = threading.Event()

    def hangs(self, *a, **k):
        release.wait(60)
        raise OSError("released")

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", hangs)
    monkeypatch.setattr(models, "HUB_TIMEOUT_S", 0.5)
    start = time.monotonic()
    try:
        with pytest.raises(models.ModelNotAvailable, match=r"haoranxu/ALMA-7B.*no answer within 0.5 s.*gemma-3-270m"):
            models.checkpoint_path("haoranxu/ALMA-7B")
        assert time.monotonic() - start < 5
    finally:
        release.set()


def test_tiny_model_is_a_gemma3_with_gemma_special_ids(tiny):
    model, tok = tiny
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert tok("hello")["input_ids"][0] == 2  # BOS prepended, like Gemma
    assert tok.padding_side == "left"
    assert model.config.vocab_size == len(tok)


def test_tiny_model_is_deterministic(tmp_path):
    import torch
    from safetensors.torch import load_file

    a = models.build_tiny_model(tmp_path / "a", seed=0)
    b = models.build_tiny_model(tmp_path / "b", seed=0)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_quant_choice_is_checked_before_loading():
    with pytest.raises(ValueError, match="quant"):
        models.load_model("tiny-gemma3", quant="3bit")
