"""Decode through a static KV cache, each step captured once as a CUDA graph and replayed.

Batch-1 decoding through ``model.generate`` (eager PyTorch) is launch-bound at this scale: the CPU's launch of each
small kernel, not the weight bytes, sets the time, so faster kernels barely show. A second figure removes the
launches: greedy decoding through a transformers ``StaticCache``, each step (forward, argmax, next input written in
place) captured once as a CUDA graph and replayed (:func:`graph_decode_time_per_token`). On the CPU the same steps
run uncaptured, and the mode says so (:func:`studylib.bench.schema.static_mode`). :func:`graph_figures` gives a
measurement's graph fields; a batch whose capture fails leaves its error, never an exception.
"""

from __future__ import annotations

import contextlib

import torch

from studylib.bench.arch import free
from studylib.bench.schema import GRAPH_MODE_CUDA, static_mode
from studylib.bench.timing import median_seconds

CAPTURE_WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graphs asks
GRAPH_CHECK_STEPS = 8  # steps decoded both replayed and uncaptured after capture, tokens compared (recorded)


class StaticDecoder:
    """Greedy decoding of ``input_ids`` (batch x prompt) through a transformers ``StaticCache``, one token per step.

    Every tensor a step reads or writes has a fixed address: the cache (its keys, values and its own write position,
    ``StaticLayer.cumulative_length``, all advanced in place by the forward), ``ids`` (the last token of each row,
    overwritten by the step's argmax) and ``position`` (the position of that token, advanced in place). A step is
    therefore the same sequence of kernels every time, which is what a CUDA graph needs: :meth:`capture` records one
    step (after warm-up steps on a side stream) and :meth:`step` then replays it. Without a capture (the CPU) the
    same step runs as plain PyTorch calls.

    :meth:`prefill` empties the cache in place (``StaticCache.reset``), runs the prompt through it and writes the
    first greedy token into ``ids``; it is how every decode starts, captured or not. transformers 5.x's Llama forward
    takes ``position_ids`` (no ``cache_position`` argument); the cache slot a step writes is the cache's own
    device-side counter, so nothing a step needs comes from the host.
    """

    def __init__(self, model, input_ids, max_new_tokens: int):
        from transformers import StaticCache

        self.model = model
        self.prompt = input_ids
        self.device = input_ids.device
        batch, length = input_ids.shape
        self.prompt_len = length
        # room for the prompt and every step a decode or the capture's warm-up writes
        self.max_cache_len = length + max(max_new_tokens, CAPTURE_WARMUP_STEPS, GRAPH_CHECK_STEPS)
        self.cache = StaticCache(config=model.config, max_cache_len=self.max_cache_len)
        self.prompt_positions = torch.arange(length, device=self.device).unsqueeze(0)
        self.ids = torch.zeros((batch, 1), dtype=torch.long, device=self.device)
        self.position = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self.graph = None

    def _forward(self, ids, positions):
        return self.model(input_ids=ids, position_ids=positions, past_key_values=self.cache, use_cache=True,
                          logits_to_keep=1)

    def prefill(self):
        """Reset the cache (in place), run the prompt, write the first greedy token into ``ids``; returns ``ids``."""
        with torch.no_grad():
            self.cache.reset()
            out = self._forward(self.prompt, self.prompt_positions)
            self.ids.copy_(out.logits[:, -1].argmax(-1, keepdim=True))
            self.position.fill_(self.prompt_len)
        return self.ids

    def _step(self) -> None:
        with torch.no_grad():
            out = self._forward(self.ids, self.position)
            self.ids.copy_(out.logits[:, -1].argmax(-1, keepdim=True))
            self.position.add_(1)

    def step(self):
        """One greedy token: the captured graph replayed, else the step itself. ``ids`` holds the new token."""
        if self.graph is not None:
            self.graph.replay()
        else:
            self._step()
        return self.ids

    def capture(self, warmup_steps: int = CAPTURE_WARMUP_STEPS) -> None:
        """Record one step as a CUDA graph (after ``warmup_steps`` eager steps on a side stream, which settle lazy
        initialisations and the allocator). Raises what the capture raises: a kernel that synchronizes with the host
        or allocates outside the graph's pool cannot be captured."""
        self.prefill()  # the cache's tensors exist (allocated at the first update) before the capture
        current = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(warmup_steps):
                self._step()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._step()
        except BaseException:
            # torch.cuda.graph's __exit__ leaves its capture stream current when capture_end raises (it exits its
            # stream context after capture_end): back to the stream the capture started from
            torch.cuda.set_stream(current)
            raise
        self.graph = graph

    def tokens(self, new_tokens: int, captured: bool = True):
        """Greedy decode of ``new_tokens`` tokens from the prompt (batch x new_tokens, on the CPU); ``captured``
        False runs the steps uncaptured even when a graph exists (to compare the two)."""
        out = [self.prefill().clone()]
        for _ in range(new_tokens - 1):
            if captured:
                self.step()
            else:
                self._step()
            out.append(self.ids.clone())
        return torch.cat(out, dim=1).cpu()

    def close(self) -> None:
        self.graph = None
        self.cache = None


def greedy_static(model, input_ids, new_tokens: int):
    """``new_tokens`` greedy tokens after ``input_ids`` through :class:`StaticDecoder`, uncaptured (what
    ``model.generate(do_sample=False)`` gives, without EOS stopping)."""
    decoder = StaticDecoder(model, input_ids, new_tokens)
    try:
        return decoder.tokens(new_tokens, captured=False)
    finally:
        decoder.close()


def graph_decode_time_per_token(model, *, batch_size: int, prompt_tokens: int = 32, new_tokens: int = 64,
                                warmup: int = 2, repeats: int = 5) -> dict:
    """Seconds per decoded token through a static KV cache, each step replayed from one CUDA graph (on CUDA) or run
    as plain static-cache steps (elsewhere): (prefill + N steps - (prefill + 1 step)) / (N - 1), medians,
    synchronized, EOS ignored -- as :func:`studylib.bench.timing.decode_time_per_token`, without the launch
    overhead of each step.

    Returns ``{"seconds": ..., "mode": "cuda-graph" | "static-cache eager (cpu)", "check": ...}``; ``check`` (CUDA
    only) compares :data:`GRAPH_CHECK_STEPS` tokens decoded by replaying the graph with the same steps uncaptured
    (recorded, not asserted: a graph that replays stale inputs would show here). A capture that fails raises.
    """
    device = next(model.parameters()).device
    mode = static_mode(device)
    ids = torch.randint(3, model.config.vocab_size, (batch_size, prompt_tokens), device=device)
    within = torch.cuda.device(device) if mode == GRAPH_MODE_CUDA else contextlib.nullcontext()
    decoder = StaticDecoder(model, ids, new_tokens)
    try:
        with within:
            check = None
            if mode == GRAPH_MODE_CUDA:
                decoder.capture()
                steps = min(GRAPH_CHECK_STEPS, new_tokens)
                replayed, plain = decoder.tokens(steps), decoder.tokens(steps, captured=False)
                check = {"steps": steps, "same_tokens_as_uncaptured": bool(torch.equal(replayed, plain)),
                         "token_agreement": float((replayed == plain).float().mean())}

            def run(n):
                decoder.prefill()
                for _ in range(n):
                    decoder.step()

            full = median_seconds(lambda: run(new_tokens), warmup=warmup, repeats=repeats, device=device)
            one = median_seconds(lambda: run(1), warmup=warmup, repeats=repeats, device=device)
    finally:
        decoder.close()
    return {"seconds": max(full - one, 0.0) / (new_tokens - 1), "mode": mode, "check": check}


def graph_figures(model, *, large_batch: int, timing: dict) -> dict:
    """The graph fields of a measurement at batch 1 and ``large_batch``: ``graph_b1_ms``, ``graph_large_ms``,
    ``graph_check``, ``graph_mode`` and ``graph_error``. A batch whose capture or run fails leaves its error and no
    figure; when both fail, ``graph_mode`` is "failed: <errors>". Nothing is raised."""
    out = {"graph_b1_ms": None, "graph_large_ms": None, "graph_check": None}
    modes, errors = [], []
    for key, batch in (("graph_b1_ms", 1), ("graph_large_ms", large_batch)):
        try:
            got = graph_decode_time_per_token(model, batch_size=batch, **timing)
            out[key] = 1000 * got["seconds"]
            modes.append(got["mode"])
            if got["check"] is not None:
                out["graph_check"] = {**(out["graph_check"] or {}), f"batch_{batch}": got["check"]}
        except Exception as err:  # noqa: BLE001 -- a step that cannot be captured is a result; eager figures stay
            errors.append(f"batch {batch}: {type(err).__name__}: {str(err)[:400]}")
        free()
    out["graph_error"] = "; ".join(errors) or None
    out["graph_mode"] = modes[0] if modes else f"failed: {out['graph_error'][:200]}"
    return out
