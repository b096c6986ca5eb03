"""The GGUF-grid control: each block type's grid gives gguf-py's own dequantized values, rounding is to the nearest
point of the weight's own grid, and the GGUF's names map to the HF checkpoint's."""

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize  # noqa: E402

from studylib.methods import MethodError, build  # noqa: E402
from studylib.methods import gguf_grid as G  # noqa: E402

T = gguf.GGMLQuantizationType


def _blocks(kind: str, n: int, rng) -> np.ndarray:
    """``n`` blocks of ``kind``: random quant bits and scale bytes, finite float16 step sizes."""
    _, size = gguf.GGML_QUANT_SIZES[T[kind]]
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    d = rng.uniform(1e-4, 1e-2, size=(n, 1)).astype(np.float16).view(np.uint8)
    if kind == "Q6_K":
        raw[:, -2:] = d
    else:
        raw[:, :2] = d
        if kind == "Q4_K":
            raw[:, 2:4] = rng.uniform(1e-4, 1e-2, size=(n, 1)).astype(np.float16).view(np.uint8)
    return raw


@pytest.mark.parametrize("kind", ["Q8_0", "Q5_0", "Q4_K", "Q6_K"])
def test_each_block_is_a_times_q_plus_b_exactly(kind):
    rng = np.random.default_rng(0)
    raw = _blocks(kind, 64, rng)
    values = dequantize(raw, T[kind]).reshape(-1)
    a, b, lo, hi = G.block_grid(kind, raw)
    a, b = a.reshape(-1), b.reshape(-1)
    q = G.grid_index(values, a, b, lo, hi)
    assert q.min() >= lo and q.max() <= hi
    np.testing.assert_array_equal(a * q + b, values)
    np.testing.assert_array_equal(G.snap(values, a, b, lo, hi), values)  # on the grid already: unchanged


def test_snap_takes_the_nearest_point_and_clips_to_the_range():
    a = np.array([0.5, 0.5, 0.5, 0.0], np.float32)
    b = np.array([-1.0, -1.0, -1.0, 0.25], np.float32)
    out = G.snap(np.array([0.2, 0.3, 9.0, 3.0], np.float32), a, b, 0, 3)
    np.testing.assert_allclose(out, [0.0, 0.5, 0.5, 0.25])  # nearest; clipped at q=3; a zero step leaves b


def test_gguf_names_map_to_the_hf_checkpoint():
    assert G.hf_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert G.hf_name("blk.17.ffn_down.weight") == "model.layers.17.mlp.down_proj.weight"
    assert G.hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert G.hf_name("blk.0.attn_norm.weight") is None


def test_an_unknown_block_type_fails_in_one_line():
    with pytest.raises(MethodError, match="no grid for GGUF tensor type Q2_K"):
        G.block_grid("Q2_K", np.zeros((1, 84), np.uint8))


def test_the_method_is_registered_and_takes_only_its_parameter():
    assert build("gguf-grid").params == {"base": "gemma-3-270m"}
    with pytest.raises(MethodError, match="has no parameter bits"):
        build("gguf-grid", bits=4)


def test_the_real_file_matches_where_it_is_there():
    """On the offline default's GGUF (when this machine has assembled it): the first tensors' grids reproduce the
    file's dequantized values (the full check of all 127 tensors against the materialized checkpoint takes ~45 s)."""
    from studylib.core import models

    path = models.cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if not path.exists():
        pytest.skip("the GGUF is not assembled here")
    for i, (name, kind, a, b, lo, hi, base) in enumerate(G.tensor_grids(path)):
        np.testing.assert_array_equal(G.snap(base, a, b, lo, hi), base, err_msg=name)
        if i == 3:
            break


def test_the_tiny_models_gguf_is_written_once_and_the_control_rounds_onto_it(tmp_path, monkeypatch):
    """The smoke profile's stand-in: a Q8_0/Q5_0 GGUF of the tiny model; rounding the tiny model itself onto it moves
    few weights, and rounding twice changes nothing."""
    import torch

    from studylib.core import models

    monkeypatch.setenv("STUDYLIB_CACHE", str(tmp_path))
    path = G.base_gguf(models.TINY_MODEL)
    assert path.is_file() and G.base_gguf(models.TINY_MODEL) == path
    kinds = {kind for _, kind, *_ in G.tensor_grids(path)}
    assert kinds == {"Q8_0", "Q5_0"}
    model, tok = models.load_model(models.TINY_MODEL, "float32", "cpu")
    method = build("gguf-grid", base=models.TINY_MODEL)
    method.apply(model, tok)
    once = {n: p.detach().clone() for n, p in model.named_parameters()}
    per_type = method.info["per_type"]
    assert set(per_type) == kinds and all(0 <= s["moved_share"] < 0.05 for s in per_type.values())
    build("gguf-grid", base=models.TINY_MODEL).apply(model, tok)
    assert all(torch.equal(once[n], p) for n, p in model.named_parameters())


def test_bad_parameters_fail_before_any_model_loads():
    from studylib.runs.params import ParamsError
    from studylib.runs.quantization import GGUFGridParams

    with pytest.raises(MethodError, match="base must be gemma-3-270m"):
        build("gguf-grid", base="llama")
    with pytest.raises(ParamsError, match="17_gguf_grid runs 'gguf-grid'"):
        GGUFGridParams(recipe=[{"method": "bnb-nf4"}])
