"""Attention-head pruning with Michel et al.'s (2019, "Are Sixteen Heads Really Better than One?") importance.

Importance of query head ``h`` in layer ``l``: ``I_lh = sum over dev batches of |dL/dxi_lh|``, where ``xi_lh`` is a
gate multiplying the head's output (all gates 1) and ``L`` the teacher-forced cross-entropy on the reference
translation (prompt masked) of ALMA dev pairs (test overlap dropped and asserted,
:func:`studylib.methods.devset.dev_examples`). The gates sit on ``o_proj``'s input, where the heads' outputs are
concatenated, so one backward pass per batch gives every head's importance. For a global ranking the scores are
normalized per layer (L2), as Michel et al. do.

Grouped-query attention (GQA)
    Gemma-3-270M has 4 query heads per layer sharing 1 key/value head. Removing a query head removes its
    ``head_dim`` rows of ``q_proj`` and ``head_dim`` columns of ``o_proj``; ``k_proj``/``v_proj`` (and the KV cache)
    stay, because the remaining query heads still read the shared KV head -- head pruning shrinks attention
    compute and parameters, not the KV cache. With several KV heads (a GQA group per KV head), the same number of
    query heads is removed from every group, so that ``repeat_kv``'s mapping (query head ``j`` reads KV head
    ``j // (heads_kept / kv_heads)``) stays right; the last query head of a group is never removed.

Per-layer head counts
    transformers' ``Gemma3Attention`` sizes its projections from the global ``config.num_attention_heads`` but its
    forward pass only uses ``view(..., -1, head_dim)`` and the module's own ``num_key_value_groups``. So layers with
    different head counts *run* once the projections are shrunk and ``num_key_value_groups`` is set per layer
    (done here). What the stock config cannot describe is a *checkpoint* with different counts per layer:

    * ``scope="per-layer"`` (default): the same number of heads (the lowest-importance ones of that layer) leaves
      every layer.
    * ``scope="global"``: Michel et al.'s global ranking over all layers (normalized per layer; at least one query
      head kept in every layer); the counts can differ per layer. Global scope needs one KV head per layer (true of
      Gemma-3-270M).

    The counts and kept heads are always written to the config (``studylib_head_pruning``). Only when every layer
    has the same count *and* that count divides ``hidden_size`` (transformers' config validator insists on it, even
    though Gemma-3's explicit ``head_dim`` makes it irrelevant) does ``config.num_attention_heads`` change and the
    checkpoint reload with stock ``from_pretrained`` -- Gemma-3-270M with 1 of 4 heads removed (3 left, hidden
    640) does not qualify. Otherwise :func:`load_head_pruned` rebuilds the checkpoint; stock ``from_pretrained``
    refuses it with a shape mismatch rather than loading it wrongly. The record says which applies (``reload``).
"""

from __future__ import annotations

import logging

from studylib.methods import devset, pruning
from . import Method, MethodError, register

log = logging.getLogger(__name__)
SCOPES = ("per-layer", "global")


def attention_modules(model) -> list:
    return [layer.self_attn for layer in pruning.decoder_layers(model)]


def query_heads(attn) -> int:
    return attn.q_proj.out_features // attn.head_dim


def kv_heads(attn) -> int:
    return attn.k_proj.out_features // attn.head_dim


def _batches(tokenizer, pairs, batch_size, max_length, device):
    import torch

    from studylib.core.training import encode_pairs

    encoded, skipped = encode_pairs(tokenizer, pairs, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (x, y) in enumerate(chunk):
            ids[row, :len(x)] = torch.tensor(x)
            labels[row, :len(y)] = torch.tensor(y)
            mask[row, :len(x)] = 1
        yield ids.to(device), mask.to(device), labels.to(device)


def head_importance(model, tokenizer, pairs, *, batch_size: int = 8, max_length: int = 256):
    """``(layers, query heads)`` tensor of ``sum_batches |dL/dgate|`` (Michel et al. 2019), float32 on CPU."""
    import torch

    attns = attention_modules(model)
    counts = [query_heads(a) for a in attns]
    if len(set(counts)) != 1:
        raise ValueError(f"importance needs the same head count in every layer, got {counts}")
    n_layers, n_heads = len(attns), counts[0]
    device = next(model.parameters()).device
    gates = torch.ones(n_layers, n_heads, device=device, dtype=torch.float32, requires_grad=True)
    importance = torch.zeros(n_layers, n_heads, dtype=torch.float32)
    handles = []

    def gate_hook(layer_index, head_dim):
        def hook(_module, args):
            x = args[0]
            shape = x.shape
            g = gates[layer_index].to(x.dtype).view(*([1] * (x.dim() - 1)), n_heads, 1)
            return ((x.view(*shape[:-1], n_heads, head_dim) * g).reshape(shape),) + tuple(args[1:])
        return hook

    requires = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    batches = 0
    try:
        for i, attn in enumerate(attns):
            handles.append(attn.o_proj.register_forward_pre_hook(gate_hook(i, attn.head_dim)))
        for ids, mask, labels in _batches(tokenizer, pairs, batch_size, max_length, device):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
            loss.backward()
            importance += gates.grad.detach().abs().float().cpu()
            gates.grad = None
            batches += 1
    finally:
        for h in handles:
            h.remove()
        for name, p in model.named_parameters():
            p.requires_grad_(requires.get(name, False))
        model.train(was_training)
    if not batches:
        raise ValueError("no dev pair fits max_length: no importance measured")
    return importance


def select_heads(importance, *, fraction: float, scope: str, kv: int = 1) -> dict:
    """``{layer: [query heads to remove]}``: ``round(fraction * heads)`` per layer (``per-layer``) or
    ``round(fraction * all heads)`` over the model by per-layer L2-normalized importance (``global``)."""
    import torch

    n_layers, n_heads = importance.shape
    if n_heads % kv:
        raise ValueError(f"{n_heads} query heads do not split into {kv} KV groups")
    group = n_heads // kv
    if scope == "per-layer":
        r = round(fraction * n_heads)
        if r < 1 or r % kv or r // kv >= group:
            raise ValueError(f"fraction {fraction} removes {r} of {n_heads} heads per layer: it must be at least one, a "
                             f"multiple of the {kv} KV group(s), and leave a head in each group")
        out = {}
        for layer in range(n_layers):
            removed = []
            for g in range(kv):
                heads = list(range(g * group, (g + 1) * group))
                ranked = sorted(heads, key=lambda h: (float(importance[layer, h]), h))
                removed += ranked[: r // kv]
            out[layer] = sorted(removed)
        return out
    if scope != "global":
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if kv != 1:
        raise ValueError("global head ranking needs one KV head per layer; use scope='per-layer' with GQA groups")
    norm = importance / importance.norm(dim=1, keepdim=True).clamp_min(1e-12)
    total = round(fraction * n_layers * n_heads)
    if not 1 <= total <= n_layers * (n_heads - 1):
        raise ValueError(f"fraction {fraction} removes {total} of {n_layers * n_heads} heads; it must remove at least "
                         f"one and leave one per layer")
    ranked = sorted(((float(norm[l, h]), l, h) for l in range(n_layers) for h in range(n_heads)))
    out: dict = {l: [] for l in range(n_layers)}
    chosen = 0
    for _, l, h in ranked:
        if chosen == total:
            break
        if len(out[l]) < n_heads - 1:  # keep one head per layer
            out[l].append(h)
            chosen += 1
    return {l: sorted(v) for l, v in out.items() if v}


def shrink_attention(attn, keep: list[int]):
    """Keep only query heads ``keep`` (sorted) of one attention module: q_proj rows and o_proj columns go."""
    import torch
    import torch.nn as nn

    hd = attn.head_dim
    keep = sorted(keep)
    n_kv = kv_heads(attn)
    if not keep or len(keep) % n_kv:
        raise ValueError(f"{len(keep)} query heads kept do not split evenly over {n_kv} KV heads")
    idx = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in keep]).to(attn.q_proj.weight.device)
    q, o = attn.q_proj, attn.o_proj
    new_q = nn.Linear(q.in_features, len(keep) * hd, bias=q.bias is not None, device=q.weight.device,
                      dtype=q.weight.dtype)
    new_o = nn.Linear(len(keep) * hd, o.out_features, bias=o.bias is not None, device=o.weight.device,
                      dtype=o.weight.dtype)
    with torch.no_grad():
        new_q.weight.copy_(q.weight[idx])
        if q.bias is not None:
            new_q.bias.copy_(q.bias[idx])
        new_o.weight.copy_(o.weight[:, idx])
        if o.bias is not None:
            new_o.bias.copy_(o.bias)
    attn.q_proj, attn.o_proj = new_q, new_o
    attn.num_key_value_groups = len(keep) // n_kv  # what eager/sdpa attention use to repeat the KV heads
    return attn


def prune_heads(model, remove: dict) -> dict:
    """Remove query heads ``{layer: [heads]}`` for good; update the config. Returns the per-layer counts."""
    attns = attention_modules(model)
    before = [query_heads(a) for a in attns]
    kept_heads = []
    for layer, attn in enumerate(attns):
        drop = set(remove.get(layer, []))
        keep = [h for h in range(before[layer]) if h not in drop]
        if drop:
            shrink_attention(attn, keep)
        kept_heads.append(keep)
    counts = [query_heads(a) for a in attns]
    config = model.config
    config.head_dim = attns[0].head_dim  # explicit, so that a new num_attention_heads cannot change it
    config.studylib_head_pruning = {"query_heads_per_layer": counts, "kept_heads": kept_heads,
                                    "query_heads_before": before}
    # stock transformers can describe the result only with one head count everywhere that also divides the hidden
    # size (its config validator insists, although Gemma-3's explicit head_dim makes that irrelevant)
    stock = len(set(counts)) == 1 and config.hidden_size % counts[0] == 0
    config.num_attention_heads = counts[0] if stock else before[0]
    return {"query_heads_before": before, "query_heads_after": counts, "kept_heads": kept_heads,
            "uniform": len(set(counts)) == 1, "stock_reload": stock}


def load_head_pruned(path, dtype: str = "float32", device: str = "cpu"):
    """Load a checkpoint saved after head pruning with different head counts per layer (``scope='global'``).
    Checkpoints with the same count everywhere load with ``from_pretrained`` as they are."""
    from pathlib import Path

    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    spec = getattr(config, "studylib_head_pruning", None)
    if not spec:
        return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
    config.num_attention_heads = max(spec["query_heads_per_layer"])
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    for attn, count in zip(attention_modules(model), spec["query_heads_per_layer"]):
        if query_heads(attn) != count:
            shrink_attention(attn, list(range(count)))
    state = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit the pruned architecture (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.to(device).eval()


@register
class HeadPrune(Method):
    name = "head-prune"
    family = "pruning"
    paper = "Michel, Levy & Neubig 2019, Are Sixteen Heads Really Better than One? (gradient head importance)"
    defaults = {"fraction": 0.25, "scope": "per-layer", "dev_per_direction": 16, "directions": "all", "seed": 0,
                "prompt_style": "alma", "batch_size": 8, "max_length": 256, "data_dir": None}

    def check(self):
        p = self.params
        f = p["fraction"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise MethodError(f"fraction (of query heads removed) must be in (0, 1), got {f!r}")
        if p["scope"] not in SCOPES:
            raise MethodError(f"scope must be one of {SCOPES}, got {p['scope']!r}")
        devset.check_dev_selection_params(p, ("dev_per_direction", "batch_size", "max_length"), MethodError)

    def apply(self, model, tokenizer, calibration=None):
        from studylib.core import prompts

        p = self.params
        dev = devset.dev_examples(p["directions"], p["dev_per_direction"], seed=p["seed"], root=p["data_dir"])
        pairs = [prompts.training_text(ex, p["prompt_style"], tokenizer=tokenizer) for ex in dev.examples]
        importance = head_importance(model, tokenizer, pairs, batch_size=p["batch_size"], max_length=p["max_length"])
        kv = {kv_heads(a) for a in attention_modules(model)}
        try:
            remove = select_heads(importance, fraction=p["fraction"], scope=p["scope"], kv=max(kv))
        except ValueError as err:
            raise MethodError(str(err)) from err
        before = sum(x.numel() for x in model.parameters())
        result = prune_heads(model, remove)
        self.info.update(importance=importance.tolist(), removed={str(k): v for k, v in remove.items()},
                         heads_removed=sum(len(v) for v in remove.values()), **result,
                         kv_heads_per_layer=max(kv), params_before=before,
                         params_after=sum(x.numel() for x in model.parameters()), dev=dev.describe(),
                         gqa_note="query heads removed from q_proj/o_proj; k_proj/v_proj and the KV cache unchanged",
                         reload=("stock from_pretrained" if result["stock_reload"]
                                 else "studylib.methods.heads.load_head_pruned"))
        return model
