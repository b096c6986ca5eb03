import pytest
import torch

from studylib.core import data, leakage, models, prompts, training

PAIRS = [(f"Translate this from German to English:\nGerman: Satz {i}\nEnglish:", f" Sentence {i}\n") for i in range(12)]


def test_prompt_is_masked_and_target_learned(tiny):
    _, tok = tiny
    encoded, skipped = training.encode_pairs(tok, PAIRS[:1], max_length=128)
    ids, labels = encoded[0]
    n_prompt = len(tok(PAIRS[0][0])["input_ids"])
    assert skipped == 0 and len(ids) == len(labels)
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and len(labels) > n_prompt


def test_too_long_prompts_are_skipped(tiny):
    _, tok = tiny
    encoded, skipped = training.encode_pairs(tok, PAIRS[:3], max_length=8)
    assert skipped == 3 and encoded == []


def test_full_finetuning_lowers_the_loss(tmp_path):
    from studylib.core import models

    model, tok = models.load_model("tiny-gemma3", "float32", "cpu")
    result = training.finetune(model, tok, PAIRS, epochs=3, learning_rate=3e-3, batch_size=4, seed=0,
                               progress=False, log_every=1)
    log = result.losses
    assert result.steps == 9 and len(log) == 9
    assert log[-1][1] < 0.8 * log[0][1]
    assert result.trainable_params == result.total_params
    out = training.save_teacher(result.model, tok, tmp_path / "teacher")
    assert (out / "merged" / "model.safetensors").exists() and not (out / "adapter").exists()


def test_lora_trains_only_adapters_and_saves_both(tmp_path):
    from studylib.core import models

    model, tok = models.load_model("tiny-gemma3", "float32", "cpu")
    model = training.add_lora(model, r=4, alpha=8, dropout=0.0)
    result = training.finetune(model, tok, PAIRS, epochs=2, learning_rate=1e-2, batch_size=4, progress=False,
                               log_every=1)
    assert 0 < result.summary()["trainable_share"] < 0.5
    assert result.losses[-1][1] < result.losses[0][1]
    out = training.save_teacher(result.model, tok, tmp_path / "t", base_model_id="tiny-gemma3")
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "merged" / "config.json").exists()
    merged, _ = models.load_model(str(out / "merged"), "float32", "cpu")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    # the adapter alone rebuilds the same model from the base it names
    assert models.model_kind(str(out / "adapter")) == "adapter"
    rebuilt, rtok = models.load_model(str(out / "adapter"), "float32", "cpu")
    sd_a, sd_b = merged.state_dict(), rebuilt.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.allclose(sd_a[k], sd_b[k], atol=1e-6) for k in sd_a)


def test_fractional_epochs_and_errors(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="no training pairs"):
        training.finetune(model, tok, [], progress=False)


def test_max_steps_trains_that_many_steps_whatever_the_datas_size():
    """The out-of-domain sweep at a fixed number of steps: 12 pairs and 4 pairs, batch 4, both train 7 steps (the
    small set passes over its data 7 times, the large one 7/3 times)."""
    model, tok = models.load_model("tiny-gemma3", "float32", "cpu")  # its own: training changes it in place
    big = training.finetune(model, tok, PAIRS, max_steps=7, learning_rate=1e-4, batch_size=4, progress=False)
    small = training.finetune(model, tok, PAIRS[:4], max_steps=7, learning_rate=1e-4, batch_size=4, progress=False)
    assert big.steps == small.steps == 7
    assert small.passes == pytest.approx(7.0) and big.passes == pytest.approx(7 / 3)
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        training.finetune(model, tok, PAIRS, max_steps=0, progress=False)


def test_teacher_training_data_is_disjoint_from_every_test_set(data_root):
    """What 01_teacher does: ALMA train minus any pair sharing a sentence with a test set, then asserted."""
    train = [ex for d in ("de-en", "en-ru", "ru-en") for ex in data.load_split("alma", d, "train", root=data_root)]
    pool = leakage.test_sentences(root=data_root)
    kept, dropped = leakage.drop_test_overlap(train, pool)
    assert dropped > 0  # ALMA's train data does share a few short sentences ("So what?") with WMT22
    leakage.assert_no_test_overlap(kept, pool, purpose="teacher training")
    with pytest.raises(leakage.DataLeakError):
        leakage.assert_no_test_overlap(train, pool, purpose="teacher training")
    p, t = prompts.training_text(kept[0], "alma")
    assert p.endswith("English:") and t.endswith("\n")


def test_progress_bar_counts_optimizer_steps(monkeypatch):
    """The fine-tuning bar knows the total number of optimizer steps (so tqdm shows an ETA) and reaches it."""
    from studylib.core import models

    bars = []

    class Bar:
        def __init__(self, total=None, desc=None, disable=False, unit="it", **kwargs):
            self.total, self.unit, self.disable, self.n = total, unit, disable, 0
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def set_postfix(self, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setattr(training, "tqdm", Bar)
    model, tok = models.load_model("tiny-gemma3", "float32", "cpu")
    result = training.finetune(model, tok, PAIRS, epochs=1, batch_size=4, grad_accum=2, learning_rate=1e-3)
    (bar,) = bars
    assert (bar.total, bar.unit, bar.disable) == (result.steps, "step", False) == (2, "step", False)
    assert bar.n == bar.total


def test_early_stopping_keeps_the_best_dev_score_and_stops_when_patience_runs_out():
    from studylib.core import models

    model, tok = models.load_model("tiny-gemma3", "float32", "cpu")
    scores, seen = iter([1.0, 3.0, 2.0, 2.5, 9.0]), []

    def score(m):
        assert not m.training  # scored in eval mode, trained on after
        seen.append({n: p.detach().clone() for n, p in m.named_parameters()})
        return next(scores)

    dev = training.DevSelection(score, every=1, patience=2, what={"metric": "chrf++"})
    result = training.finetune(model, tok, PAIRS, epochs=3, learning_rate=3e-3, batch_size=4, seed=0,
                               progress=False, dev=dev)
    got = result.summary()["dev_selection"]
    assert result.steps == 4 and got["planned_steps"] == 9 and got["stopped_early"]
    assert got["curve"] == [(1, 1.0), (2, 3.0), (3, 2.0), (4, 2.5)] and got["best_step"] == 2
    assert got["best_score"] == 3.0 and got["metric"] == "chrf++" and got["patience"] == 2
    assert all(torch.equal(p, seen[1][n]) for n, p in model.named_parameters())  # step 2's weights came back
    assert not all(torch.equal(p, seen[3][n]) for n, p in model.named_parameters())


def test_the_last_planned_step_is_always_scored_and_ties_keep_the_first():
    model, tok = models.load_model("tiny-gemma3", "float32", "cpu")  # its own: training changes it in place
    dev = training.DevSelection(lambda m: 1.0, every=4, patience=2)
    result = training.finetune(model, tok, PAIRS, epochs=3, learning_rate=1e-4, batch_size=4, progress=False,
                               dev=dev)
    got = result.dev
    assert result.steps == 9 and [s for s, _ in got["curve"]] == [4, 8, 9] and got["best_step"] == 4
    assert not got["stopped_early"]  # patience ran out at the last planned step: nothing was cut
    # equal scores are no gain: the first of them is kept
    assert training.finetune(model, tok, PAIRS, epochs=1, batch_size=4, progress=False).summary()["dev_selection"] is None
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="every"):
            training.DevSelection(lambda m: 0.0, every=bad)
    with pytest.raises(ValueError, match="patience"):
        training.DevSelection(lambda m: 0.0, every=1, patience=0)


def _trained(seed=0):
    model, tok = models.load_model("tiny-gemma3", "float32", "cpu")
    return training.finetune(model, tok, PAIRS, epochs=1, learning_rate=3e-3, batch_size=4, seed=seed,
                             progress=False, log_every=1)


def test_training_again_makes_the_same_weights_and_the_digest_says_so():
    first, again, other = _trained(0), _trained(0), _trained(1)
    digest = training.weights_digest(first.model)
    assert digest == training.weights_digest(again.model) and first.losses == again.losses
    assert digest != training.weights_digest(other.model)
    with torch.no_grad():
        next(first.model.parameters()).view(-1)[0] += 1e-6
    assert training.weights_digest(first.model) != digest


def test_a_teacher_made_again_keeps_its_committed_record_and_nothing_else_does(tmp_path):
    import json

    from studylib.core import records
    from studylib.runs import teacher
    from studylib.runs.teacher import TeacherParams

    cfg = TeacherParams(results_dir=str(tmp_path))
    trained = {"steps": 3, "final_loss": 1.25, "loss_log": [[1, 2.5], [3, 1.25]], "seconds": 9.0,
               "dev_selection": {"best_step": 3, "curve": [[3, 30.1]]}}
    assert teacher.remade(cfg, trained, "d1") is None  # no record yet
    rec = {"notebook": "01_teacher", "run": cfg.run_name, "layout": records.LAYOUT, "params": cfg.as_dict(),
           "training": {**trained, "seconds": 12.0, "dev_selection": {"best_step": 3, "curve": [[3, 30.4]]}}}
    path = records.record_path("01_teacher", cfg.run_name, tmp_path)
    path.parent.mkdir(parents=True)

    def kept(record, training_now=trained, digest="d1"):
        path.write_text(json.dumps(record, default=str))
        return teacher.remade(cfg, training_now, digest)

    assert kept(rec)["run"] == cfg.run_name  # same trajectory, same step kept: dev scores and times may move
    assert kept(rec, {**trained, "loss_log": [[1, 2.5], [3, 1.2500001]]}) is None
    assert kept(rec, {**trained, "dev_selection": {"best_step": 1}}) is None
    assert kept({**rec, "params": {**rec["params"], "learning_rate": 5.0}}) is None
    assert kept({**rec, "layout": records.LAYOUT - 1}) is None
    assert kept({**rec, "weights_sha256": "d1"}) is not None  # the digest decides where the record has one
    assert kept({**rec, "weights_sha256": "d0"}) is None
    assert kept({**rec, "training": {}}) is None  # nothing to compare: evaluate again
