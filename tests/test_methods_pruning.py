"""Pruning methods against their definitions: Wanda, N:M, SparseGPT, DSnoT, layer and head pruning; the dev data
used for selection is disjoint from every test set; bad parameters fail at construction."""

import copy

import pytest
import torch

from studylib.core import data, leakage
from studylib import methods
from studylib.methods import devset, pruning
from studylib.methods import MethodError
from studylib.methods import heads as head_mod
from studylib.methods import layers as layer_mod
from studylib.methods.dsnot import dsnot_mask, expected_error
from studylib.methods.sparsegpt import inverse_hessian_factor, sparsegpt_prune
from studylib.methods.wanda import wanda_scores

TEXTS = [
    "Translate this from German to English:\nGerman: Guten Morgen, wie geht es dir?\nEnglish: Good morning, how are you?",
    "Translate this from English to Czech:\nEnglish: The weather is nice today.\nCzech: Dnes je hezké počasí.",
    "Translate this from Russian to English:\nRussian: Я люблю читать книги.\nEnglish: I love reading books.",
    "Translate this from English to Chinese:\nEnglish: Where is the station?\nChinese: 车站在哪里？",
    "Translate this from Icelandic to English:\nIcelandic: Ég er að læra íslensku.\nEnglish: I am learning.",
]


def _layer_problem(seed=0, out=32, inp=64, tokens=2000):
    """A linear layer and correlated inputs with non-zero means (real activations are neither white nor centred)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, inp, generator=g)
    mix = torch.randn(inp, inp, generator=g) * 0.3 + torch.eye(inp)
    X = torch.randn(tokens, inp, generator=g) @ mix + 2 * torch.randn(inp, generator=g)
    stats = pruning.InputStats(inp, hessian=True)
    stats.add(X)
    return W, X, stats


def _sq_error(W, W_pruned, X):
    with torch.no_grad():
        return float(((X @ W.t() - X @ W_pruned.t()) ** 2).sum())


# ------------------------------------------------------------------------------------------------ Wanda


def test_wanda_mask_is_its_definition_on_a_layer():
    W, X, stats = _layer_problem()
    mask = pruning.prune_mask(wanda_scores(W, stats.norm), 0.5)
    norms = X.double().pow(2).sum(0).sqrt()  # ||X_j||_2 over all tokens
    k = W.shape[1] // 2
    for i in range(W.shape[0]):  # per output row: the k lowest |W_ij| * ||X_j|| are removed
        score = W[i].double().abs() * norms
        expect = set(torch.argsort(score)[:k].tolist())
        assert set(mask[i].nonzero().flatten().tolist()) == expect, i
    assert (mask.sum(1) == k).all()  # exact sparsity in every row


def test_n_of_m_keeps_exactly_n_of_every_m():
    W, _, stats = _layer_problem()
    scores = wanda_scores(W, stats.norm)
    mask = pruning.prune_mask(scores, 0.5, 2, 4)
    kept = (~mask).reshape(W.shape[0], -1, 4)
    assert (kept.sum(-1) == 2).all()
    blocks = scores.reshape(W.shape[0], -1, 4)  # the kept two are the two highest scores of their block
    assert (blocks.masked_fill(~kept, float("inf")).amin(-1) >= blocks.masked_fill(kept, -float("inf")).amax(-1)).all()
    assert pruning.is_n_m(W.masked_fill(mask, 0), 2, 4) and not pruning.is_n_m(W, 2, 4)


def _layer0_inputs(model, tokenizer, texts, batch_size=8, max_length=256):
    """The inputs (padding removed) each linear of decoder layer 0 sees in the dense model."""
    seen, keep = {}, {}
    lins = pruning.layer_linears(pruning.decoder_layers(model)[0])
    hooks = [lin.register_forward_pre_hook(
        lambda mod, args, name=name: seen.setdefault(name, []).append(args[0].reshape(-1, args[0].shape[-1])[keep["m"]]))
        for name, lin in lins.items()]
    try:
        with torch.no_grad():
            for ids, mask in pruning.tokenize_batches(tokenizer, texts, batch_size, max_length, "cpu"):
                keep["m"] = mask.reshape(-1).bool()
                model(input_ids=ids, attention_mask=mask)
    finally:
        for h in hooks:
            h.remove()
    return {name: torch.cat(v) for name, v in seen.items()}


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_wanda_on_the_model_prunes_by_the_definition(tiny, nm):
    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    inputs = _layer0_inputs(model, tokenizer, TEXTS)
    dense = {n: lin.weight.detach().clone() for n, lin in pruning.layer_linears(model.model.layers[0]).items()}
    params = {"sparsity": 0.5} if nm is None else {"n": nm[0], "m": nm[1]}
    head_nonzero = int(model.lm_head.weight.count_nonzero())
    method = methods.build("wanda", **params)
    model = method.apply(model, tokenizer, TEXTS)
    for name, lin in pruning.layer_linears(model.model.layers[0]).items():
        norms = inputs[name].double().pow(2).sum(0).sqrt()
        score = dense[name].double().abs() * norms.reshape(1, -1)
        expect = pruning.prune_mask(score, 0.5, *(nm or (None, None)))
        assert torch.equal(lin.weight == 0, expect), name
    info = method.describe()
    assert info["linear_sparsity"] == pytest.approx(0.5) and "no memory, storage" in info["storage_note"]
    assert info.get("pattern_holds") is (True if nm else None)
    assert int(model.lm_head.weight.count_nonzero()) == head_nonzero  # LM head / embeddings untouched
    out = model.generate(**tokenizer(TEXTS[:1], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 0


# ------------------------------------------------------------------------------------------------ SparseGPT


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_reconstructs_better_than_magnitude(nm):
    W, X, stats = _layer_problem()
    n, m = nm or (None, None)
    pruned, info = sparsegpt_prune(W, stats.hessian_matrix(), sparsity=0.5, n=n, m=m, block_size=32)
    magnitude = W.masked_fill(pruning.prune_mask(W.abs(), 0.5, n, m), 0)
    assert (pruned == 0).float().mean() == pytest.approx(0.5, abs=1e-6)
    if nm:
        assert pruning.is_n_m(pruned, 2, 4)
    assert _sq_error(W, pruned, X) < 0.8 * _sq_error(W, magnitude, X)

    # llm-compressor's SparseGPT (the default backend) on the same layer: also better, and close to ours
    from llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify import sparsify_weight

    lin = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    lin.weight.data.copy_(W)
    _, theirs = sparsify_weight(lin, {lin: stats.hessian_matrix().clone()}, 0.5, (m - n) if nm else 0, m or 0,
                                32, 0.01, False)
    assert _sq_error(W, theirs, X) < 0.8 * _sq_error(W, magnitude, X)
    assert _sq_error(W, pruned, X) == pytest.approx(_sq_error(W, theirs, X), rel=0.05)
    assert ((pruned == 0) == (theirs == 0)).float().mean() > 0.97


def test_sparsegpt_raises_damping_on_an_indefinite_hessian(caplog):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(16, 2, generator=g)
    H = A @ A.t() - 0.05 * torch.eye(16)  # rank 2, slightly indefinite: plain 1 % damping fails
    with caplog.at_level("WARNING"):
        U, damp, _ = inverse_hessian_factor(H, 0.01, where="layers.3.mlp.up_proj")
    assert damp > 0.01 and torch.isfinite(U).all()
    assert "layers.3.mlp.up_proj" in caplog.text
    with pytest.raises(FloatingPointError, match="layers.3.mlp.up_proj"):
        inverse_hessian_factor(-torch.eye(4), 0.01, where="layers.3.mlp.up_proj")


@pytest.mark.parametrize("backend", ["studylib", "llmcompressor"])
def test_sparsegpt_backends_prune_the_model(tiny, backend):
    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    method = methods.build("sparsegpt", sparsity=0.5, backend=backend, block_size=32)
    model = method.apply(model, tokenizer, TEXTS)
    info = method.describe()
    assert info["linear_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert info["implementation"].startswith("llm-compressor" if backend == "llmcompressor" else "studylib")
    out = model.generate(**tokenizer(TEXTS[:1], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > 0


def test_llmcompressor_sparsegpt_leaves_a_plain_model(tiny):
    """oneshot wraps every module in compressed-tensors offloading (and save_pretrained in its own saver); left in
    place, each forward pays that Python overhead, which the decode speed recorded for the model would include."""
    from compressed_tensors.offload import OffloadCache

    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    model = methods.build("sparsegpt", sparsity=0.5, backend="llmcompressor", block_size=32).apply(model, tokenizer,
                                                                                                  TEXTS)
    wrapped = [name for name, mod in model.named_modules()
               if isinstance(mod._parameters, OffloadCache) or hasattr(mod, "_original_forward_func")]
    assert not wrapped, wrapped[:3]
    assert "save_pretrained" not in vars(model)  # the class's own saver: a dense checkpoint, nothing re-wrapped
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert pruning.sparsity_report(model)["linear_sparsity"] == pytest.approx(0.5, abs=0.01)


# ------------------------------------------------------------------------------------------------ DSnoT


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_dsnot_keeps_sparsity_and_lowers_the_reconstruction_error(nm):
    W, X, stats = _layer_problem()
    n, m = nm or (None, None)
    wanda = wanda_scores(W, stats.norm)
    init = pruning.prune_mask(wanda, 0.5, n, m)
    mask, info = dsnot_mask(W, stats.mean, stats.var, wanda, init, n=n, m=m, update_threshold=0.0)
    assert info["swaps"] > 0 and not torch.equal(mask, init)
    assert torch.equal(mask.sum(1), init.sum(1))  # same sparsity, row by row
    if nm:
        assert pruning.is_n_m(W.masked_fill(mask, 0), 2, 4)
    before, after = expected_error(W, stats.mean, init).abs(), expected_error(W, stats.mean, mask).abs()
    assert (after <= before + 1e-4).all() and after.sum() < before.sum()  # DSnoT's objective, every row
    # the squared reconstruction error on these inputs falls too
    assert _sq_error(W, W.masked_fill(mask, 0), X) < _sq_error(W, W.masked_fill(init, 0), X)


def test_dsnot_on_the_model(tiny):
    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    method = methods.build("dsnot", init="sparsegpt", sparsity=0.5, update_threshold=0.0)
    model = method.apply(model, tokenizer, TEXTS)
    info = method.describe()
    assert info["linear_sparsity"] == pytest.approx(0.5)
    assert info["dsnot"]["abs_error_after"] <= info["dsnot"]["abs_error_before"]


# ------------------------------------------------------------------------------------------------ layers


def _logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(TEXTS[:2], return_tensors="pt", padding=True)).logits


def test_layer_removal_really_shrinks_the_model_and_it_still_generates(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    n, params = model.config.num_hidden_layers, sum(p.numel() for p in model.parameters())
    kept_layer = model.model.layers[1]
    method = methods.build("layer-prune-middle", depth=1)
    model = method.apply(model, tokenizer)
    info = method.describe()
    assert info["removal_order"] == layer_mod.middle_block(n, 1) == [0]
    assert model.config.num_hidden_layers == len(model.model.layers) == n - 1
    assert model.model.layers[0] is kept_layer and kept_layer.self_attn.layer_idx == 0  # re-indexed for the cache
    assert model.config.layer_types == ["full_attention"]  # the kept layer keeps its own attention type
    assert info["params_after"] == sum(p.numel() for p in model.parameters()) < params
    out = model.generate(**tokenizer(TEXTS[:2], return_tensors="pt", padding=True), max_new_tokens=4, do_sample=False)
    assert out.shape[0] == 2
    model.save_pretrained(tmp_path)  # stock transformers reloads it: same architecture, same outputs
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert again.config.num_hidden_layers == n - 1
    assert torch.allclose(_logits(model, tokenizer), _logits(again, tokenizer), atol=1e-5)


def test_greedy_layer_pruning_records_its_order(tiny, data_root):
    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    method = methods.build("layer-prune-greedy", depth=1, dev_per_direction=1, directions=["de-en", "en-is"],
                           max_new_tokens=8, data_dir=str(data_root))
    model = method.apply(model, tokenizer)
    info = method.describe()
    sel = info["selection"]
    assert info["removal_order"] == sel["order"] and len(sel["order"]) == 1
    step = sel["steps"][0]
    assert step["dev_score"] == max(step["candidates"].values())  # the removal that costs least
    assert model.config.num_hidden_layers == 1
    assert info["dev"]["per_direction"] == {"de-en": 1, "en-is": 1}



def test_greedy_layer_selection_decodes_with_the_runs_repetition_penalty(tiny, data_root, monkeypatch):
    """Selection decodes as the run's test does: the penalty reaches every dev scoring; a bad one fails at build."""
    from studylib.methods import devset
    from studylib.runs.pruning import LayerPruneParams

    seen = []
    real = devset.dev_score
    monkeypatch.setattr(devset, "dev_score", lambda *a, **k: seen.append(k["repetition_penalty"]) or real(*a, **k))
    method = methods.build("layer-prune-greedy", depth=1, dev_per_direction=1, directions=["de-en"],
                           max_new_tokens=4, repetition_penalty=1.1, data_dir=str(data_root))
    method.apply(copy.deepcopy(tiny[0]), tiny[1])
    assert seen and set(seen) == {1.1}
    with pytest.raises(methods.MethodError, match="repetition_penalty"):
        methods.build("layer-prune-greedy", repetition_penalty=0.9)
    cfg = LayerPruneParams.load(None, {"repetition_penalty": 1.1})
    assert cfg.layer_method("iterative", 1)["repetition_penalty"] == 1.1

# ------------------------------------------------------------------------------------------------ heads


def _masked_head_logits(model, tokenizer, layer, head):
    attn = head_mod.attention_modules(model)[layer]
    hd, nh = attn.head_dim, head_mod.query_heads(attn)

    def hook(_m, args):
        x = args[0].clone().view(*args[0].shape[:-1], nh, hd)
        x[..., head, :] = 0
        return (x.reshape(args[0].shape),)

    h = attn.o_proj.register_forward_pre_hook(hook)
    try:
        return _logits(model, tokenizer)
    finally:
        h.remove()


def test_head_pruning_shrinks_q_and_o_and_equals_masking_the_head(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    reference = _masked_head_logits(model, tokenizer, layer=1, head=2)
    attns = head_mod.attention_modules(model)
    hd, kv_shape = attns[0].head_dim, [a.k_proj.weight.shape for a in attns]
    result = head_mod.prune_heads(model, {1: [2]})
    assert result["query_heads_after"] == [4, 3] and not result["uniform"]
    assert attns[1].q_proj.weight.shape == (3 * hd, attns[1].q_proj.in_features)
    assert attns[1].o_proj.weight.shape == (attns[1].o_proj.out_features, 3 * hd)
    assert [a.k_proj.weight.shape for a in attns] == kv_shape  # GQA: the shared KV head stays
    assert torch.allclose(_logits(model, tokenizer), reference, atol=1e-5)  # removing = zeroing that head
    model.save_pretrained(tmp_path)  # different counts per layer: studylib's loader rebuilds it
    again = head_mod.load_head_pruned(tmp_path)
    assert torch.allclose(_logits(again, tokenizer), reference, atol=1e-5)
    with pytest.raises(Exception):  # stock from_pretrained refuses it loudly rather than loading it wrongly
        AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)


@pytest.mark.parametrize("fraction, left, stock", [(0.25, 3, False), (0.5, 2, True)])
def test_head_prune_method_removes_the_least_important_heads(tiny, data_root, tmp_path, fraction, left, stock):
    from transformers import AutoModelForCausalLM

    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    params = sum(p.numel() for p in model.parameters())
    method = methods.build("head-prune", fraction=fraction, dev_per_direction=2, directions=["de-en", "en-de"],
                           max_length=1024, data_dir=str(data_root))  # the tiny tokenizer is byte-level: long
    model = method.apply(model, tokenizer)
    info = method.describe()
    assert info["query_heads_after"] == [left, left] and info["heads_removed"] == 2 * (4 - left) and info["uniform"]
    assert len(info["importance"]) == 2 and all(v >= 0 for row in info["importance"] for v in row)
    for layer, removed in info["removed"].items():  # the least important heads of each layer went
        row = info["importance"][int(layer)]
        assert sorted(row[h] for h in removed) == sorted(row)[: len(removed)]
    assert info["params_after"] < params
    model.generate(**tokenizer(TEXTS[:1], return_tensors="pt"), max_new_tokens=3, do_sample=False)
    model.save_pretrained(tmp_path)
    # 3 heads do not divide the hidden size 64: transformers' config validator refuses that, studylib's loader not
    assert info["stock_reload"] is stock and (info["reload"] == "stock from_pretrained") is stock
    again = (AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32) if stock
             else head_mod.load_head_pruned(tmp_path))
    assert torch.allclose(_logits(model, tokenizer), _logits(again, tokenizer), atol=1e-5)


def test_global_head_selection_normalizes_per_layer_and_keeps_a_head():
    imp = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 0.0, 5.0]])
    chosen = head_mod.select_heads(imp, fraction=0.5, scope="global")
    assert sum(map(len, chosen.values())) == 6
    assert 3 not in chosen.get(2, []) and len(chosen.get(2, [])) <= 3  # one head per layer always stays
    assert chosen[0][:1] == chosen[1][:1] == [0]  # same relative importance: normalization makes layers comparable
    per_layer = head_mod.select_heads(imp, fraction=0.25, scope="per-layer")
    assert per_layer == {0: [0], 1: [0], 2: [0]}
    gqa = head_mod.select_heads(torch.tensor([[4.0, 1.0, 2.0, 3.0]]), fraction=0.5, scope="per-layer", kv=2)
    assert gqa == {0: [1, 2]}  # one from each KV group


# ------------------------------------------------------------------------------------------------ data hygiene


def test_selection_dev_split_is_disjoint_from_every_test_split(data_root):
    from studylib.core.languages import DIRECTIONS

    dev = devset.dev_examples("all", None, root=data_root)
    assert set(dev.per_direction) == set(DIRECTIONS) and len(dev.examples) == sum(dev.per_direction.values())
    tests = leakage.test_sentences(root=data_root)
    leakage.assert_no_test_overlap(dev.examples, tests, purpose="check")  # ALMA WMT22/21, all ten directions
    for d in DIRECTIONS:
        if d.startswith("en-"):  # and WMT24
            leakage.assert_no_test_overlap(dev.examples, data.load_split("wmt24", d, "test", root=data_root), "check")
    # the guard matters: the raw valid files share 885 English sides with the en->is test sources
    raw = data.load_split("alma", "en-de", "dev", root=data_root)
    assert len(leakage.find_test_overlap(raw, tests)) == 885 and dev.dropped["en-de"] == 885
    with pytest.raises(ValueError, match="fewer than"):
        devset.dev_examples(["de-en"], 500, root=data_root)


# ------------------------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize("name, params, match", [
    ("wanda", {"sparsity": 1.2}, "sparsity"),
    ("wanda", {"sparsity": 0}, "sparsity"),
    ("wanda", {"n": 4, "m": 2}, "0 < n < m"),
    ("wanda", {"n": 2}, "both n and m"),
    ("wanda", {"n": 1, "m": 4}, "contradicts"),
    ("wanda", {"bits": 4}, "no parameter bits"),
    ("sparsegpt", {"sparsity": 1.2}, "sparsity"),
    ("sparsegpt", {"backend": "auto-gptq"}, "backend"),
    ("sparsegpt", {"damp": -1}, "damp"),
    ("dsnot", {"init": "magnitude"}, "init"),
    ("dsnot", {"n": 3, "m": 2}, "0 < n < m"),
    ("layer-prune-greedy", {"depth": 0}, "depth"),
    ("layer-prune-greedy", {"metric": "bleu"}, "metric"),
    ("layer-prune-middle", {"depth": -1}, "depth"),
    ("head-prune", {"fraction": 1.0}, "fraction"),
    ("head-prune", {"scope": "random"}, "scope"),
    ("no-such-pruner", {}, "unknown method"),
])
def test_bad_parameters_fail_at_construction(name, params, match):
    with pytest.raises(MethodError, match=match):
        methods.build(name, **params)


def test_bad_notebook_parameters_fail_before_any_model_loads():
    from studylib.runs.params import ParamsError
    from studylib.runs.pruning import HeadPruneParams, LayerPruneParams, PruneDepthParams, WandaParams

    with pytest.raises(ParamsError, match="sparsity"):
        WandaParams(recipe=[{"method": "wanda", "sparsity": 1.2}])
    with pytest.raises(ParamsError, match="unknown method"):
        WandaParams(recipe=[{"method": "wanda"}, {"method": "prune-everything"}])
    with pytest.raises(ParamsError, match="strategy"):
        LayerPruneParams(strategy="random")
    with pytest.raises(ParamsError, match="recovery"):
        PruneDepthParams(recovery="none")
    with pytest.raises(ParamsError, match="stage must be one of"):
        PruneDepthParams(stage="during")
    with pytest.raises(ParamsError, match="depth must be a positive integer"):
        PruneDepthParams(depth=0)
    with pytest.raises(ParamsError, match="head_fraction"):
        HeadPruneParams(head_fraction=1.5)


def test_semi_structured_on_cpu_says_no_kernel(tiny):
    model, tokenizer = tiny
    out = pruning.semi_structured_speed(model, tokenizer, "Hello")
    assert out["kernel"] == pruning.CPU_KERNEL == "dense (no semi-structured kernel on CPU)"


def test_layer_removal_works_on_a_llama_config_without_layer_types():
    """Llama configs carry no layer_types (Gemma-3's do): removing layers must not need them."""
    from studylib.bench.arch import build_random
    from studylib.methods.layers import remove_layers

    model = build_random("tiny-llama", dtype="float32", device="cpu")
    info = remove_layers(model, [1, 2])
    assert info["num_hidden_layers_after"] == 2 == model.config.num_hidden_layers
    assert info["layer_types_after"] == [] and info["params_after"] < info["params_before"]
    assert model(input_ids=torch.tensor([[3, 4, 5]])).logits.shape[1] == 3
