"""The decoding engines (hf and vLLM): the mapping from params to vLLM's arguments, which engine a run's model gets,
the cut both engines share, the one-line errors before any model loads, and 41_engines' params, agreement figures and
record -- on the CPU. vLLM itself is never imported: its engine is a stand-in that decodes with the tiny model."""

import copy
import sys
import time

import pytest
import torch

from studylib.core import engines as E
from studylib.core import evaluation, records
from studylib.core.generation import generate, generate_vllm, stop_token_ids
from studylib.runs import engines as RE
from studylib.runs.engines import EngineParams
from studylib.runs.params import EvalParams, ParamsError
from standins import HFAsVLLM

PROMPTS = [f"Translate this from German to English:\nGerman: Satz {i} {'lang ' * i}\nEnglish:" for i in range(7)]
FAST = dict(directions=["de-en", "en-de"], n_test=2, batch_size=4, max_new_tokens=8, device="cpu")


class FixedRows:
    """An engine that returns given rows (in the order the prompts are handed over) and records what it got."""

    def __init__(self, rows):
        self.rows, self.got = rows, None

    def generate(self, prompt_ids, *, max_new_tokens, stop_ids, seed=0, progress=True, repetition_penalty=1.0):
        self.got = [list(i) for i in prompt_ids]
        return [list(self.rows[k]) for k in range(len(prompt_ids))]


# ----------------------------------------------------------------------------------------------- vLLM's arguments


def test_sampling_kwargs_are_greedy_capped_and_token_ids_only():
    kw = E.sampling_kwargs(17, [106, 1, 50, 1], seed=3)
    assert kw["temperature"] == 0.0 and kw["n"] == 1 and kw["seed"] == 3
    assert kw["max_tokens"] == 17 and isinstance(kw["max_tokens"], int)
    assert kw["stop_token_ids"] == [1, 1, 50, 106]  # sorted
    assert kw["detokenize"] is False and kw["ignore_eos"] is False and kw["skip_special_tokens"] is False
    for bad in (0, -3):
        with pytest.raises(ValueError, match="max_new_tokens"):
            E.sampling_kwargs(bad, [1])


def test_llm_kwargs_never_tokenize_never_cache_prefixes_and_check_their_values(tmp_path):
    kw = E.llm_kwargs(tmp_path, dtype="float16", seed=5)
    assert kw["model"] == str(tmp_path) and kw["skip_tokenizer_init"] is True
    assert kw["enable_prefix_caching"] is False and kw["dtype"] == "float16" and kw["seed"] == 5
    assert "compilation_config" not in kw and "quantization" not in kw
    kw = E.llm_kwargs("m", capture_sizes=[16, 1, 16], quantization="fp8", load_format="dummy")
    assert kw["compilation_config"] == {"cudagraph_capture_sizes": [1, 16]}
    assert kw["quantization"] == "fp8" and kw["load_format"] == "dummy"
    assert "compilation_config" not in E.llm_kwargs("m", capture_sizes=[])
    for bad in ("float32", "int8"):
        with pytest.raises(ValueError, match="bfloat16 or float16"):
            E.llm_kwargs("m", dtype=bad)
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="gpu_memory_utilization"):
            E.llm_kwargs("m", gpu_memory_utilization=bad)


def test_without_chunked_prefill_every_prompt_fits_one_step():
    assert "enable_chunked_prefill" not in E.llm_kwargs("m") and "max_num_batched_tokens" not in E.llm_kwargs("m")
    kw = E.llm_kwargs("m", chunked_prefill=False)
    assert kw["enable_chunked_prefill"] is False and kw["max_num_batched_tokens"] == E.WHOLE_PROMPT_TOKENS
    kw = E.llm_kwargs("m", chunked_prefill=False, max_model_len=32768, max_num_batched_tokens=1024)
    assert kw["max_num_batched_tokens"] == 32768  # the longest prompt still fits one step


def test_flash_attention_version_is_pinned_only_when_asked():
    assert "attention_config" not in E.llm_kwargs("m")
    assert E.llm_kwargs("m", flash_attn_version=2)["attention_config"] == {"flash_attn_version": 2}
    with pytest.raises(ValueError, match="flash_attn_version"):
        E.llm_kwargs("m", flash_attn_version=4)


def test_batch_invariant_engine_prefills_whole_prompts_with_flash_attention_2(monkeypatch):
    """FlashAttention 3 (vLLM's choice on Hopper) changes a decoding row's kernel with its neighbours' prompts."""
    import types

    made = []
    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kw: made.append(kw) or object()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    for var in ("VLLM_BATCH_INVARIANT", "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_ALLOW_INSECURE_SERIALIZATION",
                "VLLM_NO_USAGE_STATS", "VLLM_DO_NOT_TRACK"):
        monkeypatch.delenv(var, raising=False)
    E.VLLMEngine("m")
    assert made[-1]["attention_config"] == {"flash_attn_version": 2} and made[-1]["enable_chunked_prefill"] is False
    E.VLLMEngine("m", batch_invariant=False)
    assert "attention_config" not in made[-1] and "enable_chunked_prefill" not in made[-1]
    E.VLLMEngine("m", flash_attn_version=3)
    assert made[-1]["attention_config"] == {"flash_attn_version": 3}


def test_engines_start_one_at_a_time_and_say_how_long_they_waited(tmp_path, monkeypatch):
    """Two engines starting on one GPU at once confuse vLLM's memory profile: the second waits for the first."""
    import threading
    import types

    monkeypatch.setenv("STUDYLIB_VLLM_LOCK", str(tmp_path / "lock"))
    spans, inside = [], threading.Event()

    def slow_llm(**kw):
        begin = time.perf_counter()
        inside.set()
        time.sleep(0.3)
        spans.append((begin, time.perf_counter()))
        return object()

    fake = types.ModuleType("vllm")
    fake.LLM = slow_llm
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setattr(E, "vllm_version", lambda: E.VLLM_VERSION)
    engines = []
    first = threading.Thread(target=lambda: engines.append(E.VLLMEngine("m")))
    first.start()
    inside.wait(5)
    second = E.VLLMEngine("m")
    first.join()
    (a0, a1), (b0, b1) = sorted(spans)
    assert b0 >= a1, "the second engine started while the first was starting"
    assert second.start_wait_seconds > 0.1 and engines[0].start_wait_seconds < 0.1
    assert 0.25 < second.start_seconds < 1 and second.info()["start_wait_seconds"] == second.start_wait_seconds


# ----------------------------------------------------------------------------------------------- which engine


def test_choose_keeps_hf_and_sends_servable_recipes_to_vllm():
    assert E.choose("hf", []) == ("hf", None)
    assert E.choose("hf", ["bnb-int8"]) == ("hf", None)
    assert E.choose("vllm", []) == ("vllm", None)
    assert E.choose("vllm", ["wanda"]) == ("vllm", None)
    for method in ("bnb-int8", "head-prune"):
        name, why = E.choose("vllm", [method])
        assert name == "hf" and why.startswith(f"{method}: ") and E.HF_ONLY[method] in why
    name, why = E.choose("vllm", ["wanda", "head-prune"])  # one HF-only step is enough
    assert name == "hf" and "head-prune" in why


def test_gptq_is_served_where_vllm_marlin_takes_its_settings():
    assert E.gptq_served_why(4, 128, True) is None and E.gptq_served_why(8, -1, True) is None
    assert "not 3-bit" in E.gptq_served_why(3, 128, True)
    assert "not 256" in E.gptq_served_why(4, 256, True)
    assert "symmetric" in E.gptq_served_why(4, 128, False)


class Plain(torch.nn.Module):
    pass


def test_route_serves_kept_checkpoints_and_sends_adapters_and_unkept_quantized_models_to_hf(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert E.route("hf", None, Plain()) == ("hf", None, None)
    assert E.route("vllm", None, Plain()) == ("vllm", None, None)
    quantized = Plain()
    quantized.is_quantized = True
    name, why, _ = E.route("vllm", None, quantized)
    assert name == "hf" and "no checkpoint vLLM loads" in why
    E.keep_checkpoint(quantized, tmp_path, "gptq")
    name, why, kept = E.route("vllm", None, quantized)
    assert (name, why, kept["format"]) == ("vllm", None, "gptq")
    assert kept["path"] != str(tmp_path) and (tmp_path / "config.json").read_text() == "{}"
    import pathlib

    assert (pathlib.Path(kept["path"]) / "config.json").exists()  # a copy of its own, removed at exit
    refused = Plain()
    E.keep_checkpoint(refused, tmp_path, "gptq", "vLLM's gptq_marlin takes 4 or 8-bit weights, not 3-bit")
    assert E.route("vllm", None, refused) == ("hf", "vLLM's gptq_marlin takes 4 or 8-bit weights, not 3-bit", None)
    assert E.served_checkpoint(refused)["path"] is None  # nothing copied for a checkpoint vLLM will not serve
    adapter = Plain()
    E.keep_checkpoint(adapter, tmp_path, "gptq")
    adapter.peft_config = {"default": None}  # the base's checkpoint would serve the model without its adapter
    name, why, kept = E.route("vllm", None, adapter)
    assert name == "hf" and "adapter" in why and kept is None and E.served_checkpoint(adapter) is None
    assert E.route("hf", "head-prune: why", adapter) == ("hf", "head-prune: why", None)
    moved = Plain()  # a large checkpoint is moved (a rename), not copied
    E.keep_checkpoint(moved, tmp_path, "gptq", move=True)
    assert not tmp_path.exists() and (pathlib.Path(E.served_checkpoint(moved)["path"]) / "config.json").exists()


def test_serve_with_vllm_starts_from_the_kept_checkpoint_and_leaves_it(tmp_path, monkeypatch):
    started = []

    class Engine:
        def __init__(self, model_dir, **kwargs):
            started.append((model_dir, kwargs))

    monkeypatch.setattr(E, "VLLMEngine", Engine)
    model = Plain()
    E.keep_checkpoint(model, tmp_path, "gptq")
    engine = evaluation.serve_with_vllm(model, EvalParams(**FAST))
    assert started[0][0] == E.served_checkpoint(model)["path"] and started[0][1]["seed"] == 0
    assert engine.checkpoint == "gptq" and not hasattr(engine, "served_dir")  # served_dir is removed on close


def test_a_later_recipe_step_drops_the_checkpoint_an_earlier_one_kept(tmp_path):
    from studylib.methods import Method, apply_recipe

    class Keep(Method):
        name, needs_calibration = "keep", False

        def apply(self, model, tokenizer, calibration=None):
            E.keep_checkpoint(model, tmp_path, "gptq")
            return model

    class Touch(Keep):
        name = "touch"

        def apply(self, model, tokenizer, calibration=None):
            return model

    model, _ = apply_recipe(Plain(), None, [Keep(), Touch()])
    assert E.served_checkpoint(model) is None
    model, _ = apply_recipe(Plain(), None, [Touch(), Keep()])
    assert E.served_checkpoint(model)["format"] == "gptq"


def test_finish_counts_up_to_and_including_the_first_stop():
    assert E.finish([5, 6, 9, 7, 9], {9}, 10) == 3
    assert E.finish([9], [9], 10) == 1
    assert E.finish([5, 6, 7], [9], 10) == 3
    assert E.finish([5, 6, 7, 8], [9], 2) == 2  # no stop: at most max_new_tokens
    assert E.finish([], [9], 4) == 0


def test_check_engine_is_one_line_before_any_model_loads(monkeypatch):
    E.check_engine("hf", "cpu")
    E.check_engine("hf", "cuda")
    with pytest.raises(E.EngineError, match="engine must be one of hf, vllm"):
        E.check_engine("tgi", "cpu")
    with pytest.raises(E.EngineError) as err:
        E.check_engine("vllm", "cpu")
    assert "\n" not in str(err.value) and "'hf'" in str(err.value) and "CUDA" in str(err.value)
    monkeypatch.setattr(E, "_cuda", lambda: True)  # a GPU without vLLM's wheels
    monkeypatch.setattr(E, "vllm_version", lambda: None)
    with pytest.raises(E.EngineError) as err:
        E.check_engine("vllm", "cuda")
    assert f"vllm=={E.VLLM_VERSION}" in str(err.value) and "'hf'" in str(err.value) and "\n" not in str(err.value)
    assert "vllm" not in sys.modules  # nothing here imported it


# ----------------------------------------------------------------------------------------------- generate_vllm


def test_generate_vllm_cuts_at_the_stop_token_and_counts_it(tiny):
    _, tok = tiny
    stops = stop_token_ids(tok)
    nl = tok.convert_tokens_to_ids("Ċ")
    assert nl in stops
    words = tok.encode(" Guten Tag", add_special_tokens=False)
    more = tok.encode(" und mehr", add_special_tokens=False)
    assert not set(words + more) & set(stops)
    rows = [words + [nl] + more, words + more, [nl] + words, words + [tok.eos_token_id] + more]
    fake = FixedRows(rows)
    out = generate_vllm(fake, tok, PROMPTS[:4], max_new_tokens=50, progress=False)
    head = tok.decode(words, skip_special_tokens=True).strip()
    assert out.texts[0] == head and out.new_tokens[0] == len(words) + 1
    assert out.texts[1] == tok.decode(words + more, skip_special_tokens=True).strip()
    assert out.new_tokens[1] == len(words + more)
    assert out.texts[2] == "" and out.new_tokens[2] == 1  # stopped at once
    assert out.texts[3] == head and out.new_tokens[3] == len(words) + 1  # EOS is a stop too
    assert out.total_new_tokens == sum(out.new_tokens) and out.seconds >= 0
    assert fake.got == tok(PROMPTS[:4])["input_ids"]  # the tokenizer's ids, BOS included, unpadded
    capped = generate_vllm(FixedRows([words + more]), tok, PROMPTS[:1], max_new_tokens=len(words), progress=False)
    assert capped.new_tokens == [len(words)] and capped.texts == [head]
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_vllm(fake, tok, PROMPTS[:4], max_new_tokens=0)


def test_generate_vllm_hands_prompts_over_in_order_and_gives_them_back_in_prompt_order(tiny):
    _, tok = tiny
    rows = [tok.encode(f" Wort {i}", add_special_tokens=False) for i in range(4)]
    order = [2, 0, 3, 1]
    fake = FixedRows(rows)  # row k belongs to the k-th prompt handed over, i.e. prompt order[k]
    out = generate_vllm(fake, tok, PROMPTS[:4], max_new_tokens=20, progress=False, order=order)
    assert fake.got == [tok(PROMPTS[i])["input_ids"] for i in order]
    for k, i in enumerate(order):
        assert out.texts[i] == tok.decode(rows[k], skip_special_tokens=True).strip()
        assert out.new_tokens[i] == len(rows[k])
    for bad in ([0, 1, 2], [0, 0, 1, 2], [0, 1, 2, 4]):
        with pytest.raises(ValueError, match="permutation"):
            generate_vllm(fake, tok, PROMPTS[:4], max_new_tokens=20, progress=False, order=bad)


def test_generate_vllm_gives_what_hf_generate_gives_for_the_same_token_ids(tiny):
    model, tok = tiny
    hf = generate(model, tok, PROMPTS, batch_size=4, max_new_tokens=10, progress=False)
    fake = HFAsVLLM(model, tok)
    vl = generate_vllm(fake, tok, PROMPTS, max_new_tokens=10, seed=7, progress=False, order=[6, 5, 4, 3, 2, 1, 0])
    assert vl.texts == hf.texts and vl.new_tokens == hf.new_tokens
    assert all(hf.texts)  # real continuations, not empty cuts
    (call,) = fake.calls
    assert call["max_new_tokens"] == 10 and call["seed"] == 7 and call["stop_ids"] == stop_token_ids(tok)


def test_a_repetition_penalty_reaches_both_engines_and_they_still_agree(tiny):
    model, tok = tiny
    plain = generate(model, tok, PROMPTS, batch_size=4, max_new_tokens=24, progress=False)
    hf = generate(model, tok, PROMPTS, batch_size=4, max_new_tokens=24, progress=False, repetition_penalty=1.5)
    fake = HFAsVLLM(model, tok)
    vl = generate_vllm(fake, tok, PROMPTS, max_new_tokens=24, progress=False, repetition_penalty=1.5)
    assert vl.texts == hf.texts and fake.calls[0]["repetition_penalty"] == 1.5
    assert hf.texts != plain.texts  # the penalty changed what was decoded


def test_repetition_penalty_is_checked_and_handed_to_vllm():
    assert E.sampling_kwargs(8, [1])["repetition_penalty"] == 1.0
    assert E.sampling_kwargs(8, [1], repetition_penalty=1.2)["repetition_penalty"] == 1.2
    for bad in (0.9, 0, True, "1.2", None):
        with pytest.raises(ValueError, match="repetition_penalty must be a number >= 1.0"):
            E.sampling_kwargs(8, [1], repetition_penalty=bad)
    with pytest.raises(ParamsError, match="repetition_penalty must be a number >= 1.0") as err:
        EngineParams.build({"repetition_penalty": 0.5}, "p.yaml")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------- evaluation


def test_evaluate_through_a_vllm_engine_and_back_to_hf_for_a_recipe_vllm_does_not_serve(tiny, data_root):
    model, tok = tiny
    cfg = EvalParams(data_dir=str(data_root), **FAST)
    test_sets = evaluation.load_test_sets(cfg)
    hf = evaluation.evaluate(model, tok, cfg, test_sets, progress=False)
    assert hf.engine["engine"] == "hf" and hf.engine["asked"] == "hf" and hf.engine["why"] is None
    vcfg = copy.copy(cfg)
    vcfg.engine = "vllm"
    fake = HFAsVLLM(model, tok)
    vl = evaluation.evaluate(model, tok, vcfg, test_sets, progress=False, engine=fake)
    assert vl.engine["engine"] == "vllm" and vl.engine["asked"] == "vllm" and vl.engine["why"] is None
    assert len(fake.calls) == 1 and not fake.closed  # one pool; an engine handed in is the caller's to close
    assert {d: o["hyp"] for d, o in vl.outputs.items()} == {d: o["hyp"] for d, o in hf.outputs.items()}
    assert vl.metrics == hf.metrics and vl.new_tokens == hf.new_tokens
    vcfg.recipe = [{"method": "head-prune"}]
    fake = HFAsVLLM(model, tok)
    back = evaluation.evaluate(model, tok, vcfg, test_sets, progress=False, engine=fake)
    assert back.engine["engine"] == "hf" and back.engine["asked"] == "vllm" and "head-prune" in back.engine["why"]
    assert fake.calls == []


def test_load_test_sets_refuses_vllm_on_the_cpu_before_loading_anything(monkeypatch):
    from studylib.core import data

    def refuse(*a, **k):
        raise AssertionError("data was loaded before the engine was checked")

    monkeypatch.setattr(data, "load_split", refuse)
    monkeypatch.setattr(data, "resolve_data_dir", refuse)
    with pytest.raises(ParamsError, match="engine 'vllm' decodes in bfloat16 or float16, got dtype 'float32'"):
        EngineParams.load(None, {"engines": ["hf", "vllm"]})
    with pytest.raises(ParamsError, match="engine 'vllm' decodes in bfloat16 or float16"):
        EvalParams(engine="vllm", dtype="float32")
    cfg = EngineParams.load(None, {"engines": ["hf", "vllm"], "dtype": "bfloat16", "device": "cpu"})
    with pytest.raises(E.EngineError, match="on the CPU use engine 'hf'"):
        evaluation.load_test_sets(cfg)
    one = EvalParams(engine="vllm", dtype="float16", device="cpu")
    with pytest.raises(E.EngineError, match="'hf'"):
        evaluation.load_test_sets(one)


# ----------------------------------------------------------------------------------------------- 41_engines


@pytest.mark.parametrize("key, value, message", [
    ("engines", [], "engines must be a list of distinct engines"),
    ("engines", ["hf", "hf"], "engines must be a list of distinct engines"),
    ("engines", ["hf", "tgi"], r"engines must be a list of distinct engines from \('hf', 'vllm'\), got \['hf', 'tgi'\]"),
    ("engines", "hf", "engines must be a list"),
    ("vllm_memory", 0.0, "vllm_memory must be a float in"),
    ("vllm_memory", 1.0, "vllm_memory must be a float in"),
    ("vllm_memory", 1.5, "vllm_memory must be a float in"),
    ("vllm_memory", 1, "vllm_memory must be a float in"),
    ("vllm_eager", "no", "vllm_eager must be true or false"),
    ("vllm_autotune", "off", "vllm_autotune must be true or false"),
    ("rerun", "yes", "rerun must be true or false"),
    ("repeat", 1, "repeat must be true or false"),
])
def test_bad_engine_params_are_one_line(key, value, message):
    with pytest.raises(ParamsError, match=message) as err:
        EngineParams.build({key: value}, "p.yaml")
    assert str(err.value).startswith("p.yaml: ") and "\n" not in str(err.value)


def test_engine_params_defaults_and_the_teacher_file():
    from pathlib import Path

    cfg = EngineParams()
    assert cfg.engines == ["hf"] and cfg.rerun is True and 0 < cfg.vllm_memory < 1 and cfg.profile == "smoke"
    assert EngineParams.NOTEBOOK == "41_engines" and EngineParams.GPU == "exclusive"
    path = Path(__file__).resolve().parent.parent / "params" / "41_engines_teacher-lora.yaml"
    from studylib.runs.params import read_spec

    spec = read_spec(path)
    assert spec.params_class() is EngineParams and spec.parameters["engines"] == ["hf", "vllm"]
    assert spec.parameters["dtype"] in ("bfloat16", "float16")
    spec = read_spec(path.with_name("41_engines_teacher-lora-vllm.yaml"))
    cfg = EngineParams.build(spec.parameters, "p.yaml")
    assert cfg.engines == ["vllm"] and cfg.repeat and cfg.rerun and cfg.n_test is None


def _outputs(hyps: dict) -> dict:
    return {d: {"src": [f"s{i}" for i in range(len(h))], "ref": [f"the reference sentence {i}" for i in range(len(h))],
                "hyp": list(h)} for d, h in hyps.items()}


def test_identical_share_per_direction_and_in_all():
    a = _outputs({"de-en": ["a b", "c d", "e f"], "en-de": ["x", "y"]})
    b = _outputs({"de-en": ["a b", "c X", "e f"], "en-de": ["x", "y"]})
    s = RE.identical_share(a, b)
    assert (s["identical"], s["segments"]) == (4, 5) and s["share"] == pytest.approx(0.8)
    assert s["per_direction"] == {"de-en": pytest.approx(2 / 3), "en-de": 1.0}
    assert RE.identical_share(a, a)["share"] == 1.0
    empty = RE.identical_share(_outputs({"de-en": []}), _outputs({"de-en": []}))
    assert empty["share"] is None and empty["per_direction"] == {"de-en": None}
    with pytest.raises(ValueError):  # different numbers of hypotheses are not the same test set
        RE.identical_share(a, _outputs({"de-en": ["a b"], "en-de": ["x", "y"]}))


def test_chrf_difference_is_zero_for_identical_hypotheses_and_signed_otherwise():
    refs = {"de-en": ["the cat sat on the mat", "a dog runs in the park", "it is raining today"],
            "en-de": ["die Katze sitzt", "ein Hund rennt", "es regnet heute"]}
    good = {d: {"src": ["s"] * 3, "ref": r, "hyp": list(r)} for d, r in refs.items()}
    bad = {d: {"src": ["s"] * 3, "ref": r, "hyp": ["something else entirely"] * 3} for d, r in refs.items()}
    same = RE.chrf_difference(good, copy.deepcopy(good), n_samples=50)
    assert same["delta"] == 0 and same["score_a"] == same["score_b"] and same["ci_low"] <= 0 <= same["ci_high"]
    assert same["n_samples"] == 50 and same["seed"] == 12345
    diff = RE.chrf_difference(good, bad, n_samples=50)
    assert diff["delta"] > 0 and diff["score_a"] > diff["score_b"]
    assert diff["delta"] == pytest.approx(diff["score_a"] - diff["score_b"])
    assert diff["ci_low"] <= diff["delta"] <= diff["ci_high"]
    assert RE.chrf_difference(bad, good, n_samples=50)["delta"] == pytest.approx(-diff["delta"])


def _record(cfg, block, outputs):
    """The record as notebooks/41_engines.ipynb makes it."""
    return records.make_record(notebook="41_engines", run=cfg.run_name, params=cfg.as_dict(), profile=cfg.profile,
                               **cfg.identity(), metrics={}, outputs=outputs if cfg.keep_outputs else None,
                               extra={"engines": block})


def test_a_run_with_hf_alone_decodes_twice_and_its_record_checks(tiny, data_root):
    model, tok = tiny
    cfg = EngineParams(engines=["hf"], rerun=True, data_dir=str(data_root), **FAST)
    test_sets = evaluation.load_test_sets(cfg)
    block, outputs = RE.run(model, tok, cfg, test_sets, progress=False)
    record = _record(cfg, block, outputs)
    RE.check_record(record, cfg, test_sets)
    assert block["reference"] == "hf" and block["agreement"] == {}
    assert [(p["engine"], p["pooled"]) for p in block["passes"]] == [("hf", True), ("hf", False)]
    assert all(p["segments"] == 4 and p["start_seconds"] is None for p in block["passes"])
    assert block["rerun"]["engine"] == "hf" and block["rerun"]["share"] == 1.0 and block["rerun"]["segments"] == 4
    assert set(outputs) == {"de-en", "en-de"} and record["outputs"] == outputs
    assert record["metrics"] == {} and record["engines"] is block
    bad = copy.deepcopy(record)
    bad["engines"]["passes"].pop()
    with pytest.raises(AssertionError):
        RE.check_record(bad, cfg, test_sets)  # the rerun is missing


def test_a_repeat_decodes_the_same_pool_again_before_the_rerun(tiny, data_root):
    model, tok = tiny
    cfg = EngineParams(engines=["hf"], repeat=True, rerun=True, data_dir=str(data_root), **FAST)
    test_sets = evaluation.load_test_sets(cfg)
    block, outputs = RE.run(model, tok, cfg, test_sets, progress=False)
    RE.check_record(_record(cfg, block, outputs), cfg, test_sets)
    assert [(p["engine"], p["pooled"]) for p in block["passes"]] == [("hf", True), ("hf", True), ("hf", False)]
    assert block["repeat"]["share"] == 1.0 and block["repeat"]["segments"] == 4 and block["rerun"]["share"] == 1.0
    cfg.repeat = False
    with pytest.raises(AssertionError):
        RE.check_record(_record(cfg, block, outputs), cfg, test_sets)  # a pass more than the params ask for


def test_a_run_with_hf_and_a_vllm_stand_in_agrees_and_closes_its_engine(tiny, data_root, monkeypatch):
    model, tok = tiny
    hf_cfg = EngineParams(data_dir=str(data_root), **FAST)
    test_sets = evaluation.load_test_sets(hf_cfg)
    cfg = EngineParams(engines=["hf", "vllm"], dtype="bfloat16", data_dir=str(data_root), **FAST)
    started = []

    def serve(m, c, **kw):
        assert m is model and kw["gpu_memory_utilization"] == cfg.vllm_memory
        started.append(HFAsVLLM(m, tok))
        return started[-1]

    monkeypatch.setattr(evaluation, "serve_with_vllm", serve)
    block, outputs = RE.run(model, tok, cfg, test_sets, progress=False)
    RE.check_record(_record(cfg, block, outputs), cfg, test_sets)
    assert [(p["engine"], p["pooled"]) for p in block["passes"]] == [("hf", True), ("vllm", True), ("vllm", False)]
    assert len(started) == 1 and started[0].closed and len(started[0].calls) == 3  # one pool, then 2 directions
    assert block["passes"][1]["start_seconds"] is not None and block["passes"][1]["info"]["engine"] == "vllm"
    agree = block["agreement"]["vllm"]
    assert agree["share"] == 1.0 and agree["segments"] == 4 and agree["chrf++"]["delta"] == 0
    assert block["rerun"] == {"engine": "vllm", **RE.identical_share(outputs, outputs)}


def test_a_recipe_compresses_the_model_first_and_vllm_serves_what_its_method_kept(data_root, monkeypatch):
    cfg = EngineParams(engines=["hf", "vllm"], dtype="bfloat16", recipe=[{"method": "bnb-nf4"}],
                       data_dir=str(data_root), **FAST)
    monkeypatch.setattr(E, "check_engine", lambda name, device: None)  # no GPU here: the stand-in decodes
    test_sets, job = RE.prepare(cfg)
    assert set(test_sets) == {"de-en", "en-de"} and job is not None and job.calibration is None
    model, tok = RE.load(cfg, job)
    kept = E.served_checkpoint(model)
    assert kept["format"] == "bitsandbytes-nf4" and job.compress_seconds > 0
    served = []

    def serve(m, c, **kw):
        served.append(E.served_checkpoint(m))
        return HFAsVLLM(m, tok)

    monkeypatch.setattr(evaluation, "serve_with_vllm", serve)
    block, outputs = RE.run(model, tok, cfg, test_sets, progress=False)
    assert served == [kept] and block["agreement"]["vllm"]["segments"] == 4
    described = RE.compression_block(job)
    assert described["recipe"][0]["method"] == "bnb-nf4" and described["calibration"] is None
    assert RE.compression_block(None) is None and RE.prepare(EngineParams(data_dir=str(data_root), **FAST))[1] is None


def test_engines_refuse_a_recipe_vllm_does_not_serve_before_any_model_loads():
    with pytest.raises(ParamsError, match="does not serve this recipe's model.*bnb-int8"):
        EngineParams(engines=["hf", "vllm"], dtype="bfloat16", recipe=[{"method": "bnb-int8"}], **FAST)
    assert EngineParams(engines=["hf"], recipe=[{"method": "bnb-int8"}], **FAST).recipe  # hf alone: any recipe
    with pytest.raises(ParamsError, match="unknown method 'no-such-method'"):
        EngineParams(recipe=[{"method": "no-such-method"}], **FAST)


def test_serve_with_vllm_takes_eager_and_memory_from_any_runs_params(monkeypatch, tmp_path):
    """``vllm_eager``, ``vllm_autotune`` and ``vllm_memory`` are evaluation parameters of every run, passed to the
    engine it starts."""
    from studylib.core import engines as core_engines
    from studylib.runs.params import EvalParams

    import tempfile

    seen = {}

    class Model:
        def save_pretrained(self, d, **kw):
            pass

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the plain checkpoint's folder
    monkeypatch.setattr(core_engines, "served_checkpoint", lambda m: None)
    monkeypatch.setattr(core_engines, "VLLMEngine", lambda path, **kw: seen.update(kw) or type("E", (), {})())
    cfg = EvalParams(dtype="bfloat16", vllm_eager=True, vllm_memory=0.2, vllm_autotune=False)
    evaluation.serve_with_vllm(Model(), cfg)
    assert seen["enforce_eager"] is True and seen["gpu_memory_utilization"] == 0.2
    assert seen["flashinfer_autotune"] is False
    evaluation.serve_with_vllm(Model(), EvalParams(dtype="bfloat16"))
    assert seen["enforce_eager"] is False and seen["flashinfer_autotune"] is True


def test_vllm_is_asked_to_skip_flashinfer_autotuning_only_when_told():
    """vLLM's own default (autotune at start) is left alone unless a run turns it off; the record's engine kwargs
    then say so (``enable_flashinfer_autotune``)."""
    assert "enable_flashinfer_autotune" not in E.llm_kwargs("m")
    assert E.llm_kwargs("m", flashinfer_autotune=False)["enable_flashinfer_autotune"] is False
