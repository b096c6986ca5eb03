"""Batched greedy decoding with left padding, stopping each sequence at its first newline or EOS."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from studylib.core import gpulock
from studylib.core.prompts import cut_output

_STOP_IDS: dict[int, list[int]] = {}


@dataclass
class Generations:
    """Outputs in prompt order, with what it cost."""

    texts: list[str]
    new_tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_new_tokens(self) -> int:
        return int(sum(self.new_tokens))


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus every token whose text contains a newline (cached per tokenizer)."""
    key = id(tokenizer)
    if key not in _STOP_IDS:
        vocab = len(tokenizer)
        pieces = tokenizer.batch_decode([[i] for i in range(vocab)], skip_special_tokens=False)
        ids = {i for i, text in enumerate(pieces) if "\n" in text}
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        _STOP_IDS[key] = sorted(ids)
    return _STOP_IDS[key]


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    progress: bool = True,
    desc: str = "generating",
) -> Generations:
    """Greedy continuations of ``prompts``, each cut at its first newline.

    Prompts are decoded in batches sorted by length (less padding); results come back in the
    original order. The prompt strings are tokenized as they are: a tokenizer that prepends BOS
    does so here. Identical greedy outputs are expected at any batch size (tested on the tiny model).
    """
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    if tokenizer.padding_side != "left":
        raise ValueError("batched decoding needs tokenizer.padding_side == 'left' (see models.prepare_tokenizer)")
    stops = stop_token_ids(tokenizer)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    texts: list[str | None] = [None] * len(prompts)
    counts = [0] * len(prompts)
    _sync(device)
    start = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=desc, disable=not progress, unit="seg")
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode(), gpulock.shared():
            out = model.generate(
                **enc,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        stop_set = torch.tensor(stops, device=new.device)
        for row, i in zip(new, idx):
            hit = torch.isin(row, stop_set).nonzero()
            n = int(hit[0, 0]) + 1 if len(hit) else int(row.shape[0])
            counts[i] = n
            texts[i] = cut_output(tokenizer.decode(row[:n], skip_special_tokens=True))
        bar.update(len(idx))
    bar.close()
    _sync(device)
    return Generations(texts=[t or "" for t in texts], new_tokens=counts, seconds=time.perf_counter() - start)
