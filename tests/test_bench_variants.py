"""The benchmark's formats as built on the tiny Llama on the CPU: layers removed, 2:4 masks, Wanda layer by layer,
the random calibration and the bytes a format holds. The CUDA kernels (semi-structured sparse, Marlin, bitsandbytes)
are not here: what the CPU build falls back to is said."""

import warnings

import pytest
import torch

from studylib.bench import arch
from studylib.bench import variants as bv
from studylib.bench.params import BenchmarkParams
from studylib.bench.wanda import wanda_layerwise


def cfg(**kw):
    return BenchmarkParams(**{"wanda_calib_samples": 2, "wanda_calib_tokens": 8, **kw})


def test_layer_pruning_really_removes_layers_and_parameters():
    full = bv.build_variant("fp16", cfg())
    half = bv.build_variant("layers-50", cfg())
    three_quarters = bv.build_variant("layers-75", cfg())
    model = half.model
    assert model.config.num_hidden_layers == len(model.model.layers) == 2
    assert half.info["removed"] == [1, 2] and half.info["layers_after"] == 2  # the middle block
    assert three_quarters.model.config.num_hidden_layers == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(model) < n(three_quarters.model) < n(full.model) and half.info["params_after"] == n(model)
    out = model.generate(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=3, min_new_tokens=3, do_sample=False,
                         pad_token_id=0)
    assert out.shape == (1, 6)  # the KV cache follows the new layer count


def test_2of4_magnitude_mask_zeros_exactly_two_of_every_four_on_cpu():
    built = bv.build_variant("sparse-2of4", cfg(storage=False))
    linears = bv.decoder_linears(built.model)
    assert len(linears) == 4 * 7 and built.info["pattern_holds"]
    for name, lin in linears.items():
        w = lin.weight.detach()
        assert not w.is_sparse and w.dtype == torch.float16  # CPU: masked dense, said in the kernel
        zeros = (w.reshape(w.shape[0], -1, 4) == 0).sum(-1)
        assert bool((zeros == 2).all()), name
    assert "no semi-structured sparse kernel on CPU" in built.kernel
    assert "zeros" in built.storage_note and "not saved" in built.storage_note
    # the two kept weights of each group are the two largest in magnitude
    fresh = arch.build_random("tiny-llama", "float16", "cpu", seed=0)
    w0 = fresh.model.layers[0].self_attn.q_proj.weight.detach().abs().reshape(-1, 4).float()
    kept = linears["0.self_attn.q_proj"].weight.detach().reshape(-1, 4) != 0
    assert bool((w0.masked_fill(~kept, float("inf")).min(-1).values >= w0.masked_fill(kept, 0).max(-1).values).all())


def test_no_semi_structured_kernel_is_an_error_naming_what_was_tried_and_leaves_the_weights_dense():
    model = arch.build_random("tiny-llama", "float16", "cpu")
    linears = bv.decoder_linears(model)
    with pytest.raises(RuntimeError, match="no semi-structured sparse kernel ran.*cusparselt.*cutlass"):
        bv.to_semi_structured(linears, "auto")
    assert all(type(lin.weight) is torch.nn.Parameter and lin.weight.layout == torch.strided
               for lin in linears.values())


def test_wanda_50_prunes_half_of_every_row_and_times_the_pruning_alone():
    built = bv.build_variant("wanda-50", cfg())
    assert built.info["sparsity"] == 0.5 and built.info["linear_sparsity"] == 0.5 and built.compress_seconds > 0
    assert built.info["layers"] == 4 and built.info["calibration_tokens"] == 16
    for lin in bv.decoder_linears(built.model).values():
        assert bool(((lin.weight == 0).sum(1) == lin.in_features // 2).all())
    assert built.kernel.startswith("dense float16 matmul on CPU") and "zeros" in built.storage_note


def test_wanda_layer_by_layer_prunes_each_row_by_weight_times_input_norm():
    from studylib.methods.pruning import prune_mask
    from studylib.methods.wanda import wanda_scores

    model = arch.build_random("tiny-llama", "float32", "cpu")
    ids = bv.random_token_ids(512, 3, 8, seed=0)
    layer0 = model.model.layers[0]
    before = layer0.self_attn.q_proj.weight.detach().clone()
    with torch.no_grad():  # what layer 0's q_proj sees: the normed embeddings (no earlier layer to prune)
        x = layer0.input_layernorm(model.model.embed_tokens(ids)).reshape(-1, 128)
    expected = prune_mask(wanda_scores(before, x.pow(2).sum(0).sqrt()), 0.5)
    done = wanda_layerwise(model, ids, sparsity=0.5, batch_size=2, progress=False)
    assert done == {"layers": 4, "calibration_tokens": 24}
    assert torch.equal(layer0.self_attn.q_proj.weight == 0, expected)


def test_wanda_layer_by_layer_matches_the_study_wanda_method_on_the_same_tokens():
    """The benchmark's one-pass-per-layer Wanda gives the masks of studylib.methods.wanda (which re-runs the stack up
    to each layer), fed the same token ids through a stub tokenizer."""
    from studylib.methods import build

    ids = bv.random_token_ids(512, 4, 12, seed=1)

    class Ids:  # "text i" -> row i of ids, no padding
        def __call__(self, texts, **kwargs):
            rows = torch.stack([ids[int(t.split()[1])] for t in texts])
            return {"input_ids": rows, "attention_mask": torch.ones_like(rows)}

    ours = arch.build_random("tiny-llama", "float32", "cpu")
    study = arch.build_random("tiny-llama", "float32", "cpu")
    wanda_layerwise(ours, ids, sparsity=0.5, batch_size=2, progress=False)
    build("wanda", sparsity=0.5, batch_size=2).apply(study, Ids(), [f"text {i}" for i in range(4)])
    a, b = bv.decoder_linears(ours), bv.decoder_linears(study)
    differ = sum(int(((a[k].weight == 0) != (b[k].weight == 0)).sum()) for k in a)
    total = sum(a[k].weight.numel() for k in a)
    # 0 on the CPU here; room for near-ties of float rounding (unrelated masks would differ in half the weights)
    assert differ <= total * 1e-3, (differ, total)


def test_random_calibration_and_placeholder_tokenizer():
    ids = bv.random_token_ids(32000, 4, 16, seed=3)
    assert ids.shape == (4, 16) and int(ids.min()) >= 3 and int(ids.max()) < 32000
    assert torch.equal(ids, bv.random_token_ids(32000, 4, 16, seed=3))
    tok = bv.placeholder_tokenizer()
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)


def test_floor_bytes_leave_out_all_but_one_row_of_the_input_embeddings():
    model = arch.build_random("tiny-llama", "float16", "cpu")
    total = sum(p.numel() * 2 for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())
    assert arch.weight_bytes(model) == total
    emb = model.get_input_embeddings().weight
    assert arch.floor_bytes(model) == total - emb.numel() * 2 + emb.shape[1] * 2


def test_semi_structured_weights_count_their_packed_values_and_metadata():
    from torch.sparse import SparseSemiStructuredTensorCUTLASS

    packed, meta = torch.zeros(64, 64, dtype=torch.float16), torch.zeros(64, 8, dtype=torch.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "prototype stage", said once per process
        w = SparseSemiStructuredTensorCUTLASS(torch.Size([64, 128]), packed, meta, None, None, None)
    assert w.numel() == 64 * 128 and arch.tensor_bytes(w) == 64 * 64 * 2 + 64 * 8 * 2


def test_an_unknown_variant_is_refused_by_the_builder_too():
    with pytest.raises(ValueError, match="unknown benchmark variant 'gptq-w3'"):
        bv.build_variant("gptq-w3", cfg())
