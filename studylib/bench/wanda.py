"""Wanda, one pass per decoder layer, on token ids: the ``wanda-50`` format's build and its timed compression.

The paper's procedure, layer by layer: the calibration activations entering decoder layer 0 are captured once; each
layer's linears collect the input norms ``||X_j||`` over all calibration tokens, are pruned with
``studylib.methods.wanda.wanda_scores`` and ``studylib.methods.pruning.prune_mask`` (per output row), and the layer
is run again to give the next layer its inputs (as the reference implementation does). The study's ``wanda`` method
gives the same masks from texts and a tokenizer, re-running the stack up to each layer; the benchmark has neither,
and one pass per layer is the reference's cost.
"""

from __future__ import annotations

import torch


class _Captured(Exception):
    pass


def wanda_layerwise(model, input_ids, *, sparsity: float, batch_size: int, progress: bool = True) -> dict:
    """Wanda (unstructured, per output row) of every decoder linear, one layer at a time on ``input_ids``
    (samples x tokens), each layer seeing the outputs of the already pruned layers before it. In place."""
    from tqdm.auto import tqdm

    from studylib.methods.pruning import InputStats, decoder_layers, layer_linears, prune_mask
    from studylib.methods.wanda import wanda_scores

    layers = decoder_layers(model)
    device = next(model.parameters()).device
    cache = []  # [hidden states, layer kwargs] per batch

    def capture(_module, args, kwargs):
        cache.append([args[0] if args else kwargs.pop("hidden_states"), kwargs])
        raise _Captured

    handle = layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            for start in range(0, len(input_ids), batch_size):
                try:
                    model(input_ids=input_ids[start:start + batch_size].to(device), use_cache=False)
                except _Captured:
                    pass
    finally:
        handle.remove()
    tokens = sum(h.shape[0] * h.shape[1] for h, _ in cache)
    for layer in tqdm(layers, desc="wanda: layers", disable=not progress):
        linears = layer_linears(layer)
        stats = {name: InputStats(lin.in_features) for name, lin in linears.items()}
        hooks = [lin.register_forward_pre_hook(
                     lambda _m, args, s=stats[name]: s.add(args[0].reshape(-1, args[0].shape[-1])))
                 for name, lin in linears.items()]
        try:
            with torch.no_grad():
                for hidden, kwargs in cache:
                    layer(hidden, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        with torch.no_grad():
            for name, lin in linears.items():
                lin.weight[prune_mask(wanda_scores(lin.weight, stats[name].norm), sparsity)] = 0
            del stats
            for entry in cache:  # the next layer's inputs come from this pruned layer
                out = layer(entry[0], **entry[1])
                entry[0] = out[0] if isinstance(out, tuple) else out
    return {"layers": len(layers), "calibration_tokens": tokens}
