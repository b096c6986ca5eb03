"""Greedy decoding, stopping each sequence at its first newline or EOS: batched ``generate`` with left padding (hf),
or a vLLM engine (:func:`generate_vllm`), both cut and counted by :func:`studylib.core.engines.finish`.

Progress is reported from inside each batch. A batch stays one ``model.generate`` call as wide as the caller's
``batch_size`` (on a GPU the width is what keeps a small model busy, and splitting it for the bar's sake would
also change the padding each prompt is decoded with); the bar advances as each of its segments reaches its stop
token, not only when the whole batch is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from studylib.core.engines import check_repetition_penalty, finish
from studylib.core.prompts import cut_output

# what a decoding chosen on dev sets (notebook 02_decoding), and what a record decoded with where it names no penalty
DECODING_KNOBS = ("repetition_penalty", "max_new_tokens")
NO_PENALTY = 1.0

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


def _reporter(bar, where: str, max_new_tokens: int):
    """``report(n_new, step)`` for :class:`_FinishedSegments`: advance ``bar``; postfix refreshed at most once a second."""
    last = [0.0]

    def report(n_new: int, step: int) -> None:
        if n_new:
            bar.update(n_new)
        now = time.monotonic()
        if now - last[0] >= 1.0:
            last[0] = now
            bar.set_postfix_str(f"{where}, token {step}/{max_new_tokens}")

    return report


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class _FinishedSegments:
    """A stopping criterion that stops nothing: after every decoding step it counts the rows of the batch that
    have produced a stop token and hands the new ones to ``report(n_new, step)``, so a progress bar moves while
    a wide batch decodes. Returning all-False leaves decoding exactly as without it."""

    def __init__(self, stops, report):
        self.stops, self.report = stops, report
        self.done, self.step, self.count = None, 0, 0

    def __call__(self, input_ids, scores=None, **kwargs):
        import torch

        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            self.stops = torch.as_tensor(self.stops, device=input_ids.device)
        self.step += 1
        self.done |= torch.isin(input_ids[:, -1], self.stops)
        count = int(self.done.sum())
        self.report(count - self.count, self.step)
        self.count = count
        return torch.zeros_like(self.done)


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    progress: bool = True,
    desc: str = "generating",
    repetition_penalty: float = 1.0,
) -> Generations:
    """Greedy continuations of ``prompts``, each cut at its first newline.

    Prompts are decoded in batches sorted by length (less padding); results come back in the
    original order. The prompt strings are tokenized as they are: a tokenizer that prepends BOS
    does so here. Identical greedy outputs are expected at any batch size (tested on the tiny model).

    With ``progress`` a tqdm bar counts finished segments (``total`` = number of prompts, unit "seg", with
    rate and ETA); it advances during a batch as segments stop, and its postfix shows the batch and the decoding
    step, refreshed at most once a second, so a batch whose segments all run to ``max_new_tokens`` still shows
    it is alive. The bar changes nothing about what is decoded.

    ``repetition_penalty`` (1.0: none) divides the logit of every token already in the prompt or the output
    (:func:`studylib.core.engines.sampling_kwargs` asks vLLM for the same).
    """
    import torch
    from transformers import StoppingCriteriaList

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    check_repetition_penalty(repetition_penalty)
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
    n_batches = -(-len(order) // batch_size)
    for k, b in enumerate(range(0, len(order), batch_size), start=1):
        idx = order[b : b + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        extra, hook = {}, None
        if progress:
            hook = _FinishedSegments(stops, _reporter(bar, f"batch {k}/{n_batches}", max_new_tokens))
            extra["stopping_criteria"] = StoppingCriteriaList([hook])
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                repetition_penalty=float(repetition_penalty),
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
                **extra,
            )
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        for row, i in zip(new, idx):
            counts[i] = finish(row, stops, max_new_tokens)
            texts[i] = cut_output(tokenizer.decode(row[: counts[i]], skip_special_tokens=True))
        bar.update(len(idx) - (hook.count if hook else 0))  # the rest of the batch: rows cut by max_new_tokens
    bar.close()
    _sync(device)
    return Generations(texts=[t or "" for t in texts], new_tokens=counts, seconds=time.perf_counter() - start)


def generate_vllm(engine, tokenizer, prompts: list[str], *, max_new_tokens: int = 256, seed: int = 0,
                  progress: bool = True, order: list[int] | None = None,
                  repetition_penalty: float = 1.0) -> Generations:
    """:func:`generate` through a :class:`studylib.core.engines.VLLMEngine`: the same token ids (the tokenizer's,
    BOS included), stop tokens, cap and cut. vLLM schedules the prompts itself; ``order`` (a permutation of the
    prompts) changes the order they are handed over in, and so what shares a batch, for the rerun check. Its tqdm bar
    counts finished prompts with rate and ETA."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    stops = stop_token_ids(tokenizer)
    order = list(range(len(prompts))) if order is None else list(order)
    if sorted(order) != list(range(len(prompts))):
        raise ValueError("order must be a permutation of the prompts' indices")
    start = time.perf_counter()  # tokenizing included, as generate() times it
    ids = tokenizer([prompts[i] for i in order])["input_ids"]
    rows = engine.generate(ids, max_new_tokens=max_new_tokens, stop_ids=stops, seed=seed, progress=progress,
                           repetition_penalty=repetition_penalty)
    seconds = time.perf_counter() - start
    texts, counts = [""] * len(prompts), [0] * len(prompts)
    for i, row in zip(order, rows):
        counts[i] = finish(row, stops, max_new_tokens)
        texts[i] = cut_output(tokenizer.decode(row[: counts[i]], skip_special_tokens=True))
    return Generations(texts=texts, new_tokens=counts, seconds=seconds)
