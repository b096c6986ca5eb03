"""The GGUF-grid control: the fine-tuned model's weights put back on the grid the base model came on.

The offline default is Gemma-3-270M from a mixed Q4_K_M GGUF, dequantized: of its 127 quantized tensors 10 are Q8_0
(the token embedding among them), 81 Q5_0, 27 Q4_K and 9 Q6_K. Every block of a quantized tensor holds
values ``a * q + b`` for integer ``q`` in a fixed range, with ``a`` and ``b`` set per block (or sub-block) by the
file. Fine-tuning moves the weights by a fraction of that grid's step, so a format that rounds onto *another* grid
adds noise of the size of the whole update, while 8-bit formats sit near the base grid almost by construction: the
base model's origin is a confound of every quantization result.

This method measures it: each weight of a tensor the GGUF holds quantized is rounded to the nearest point of the
*same* block grid (the file's own ``a`` and ``b``, ``q`` clipped to its range), so the model keeps exactly the part
of the fine-tuning update that crosses grid points. Tensors the file holds in float (norms) are left as they are.
``info`` says, per tensor type, how many weights the update moved to another grid point and how much of the update
(in L2) survives.

The grids follow ggml's block layouts as gguf-py 0.19 dequantizes them (``gguf.quants``): Q8_0 ``d * q``
(q in -128..127, blocks of 32); Q5_0 ``d * (q - 16)`` (q in 0..31, blocks of 32); Q4_K ``d * sc_j * q - dmin * m_j``
(q in 0..15, eight sub-blocks of 32 per block of 256); Q6_K ``d * sc_j * (q - 32)`` (q in 0..63, sixteen sub-blocks
of 16). A test checks that ``a * q + b`` with each block's own ``q`` gives gguf-py's dequantized values exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from studylib.methods import Method, MethodError, register

# tensor-name parts of the GGUF (llama.cpp's names) and the module paths transformers gives Gemma-3
_GGUF_TO_HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
               "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
               "ffn_down": "mlp.down_proj"}


def hf_name(gguf_name: str) -> str | None:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``; ``token_embd.weight`` ->
    ``model.embed_tokens.weight``; None for a tensor with no quantized HF counterpart handled here."""
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_TO_HF and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{_GGUF_TO_HF[parts[2]]}.weight"
    return None


def _f16(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


def block_grid(type_name: str, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The grid of each weight of ``blocks`` (raw bytes, one row a block): ``(a, b, q_min, q_max)`` with ``a`` and
    ``b`` shaped (n_blocks, weights a block), so that a weight's possible values are ``a * q + b``."""
    from gguf.quants import QK_K, Q4_K

    n = blocks.shape[0]
    if type_name == "Q8_0":
        d = _f16(blocks[:, :2])
        return np.repeat(d, 32, axis=1), np.zeros((n, 32), np.float32), -128, 127
    if type_name == "Q5_0":
        d = np.repeat(_f16(blocks[:, :2]), 32, axis=1)
        return d, -16.0 * d, 0, 31
    if type_name == "Q4_K":
        d, dmin = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
        sc, m = Q4_K.get_scale_min(np.ascontiguousarray(blocks[:, 4:4 + Q4_K.K_SCALE_SIZE]))
        a = np.repeat(d * sc.astype(np.float32), 32, axis=1)
        b = -np.repeat(dmin * m.astype(np.float32), 32, axis=1)
        return a, b, 0, 15
    if type_name == "Q6_K":
        scales = np.ascontiguousarray(blocks[:, QK_K // 2 + QK_K // 4:QK_K // 2 + QK_K // 4 + QK_K // 16])
        d = _f16(blocks[:, -2:])
        a = np.repeat(d * scales.view(np.int8).astype(np.float32), 16, axis=1)
        return a, -32.0 * a, 0, 63
    raise MethodError(f"no grid for GGUF tensor type {type_name} (handled: Q8_0, Q5_0, Q4_K, Q6_K)")


def snap(values: np.ndarray, a: np.ndarray, b: np.ndarray, q_min: int, q_max: int) -> np.ndarray:
    """Each value rounded to the nearest point ``a * q + b`` of its own grid (``q`` clipped to its range); where a
    sub-block's step ``a`` is 0 its only value is ``b``."""
    safe = np.where(a == 0, 1.0, a)
    q = np.clip(np.rint((values - b) / safe), q_min, q_max)
    return np.where(a == 0, b, a * q + b).astype(np.float32)


def tensor_grids(gguf_path):
    """Every quantized tensor of the file, one at a time: ``(hf parameter name, type name, a, b, q_min, q_max,
    base)`` with ``a``, ``b`` and the dequantized ``base`` values flat in the HF weight's (row-major) order."""
    import gguf
    from gguf.quants import dequantize

    for t in gguf.GGUFReader(str(gguf_path)).tensors:
        name, kind = hf_name(t.name), t.tensor_type.name
        if name is None or kind in ("F32", "F16", "BF16"):
            continue
        _, block_bytes = gguf.GGML_QUANT_SIZES[t.tensor_type]
        raw = np.asarray(t.data)
        a, b, lo, hi = block_grid(kind, raw.reshape(-1, block_bytes))
        yield name, kind, a.reshape(-1), b.reshape(-1), lo, hi, dequantize(raw, t.tensor_type).reshape(-1)


def grid_index(values: np.ndarray, a: np.ndarray, b: np.ndarray, q_min: int, q_max: int) -> np.ndarray:
    """The grid point ``q`` nearest to each value (0 where the step is 0)."""
    return np.clip(np.rint((values - b) / np.where(a == 0, 1.0, a)), q_min, q_max) * (a != 0)


TINY_TYPES = {"token_embd.weight": "Q8_0", "default": "Q5_0"}  # the smoke profile's stand-in for a mixed GGUF


def write_tiny_gguf(model_dir, path) -> None:
    """A GGUF of a small Gemma-3 checkpoint's embedding (Q8_0) and decoder linears (Q5_0), llama.cpp's names, for
    the smoke profile and the tests: the tiny model has no GGUF of its own. Only the tensors this method reads."""
    import gguf
    import torch
    from safetensors.torch import load_file

    state = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        state.update(load_file(str(f)))
    hf_to_gguf = {"model.embed_tokens.weight": "token_embd.weight"}
    for name in state:
        parts = name.split(".")
        if len(parts) == 6 and parts[:2] == ["model", "layers"]:
            for g, h in _GGUF_TO_HF.items():
                if name.endswith(f".{h}.weight"):
                    hf_to_gguf[name] = f"blk.{parts[2]}.{g}.weight"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    for hf, g in sorted(hf_to_gguf.items(), key=lambda kv: kv[1]):
        kind = gguf.GGMLQuantizationType[TINY_TYPES.get(g, TINY_TYPES["default"])]
        w = state[hf].to(torch.float32).numpy()
        q = gguf.quants.quantize(w, kind)
        writer.add_tensor(g, q, raw_shape=q.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def base_gguf(base: str) -> Path:
    """The GGUF file of ``base``: the offline default's (assembled from its wheels), a tiny one written once for
    ``tiny-gemma3``, or a path to a ``.gguf``."""
    from studylib.core import gemma_gguf, models

    if base == "gemma-3-270m":
        return gemma_gguf.assemble_gguf(models.cache_dir() / "gguf")
    if base == models.TINY_MODEL:
        path = models.cache_dir() / f"{models.TINY_MODEL}-grid.gguf"
        if not path.exists():
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            write_tiny_gguf(models.build_tiny_model(), tmp)
            os.replace(tmp, path)
        return path
    return Path(base)


@register
class GGUFGrid(Method):
    """Round the model's weights onto the base GGUF's own block grids (see the module's docstring)."""

    name = "gguf-grid"
    family = "control"
    paper = "control for the base model's GGUF origin (issue: Study v2, item 5)"
    defaults = {"base": "gemma-3-270m"}  # whose GGUF: gemma-3-270m, tiny-gemma3 (smoke), or a .gguf path

    def check(self) -> None:
        from studylib.core import models

        base = self.params["base"]
        if base not in ("gemma-3-270m", models.TINY_MODEL) and not str(base).endswith(".gguf"):
            raise MethodError(f"gguf-grid base must be gemma-3-270m, {models.TINY_MODEL} or a .gguf file, got {base!r}")

    def apply(self, model, tokenizer, calibration=None):
        import torch

        path = base_gguf(self.params["base"])
        params = dict(model.named_parameters())
        per_type: dict = {}
        with torch.no_grad():
            for name, kind, a, b, lo, hi, base in tensor_grids(path):
                p = params.get(name)
                if p is None or p.numel() != a.size:
                    raise MethodError(f"gguf-grid: {name} ({a.size} weights in the GGUF) is not in the model or "
                                      "has another size: is it the GGUF's model?")
                w = p.detach().float().cpu().numpy().reshape(-1).copy()  # p is overwritten below
                new = snap(w, a, b, lo, hi)
                p.copy_(torch.from_numpy(new.reshape(tuple(p.shape))).to(p.dtype))
                s = per_type.setdefault(kind, {"tensors": 0, "weights": 0, "moved": 0, "update_l2_sq": 0.0,
                                               "kept_l2_sq": 0.0})
                s["tensors"] += 1
                s["weights"] += int(w.size)
                s["moved"] += int(np.count_nonzero(grid_index(new, a, b, lo, hi) != grid_index(base, a, b, lo, hi)))
                s["update_l2_sq"] += float(np.sum((w.astype(np.float64) - base) ** 2))
                s["kept_l2_sq"] += float(np.sum((new.astype(np.float64) - base) ** 2))
        if not per_type:
            raise MethodError(f"gguf-grid: {path} holds no quantized tensor this method reads")
        for s in per_type.values():
            s["moved_share"] = s["moved"] / s["weights"]
            s["update_kept"] = (s["kept_l2_sq"] / s["update_l2_sq"]) ** 0.5 if s["update_l2_sq"] else None
        self.info = {"gguf": path.name, "per_type": per_type,
                     "kernel": "dense: the rounded weights are served in the run's dtype",
                     "what": "weights rounded to the base GGUF's own block grids; moved: weights now on another "
                             "grid point than the base's; update_kept: L2 of (rounded - base) over L2 of "
                             "(fine-tuned - base)"}
        return model
