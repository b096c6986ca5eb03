import copy
from pathlib import Path

import pytest

from studylib.core import data, leakage
from studylib.runs import distillation
from standins import HFAsVLLM


def _ex(src, tgt, d="de-en"):
    return data.Example(src, tgt, d)


def test_combine_removes_duplicates_and_counts_each_part():
    human = [_ex("a", "A"), _ex("b", "B")]
    kd = [_ex("a", "A"), _ex("a", "A2"), _ex("c", "C", "en-de")]
    merged, stats = distillation.combine(("human", human), ("kd", kd))
    assert stats == {"duplicates_removed": 1, "human": 2, "kd": 2, "total": 4}
    assert [e.get("origin") for e in merged] == ["human", "human", "kd", "kd"]


def test_teacher_translations_keep_sources_and_direction(tiny):
    model, tok = tiny
    sources = [_ex("Guten Morgen", "Good morning"), _ex("Hello", "Hallo", "en-de")]
    kd = distillation.teacher_translations(model, tok, sources, max_new_tokens=5, progress=False)
    assert all(e.get("origin") == "kd" for e in kd)
    assert [(e.src, e.direction) for e in kd] == [(s.src, s.direction) for s in sources]  # every output, empty too
    assert all(0 <= e.get("new_tokens") <= 5 for e in kd)  # the decoded count, for the runaway filter


def test_an_engine_decodes_every_direction_in_one_pool_as_hf_does(tiny):
    """Through an engine the KD pairs are the HF path's (same prompts, cap, stop), a direction after another, and the
    decoding knobs reach it."""
    model, tok = tiny
    sources = [_ex("Guten Morgen", "Good morning"), _ex("Hello", "Hallo", "en-de"), _ex("Danke", "Thanks")]
    engine = HFAsVLLM(model, tok)
    got = distillation.teacher_translations(model, tok, sources, max_new_tokens=6, progress=False, engine=engine,
                                            repetition_penalty=1.3, seed=4)
    hf = distillation.teacher_translations(model, tok, sources, max_new_tokens=6, progress=False,
                                           repetition_penalty=1.3)
    calls = [(len(c["ids"]), c["repetition_penalty"], c["seed"]) for c in engine.calls]
    assert calls == [(3, 1.3, 4)]  # one pool, the knobs passed on
    key = sorted((e.src, e.direction, e.tgt, e.get("new_tokens")) for e in got)
    assert key == sorted((e.src, e.direction, e.tgt, e.get("new_tokens")) for e in hf)
    assert {(e.src, e.direction) for e in got} == {(s.src, s.direction) for s in sources}


def test_save_and_load_round_trip(tmp_path):
    examples = [_ex("Ä", "ä"), _ex("中文", "Chinese", "zh-en")]
    merged, _ = distillation.combine(("kd", examples))
    path = distillation.save_examples(merged, tmp_path / "kd.jsonl.gz")
    back = distillation.load_examples(path)
    assert [(e.src, e.tgt, e.direction, e.get("origin")) for e in back] == [("Ä", "ä", "de-en", "kd"), ("中文", "Chinese", "zh-en", "kd")]
    with pytest.raises(data.DataError):
        distillation.load_examples(tmp_path / "missing.jsonl")


def test_ood_split_holds_out_a_disjoint_test_slice(data_root):
    pool, test = distillation.ood_split(["de-en", "en-is"], n_test_per_direction=50, root=data_root)
    for d in pool:
        assert len(test[d]) == 50
        leakage.assert_no_test_overlap(pool[d], test[d], purpose="check")
        leakage.assert_no_test_overlap(pool[d] + test[d], leakage.test_sentences(root=data_root), purpose="check")
    sample = distillation.sample_ood(pool, 11, seed=0)
    assert len(sample) == 11 and {e.direction for e in sample} == {"de-en", "en-is"}
    assert distillation.sample_ood(pool, 0) == []
    assert len(distillation.sample_ood(pool, 1)) == 1  # fewer pairs than directions


def test_ood_pools_hold_no_test_pair_of_the_reverse_direction(data_root):
    """A direction and its reverse are the same Tatoeba pairs: en-cs's pool must not hold cs-en's test pairs."""
    pool, test = distillation.ood_split(["cs-en", "en-cs"], n_test_per_direction=200, root=data_root)
    assert len(test["cs-en"]) == len(test["en-cs"]) == 200 and pool["cs-en"] and pool["en-cs"]
    leakage.assert_no_test_overlap(pool["en-cs"] + pool["cs-en"], test["cs-en"] + test["en-cs"], purpose="check")


@pytest.mark.parametrize("params_file, setting", [("31_model_a_teacher-nf4-qlora.yaml", None),
                                                  ("33_ood_size_middle8-nf4-qlora.yaml", {"ood_total": 20000})])
def test_full_size_student_training_sets_pass_the_leak_checks(data_root, params_file, setting):
    """The students' data at the committed params' full size (without the KD pairs, made on the GPU): human +
    out-of-domain pairs disjoint from the WMT and held-out Tatoeba tests, sizes as the params say."""
    import dataclasses

    from studylib.runs.params import read_spec
    from studylib.runs import students

    spec = read_spec(Path(__file__).resolve().parents[1] / "params" / params_file)
    run = dataclasses.replace(spec.params_class().from_spec(spec, setting), kd_data=None)
    examples, counts, ood_test = students.training_set(run, data_root)
    assert run.ood_total - 10 <= counts["ood"] <= run.ood_total  # a few duplicates may go
    assert counts["human"] > 30_000 and len(examples) == counts["total"]
    assert all(len(v) == run.ood_test_per_direction for v in ood_test.values())


def test_a_student_stops_early_on_dev_pairs_shared_with_neither_the_tests_nor_its_training(data_root):
    """Early stopping on dev chrF++: the dev set is built before any model loads, disjoint from every test set and
    from the training pairs, and the record holds the dev curve and the step kept."""
    from studylib.runs import students
    from studylib.runs.students import StudentParams

    cfg = StudentParams(directions=["de-en", "en-de"], train_directions=["de-en", "en-de"], n_test=2,
                        human_per_direction=6, ood_test_per_direction=2, max_steps=3, batch_size=8,
                        max_new_tokens=8, speed_batch_sizes=[1], speed_new_tokens=2, dev_per_direction=2,
                        dev_every=1, dev_patience=2, data_dir=str(data_root))
    record = students.train_student(cfg, notebook="31_model_a", progress=False)
    got = record["training"]["dev_selection"]
    assert [s for s, _ in got["curve"]] == [1, 2, 3][:len(got["curve"])] and got["best_step"] in (1, 2, 3)
    assert got["metric"] == "chrf++" and got["dev"]["per_direction"] == {"de-en": 2, "en-de": 2}
    assert isinstance(got["dev"]["held_out_of_training"], int)


def test_model_b_is_fully_fine_tuned_on_human_pairs_after_pruning_then_qlora(data_root):
    """Moslem's Model B: prune, full fine-tuning of the pruned student on the human pairs, then NF4 + QLoRA; the
    record says so in its full_ft block and its what block."""
    from studylib.runs import students
    from studylib.runs.students import ModelBParams

    cfg = ModelBParams(directions=["de-en"], train_directions=["de-en"], n_test=2, human_per_direction=4,
                       ood_test_per_direction=2, max_steps=1, batch_size=8, max_new_tokens=4, speed_batch_sizes=[1],
                       speed_new_tokens=2, full_ft_epochs=1.0, full_ft_learning_rate=1e-4, full_ft_batch_size=2,
                       max_length=512, data_dir=str(data_root))
    record = students.train_student(cfg, notebook="32_model_b", progress=False)
    full = record["student"]["full_ft"]
    assert full["pairs"] == 4 == full["examples"] + full["skipped_too_long"] and full["trainable_share"] == 1.0
    assert full["steps"] == -(-full["examples"] // 2)  # one epoch of batches of 2
    assert record["what"]["method"].endswith("+full-ft+qlora") and record["what"]["recovery"] == "full+qlora"


def test_full_fine_tuning_of_a_student_needs_a_pruned_student():
    from studylib.runs.params import ParamsError
    from studylib.runs.students import StudentParams

    with pytest.raises(ParamsError, match="needs a prune_recipe"):
        StudentParams(full_ft_epochs=1.0)
    with pytest.raises(ParamsError, match="full_ft_epochs must be in"):
        StudentParams(full_ft_epochs=-1.0)


def test_a_greedy_prune_step_decodes_its_dev_set_with_the_runs_repetition_penalty():
    from studylib.runs.students import ModelBParams, prune_steps

    cfg = ModelBParams(repetition_penalty=1.1, prune_recipe=[
        {"method": "layer-prune-greedy", "depth": 1}, {"method": "layer-prune-middle", "depth": 1}])
    steps = prune_steps(cfg)
    assert steps[0]["repetition_penalty"] == 1.1 and "repetition_penalty" not in steps[1]
    own = ModelBParams(repetition_penalty=1.1, prune_recipe=[{"method": "layer-prune-greedy", "repetition_penalty": 1.0}])
    assert prune_steps(own)[0]["repetition_penalty"] == 1.0  # a step's own value stands
    assert cfg.prune_recipe[0] == {"method": "layer-prune-greedy", "depth": 1}  # the params are left as written


def test_a_student_reuses_the_layers_a_layer_pruning_run_chose(tmp_path, tiny, monkeypatch):
    """prune_layers_from: the 25_layer_pruning record's iterative order, read when the run starts, checked to come
    from the same model, removed by layer-prune-listed; the record's "what" reads the step that ran."""
    import json

    from studylib import methods
    from studylib.core import what
    from studylib.runs.params import ParamsError
    from studylib.runs.students import ModelBParams, prune_steps

    runs = tmp_path / "runs" / "25_layer_pruning"
    runs.mkdir(parents=True)
    step = {"method": "layer-prune-greedy", "params": {"depth": 1}, "removal_order": [1]}
    (runs / "sel.json").write_text(json.dumps({"params": {"model_id": "tiny-gemma3"},
                                               "compression": {"recipe": [step]}}))
    def load(**values):
        cfg = ModelBParams(**{"prune_recipe": [], "results_dir": str(tmp_path), **values})
        cfg.resolve()  # as .load does when the run starts
        return cfg

    cfg = load(prune_layers_from="25_layer_pruning/sel.json")
    assert cfg.uses()[-1] == "results/runs/25_layer_pruning/sel.json"
    steps = prune_steps(cfg)
    assert steps == [{"method": "layer-prune-listed", "layers": [1], "selected_by": "25_layer_pruning/sel"}]
    model, _ = methods.apply_recipe(copy.deepcopy(tiny[0]), tiny[1], methods.build_recipe(steps), None)
    assert model.config.num_hidden_layers == tiny[0].config.num_hidden_layers - 1
    described = [{"method": "layer-prune-listed", "params": steps[0]}]
    assert what.describe("distillation", {**cfg.as_dict(), "prune_recipe": []},
                         {"recipe": described})["depth"] == 1

    with pytest.raises(ParamsError, match="not on this run's model"):
        load(model_id="owner/other", prune_layers_from="25_layer_pruning/sel.json")
    with pytest.raises(ParamsError, match="no such record"):
        load(prune_layers_from="25_layer_pruning/none.json")
    with pytest.raises(ParamsError, match="not both"):
        ModelBParams(prune_layers_from="25_layer_pruning/sel.json")  # the default prune_recipe is not empty
    with pytest.raises(ParamsError, match="prune_layers_from must look like"):
        ModelBParams(prune_recipe=[], prune_layers_from="sel.json")
    with pytest.raises(methods.MethodError, match="distinct layer indices"):
        methods.build("layer-prune-listed", layers=[1, 1])


def test_training_pairs_sharing_a_sentence_with_dev_are_held_out_and_counted(data_root):
    from studylib.core.data import Example
    from studylib.methods import devset

    dev = devset.dev_examples(["de-en"], 3, root=data_root)
    assert "held_out_of_training" not in dev.describe()
    seen = dev.examples[0]
    train = [Example(seen.src, "anything", seen.direction), Example("x", seen.tgt, seen.direction),
             Example("unrelated", "pair", seen.direction)]
    kept = devset.hold_out(train, dev)
    assert [e.src for e in kept] == ["unrelated"] and dev.held_out == 2
    assert dev.describe()["held_out_of_training"] == 2


def test_icelandic_dev_keeps_its_pairs_when_the_training_data_is_held_out(data_root):
    """ALMA's train data are multi-way parallel: Icelandic's dev English recurs in the other directions' train pairs.
    The dev set keeps its size; the training pairs give way."""
    from studylib.core import data
    from studylib.methods import devset

    train = [ex for d in ("de-en", "is-en") for ex in data.load_split("alma", d, "train", root=data_root)]
    dev = devset.dev_examples(["is-en"], 5, root=data_root)
    kept = devset.hold_out(train, dev)
    assert len(dev.examples) == 5 and len(kept) == len(train) - dev.held_out
