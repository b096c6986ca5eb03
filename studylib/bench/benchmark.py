"""Efficiency at the real scale: every compressed format on a 7B architecture with random weights.

Speed and memory depend on shapes and kernels, not on the weights' values, so the benchmark builds the
architecture from its config (Llama-2-7B = ALMA-7B's) on the GPU with random weights -- no download -- and
measures, in one process, for each format: batch-1 decode time per token, decode at a larger batch (16), prefill of
512 tokens, peak memory and the storage of the saved model. Every time is the median of repeated timed
runs after warm-up; the report gives ratios to the fp16 model and each format's batch-1 time per token
against its physical floor (the bytes a decoding step must read / the device copy bandwidth measured in the same
run).

Batch-1 decoding through ``model.generate`` (eager PyTorch) is launch-bound at this scale: the CPU's launch of each
small kernel, not the weight bytes, sets the time, so faster kernels barely show. Each format's decode is therefore
also timed a second way (``graph_decode``, :func:`graph_decode_time_per_token`): greedy decoding through a
transformers ``StaticCache``, each step (forward, argmax, next input written in place) captured once as a CUDA graph
and replayed; on the CPU the same steps run uncaptured, and the record says which (``graph_mode``). Both figures are
reported; a format whose step cannot be captured keeps its eager figures, with the capture's error. A format whose
step is known not to be capturable (:data:`studylib.bench.variants.NO_GRAPH_CAPTURE`, e.g. LLM.int8()) is not
captured at all on CUDA: a failed capture can leave the CUDA RNG unusable for the rest of the process, so after any
failed capture the RNG is probed and, where needed, restored (:func:`recover_cuda_rng`). The host's load
averages are recorded around each format's timings (``host_load``): other jobs on the same CPUs slow launch-bound
timings.

The formats and how each is built (by the study's own method code) are in :mod:`studylib.bench.variants`;
the notebook's parameters in :mod:`studylib.bench.params`. A notebook runs::

    cfg = BenchmarkParams.from_namespace(globals())
    plan(cfg)                                  # device checked, nothing built yet
    bandwidth = measure_bandwidth(cfg)
    rows = run_variants(cfg, bandwidth, budget)    # build, measure, free -- one variant at a time
    compression = time_compression(cfg, rows, budget)
    record = make_benchmark_record(cfg, bandwidth, rows, compression, budget)

A variant that fails (a kernel that is missing or refuses the device, a compile error) is recorded with its error
and kernel ``unavailable``; the benchmark goes on with the next one.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass

NOTEBOOK = "40_efficiency_7b"
REFERENCE = "fp16"
UNAVAILABLE = "unavailable"
RANDOM_WEIGHTS = ("random weights (normal, std 0.02, fixed seed), no checkpoint downloaded: speed, memory and storage "
                  "depend on the shapes and the kernels, not on the weights' values (quality is not measured here)")
RANDOM_CALIBRATION = ("random token ids, uniform over the vocabulary (special ids 0-2 left out), fixed seed: the "
                      "benchmark has no tokenizer or texts; the compression time depends on the number of "
                      "calibration tokens, not on what they say")

# Architecture facts of the public configs (not measurements).
ARCHITECTURES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5),
    # the CPU smoke profile: same family, tiny
    "tiny-llama": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=512, max_position_embeddings=1024, rms_norm_eps=1e-5),
}

# The goals for the H200 run (targets to report against, not results; never asserted).
TARGETS = (
    ("gptq-w4", "decode_b1_ratio", "<=", 0.35, "GPTQ W4 batch-1 time per token, x fp16"),
    ("bnb-nf4", "decode_b1_ratio", "<=", 0.6, "NF4 batch-1 time per token, x fp16"),
    ("bnb-int8", "decode_b1_ratio", "<=", 0.8, "INT8 batch-1 time per token, x fp16"),
    ("fp16", "floor_ratio", "<=", 1.3, "fp16 batch-1 time per token, x its floor"),
    ("sparse-2of4", "prefill_speedup", ">=", 1.3, "2:4 prefill speed-up over fp16"),
    ("compression:gptq-w4", "seconds", "<=", 600, "GPTQ 4-bit compression of the model, seconds"),
    ("compression:wanda", "seconds", "<=", 120, "Wanda compression of the model, seconds"),
)


ABOUT = {"llama-2-7b": "Llama-2-7B's, which ALMA-7B shares", "tiny-llama": "a tiny Llama for the smoke profile"}


def describe_architecture(name: str) -> str:
    """'the llama-2-7b architecture (Llama-2-7B's, which ALMA-7B shares)' -- for captions and tables."""
    return f"the {name} architecture" + (f" ({ABOUT[name]})" if name in ABOUT else "")


def runs_text(n) -> str:
    return f"{n} run{'' if n == 1 else 's'}"


def llama_config(name: str):
    from transformers import LlamaConfig

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return LlamaConfig(**ARCHITECTURES[name], pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def build_random(name: str, dtype: str = "float16", device: str = "cuda", seed: int = 0, num_layers: int | None = None):
    """The architecture with random (normal, std 0.02) weights, allocated directly in ``dtype`` on ``device``."""
    import torch
    from transformers import LlamaForCausalLM

    config = llama_config(name)
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, *, warmup: int = 2, repeats: int = 5, device="cuda") -> float:
    """Median wall time of ``fn()`` over ``repeats`` synchronized runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device: str = "cuda", n_bytes: int = 2 * 1024**3, repeats: int = 10) -> float:
    """Device copy bandwidth in bytes/s: a buffer of ``n_bytes`` copied into another, bytes read plus bytes
    written over the median time (the achievable read+write traffic of the memory)."""
    import torch

    src = torch.empty(n_bytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), warmup=2, repeats=repeats, device=device)
    del src, dst
    return 2 * n_bytes / seconds


def _tensor_bytes(t) -> int:
    """Bytes of a tensor as its kernels read it: a semi-structured sparse weight counts its packed values and
    metadata (not the transposed copy CUTLASS keeps for backward passes)."""
    from torch.sparse import SparseSemiStructuredTensor

    if isinstance(t, SparseSemiStructuredTensor):
        parts = [t.packed, t.meta] if t.packed is not None else [t.packed_t, t.meta_t]
        return sum(p.numel() * p.element_size() for p in parts if p is not None)
    return t.numel() * t.element_size()


def weight_bytes(model) -> int:
    """Bytes of every parameter and buffer as held in memory (packed formats count packed: bitsandbytes' 4-bit
    and GPTQ's integer buffers, 2:4 sparse values + metadata). Quantization scales kept as plain attributes
    (bitsandbytes' absmax) are not parameters and are not counted."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += _tensor_bytes(t)
    return total


def floor_bytes(model) -> int:
    """Bytes one decoding step must read at least: every weight except the input embedding table, of which a step
    reads one row per sequence (the KV cache, small at these lengths, is left out)."""
    emb = model.get_input_embeddings().weight
    return weight_bytes(model) - _tensor_bytes(emb) + emb.shape[1] * emb.element_size()


def decode_time_per_token(model, *, batch_size: int, prompt_tokens: int = 32, new_tokens: int = 64,
                          warmup: int = 2, repeats: int = 5) -> float:
    """Seconds per decoded token: (generate N tokens - generate 1 token) / (N - 1), medians, EOS ignored.

    Subtracting the one-token run removes prefill and set-up from the per-token figure.
    """
    import torch

    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch_size, prompt_tokens), device=device)
    mask = torch.ones_like(ids)

    def run(n):
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                           pad_token_id=0, temperature=None, top_p=None, top_k=None)

    full = median_seconds(lambda: run(new_tokens), warmup=warmup, repeats=repeats, device=device)
    one = median_seconds(lambda: run(1), warmup=warmup, repeats=repeats, device=device)
    return max(full - one, 0.0) / (new_tokens - 1)


# ----------------------------------------------------------------------------------------------- static cache + graph

GRAPH_MODE_CUDA = "cuda-graph"
GRAPH_OFF = "off (graph_decode false)"
GRAPH_NOT_ATTEMPTED = "not attempted"  # graph_mode's start for a format declared not capturable (no graph_error)


def graph_not_attempted(row: dict) -> bool:
    """Whether a row's graph decode was not attempted (a format declared not capturable): no figure, no failure."""
    return str(row.get("graph_mode") or "").startswith(GRAPH_NOT_ATTEMPTED)


CAPTURE_WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graphs asks
GRAPH_DECODE = ("(prefill + new_tokens steps - (prefill + 1 step)) / (new_tokens - 1), greedy, EOS ignored, "
                "synchronized wall clock, through a transformers StaticCache; on CUDA each step (forward, argmax, "
                "next input written in place) captured once as a CUDA graph and replayed, elsewhere the same step "
                "uncaptured; each variant's graph_mode says which, or why it failed (its eager figures stand); a format "
                "declared not capturable (studylib.bench.variants.NO_GRAPH_CAPTURE) is not captured on CUDA: its "
                "graph_mode says 'not attempted' and why")
GRAPH_CHECK_STEPS = 8  # steps decoded both replayed and uncaptured after capture, tokens compared (recorded)


def static_mode(device) -> str:
    """The label of a static-cache decode on ``device``: captured on CUDA, plain steps elsewhere."""
    kind = getattr(device, "type", str(device).split(":")[0])
    return GRAPH_MODE_CUDA if kind == "cuda" else f"static-cache eager ({kind})"


def capture_skip(variant: str, device) -> str | None:
    """Why ``variant``'s decoding step is not captured on ``device`` (declared in
    :data:`studylib.bench.variants.NO_GRAPH_CAPTURE`), or None. Only where a capture would happen (CUDA):
    elsewhere the static-cache step runs uncaptured for every format, which cannot fail that way."""
    from studylib.bench.variants import NO_GRAPH_CAPTURE

    if static_mode(device) != GRAPH_MODE_CUDA:
        return None
    return NO_GRAPH_CAPTURE.get(variant)


def not_attempted_mode(why: str) -> str:
    """The graph_mode of a format whose capture is not attempted (its graph figures None, its graph_error None)."""
    return (f"{GRAPH_NOT_ATTEMPTED}: {why} [declared in studylib.bench.variants.NO_GRAPH_CAPTURE: no capture "
            "tried, the eager figures stand]")


RNG_PROBE = "torch.randn(1) on the device (a draw from its default CUDA generator), synchronized"
RNG_RESTORE = ("the device's default CUDA generator given a fresh copy of its state (same seed and offset, not "
               "capturing): torch.cuda.default_generators[i].graphsafe_set_state(that generator's clone_state())")
RNG_LOST = ("the CUDA RNG of this process is still unusable: later variants (every build draws its random weights on "
            "the GPU) and the compression timings (GPTQ, Wanda) may fail with the same error; rerun them in a process "
            "of their own")


def _rng_probe(device) -> str | None:
    """None when a draw from ``device``'s default CUDA generator works, else its error."""
    import torch

    try:
        torch.randn(1, device=device)
        torch.cuda.synchronize(device)
    except Exception as err:  # noqa: BLE001 -- the answer
        return f"{type(err).__name__}: {str(err)[:200]}"
    return None


def recover_cuda_rng(device) -> dict | None:
    """After a failed CUDA graph capture: whether ``device``'s default CUDA generator still works, and an attempt to
    make it work again where it does not. None off CUDA (nothing was captured, nothing is done).

    Why: ``CUDAGraph.capture_begin`` registers the default generator's state with the graph and marks it capturing
    (``CUDAGeneratorState::capture_prologue``); ``capture_end`` clears the mark (``capture_epilogue``) only after
    ``cudaStreamEndCapture`` succeeded. When that call fails (an invalidated capture: "operation failed due to a
    previous error during capture") the state stays "capturing", and every later RNG draw outside a capture raises
    "Offset increment outside graph capture encountered unexpectedly" -- re-seeding does not help (``manual_seed``
    sets the seed and offset, not the mark). What is done (torch >= 2.5, where generators have graph-safe states):
    the generator is pointed at a clone of its state (``Generator.clone_state`` copies seed and offset; a new state is
    not capturing) with ``Generator.graphsafe_set_state``; the failed graph keeps the old state object.

    Verified on the H200 (2026-11-21, torch 2.11.0+cu130; tools/device/check_rng_restore.py and its .txt): a capture
    failed by a synchronize inside it, and one failed by LLM.int8(), each left the generator unusable, and after this
    restore it drew again. The record says what happened: the probe (:data:`RNG_PROBE`) after the failure and, where it failed,
    after the restore (``ok``); when it still fails, ``consequence`` says what may fail next and why."""
    import torch

    if getattr(device, "type", str(device).split(":")[0]) != "cuda" or not torch.cuda.is_available():
        return None
    device = torch.device(device)
    out = {"probe": RNG_PROBE}
    first = _rng_probe(device)
    if first is None:
        out.update(ok=True, restored=False)
        return out
    out["error_after_failure"] = first
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        generator = torch.cuda.default_generators[index]
        generator.graphsafe_set_state(generator.clone_state())
        out["restore"] = RNG_RESTORE
    except Exception as err:  # noqa: BLE001 -- said; the probe below decides
        out["restore_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    second = _rng_probe(device)
    out["ok"] = second is None
    out["restored"] = second is None
    if second is not None:
        out["error_after_restore"] = second
        out["consequence"] = RNG_LOST
    return out


def _rng_text(rng: dict | None) -> str | None:
    """What graph_error says of the RNG after a failed capture: nothing when it was never broken."""
    if not rng or "error_after_failure" not in rng:
        return None
    if rng["ok"]:
        return (f"CUDA RNG unusable after the failure ({rng['error_after_failure'][:120]}); restored (the default "
                "generator's state replaced by a non-capturing copy), probe passed")
    return f"CUDA RNG unusable after the failure ({rng['error_after_restore'][:120]}), restore failed: {RNG_LOST}"


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
    takes ``position_ids`` (there is no ``cache_position`` argument any more); the cache slot a step writes is the
    cache's own device-side counter, so nothing a step needs comes from the host.
    """

    def __init__(self, model, input_ids, max_new_tokens: int):
        import torch
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
        import torch

        with torch.no_grad():
            self.cache.reset()
            out = self._forward(self.prompt, self.prompt_positions)
            self.ids.copy_(out.logits[:, -1].argmax(-1, keepdim=True))
            self.position.fill_(self.prompt_len)
        return self.ids

    def _step(self) -> None:
        import torch

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
        import torch

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
        import torch

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
    synchronized, EOS ignored -- as :func:`decode_time_per_token`, with the launch overhead of each step gone.

    Returns ``{"seconds": ..., "mode": "cuda-graph" | "static-cache eager (cpu)", "check": ...}``; ``check`` (CUDA
    only) compares :data:`GRAPH_CHECK_STEPS` tokens decoded by replaying the graph with the same steps uncaptured
    (recorded, not asserted: a graph that replays stale inputs would show here). A capture that fails raises.
    """
    import torch

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


def prefill_seconds(model, *, tokens: int = 512, batch_size: int = 1, warmup: int = 2, repeats: int = 5) -> float:
    """Median seconds of one forward pass over ``tokens`` tokens (no cache)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.randint(3, model.config.vocab_size, (batch_size, tokens), device=device)

    def run():
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)

    return median_seconds(run, warmup=warmup, repeats=repeats, device=device)


@dataclass
class Measurement:
    variant: str
    kernel: str
    decode_b1_ms: float
    decode_large_ms: float  # per token, at batch ``large_batch``
    large_batch: int
    prefill_ms: float
    prefill_tokens: int
    peak_memory_bytes: int | None
    weight_bytes: int
    floor_bytes: int
    storage_bytes: int | None
    params: int
    layers: int
    floor_ms: float | None = None
    storage_note: str = ""
    # decode through a static KV cache, each step one CUDA graph replayed (:func:`graph_decode_time_per_token`)
    graph_b1_ms: float | None = None
    graph_large_ms: float | None = None  # per token, at batch ``large_batch``
    graph_floor_ratio: float | None = None  # graph_b1_ms / floor_ms
    graph_mode: str = GRAPH_OFF  # "cuda-graph", "static-cache eager (cpu)", "failed: ...", "not attempted: ...", off
    graph_error: str | None = None  # what failed, per batch size (the eager figures above are kept)
    graph_check: dict | None = None  # replayed tokens against the same steps uncaptured (CUDA only)
    graph_rng: dict | None = None  # after a failed capture, per batch: the CUDA RNG probed, restored where needed
    host_load: dict | None = None  # CPUs and load averages before and after the eager and the graph timings
    memory: dict | None = None  # peak_memory_bytes' parts (efficiency.footprint): the model's, decoding's, the rest

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _graph_decode(model, *, large_batch: int, timing: dict) -> dict:
    """The graph figures of :class:`Measurement` (batch 1 and ``large_batch``); a batch whose capture or run fails
    leaves its error and no figure, never an exception. After a failure the device must answer and its CUDA RNG is
    probed and, where the failed capture broke it, restored (:func:`recover_cuda_rng`; ``graph_rng``, and
    ``graph_error`` when it was broken)."""
    import torch

    device = next(model.parameters()).device
    out = {"graph_b1_ms": None, "graph_large_ms": None, "graph_check": None, "graph_rng": None}
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
            if torch.cuda.is_available():
                try:  # a failed capture has ended; the device must still answer before anything else runs
                    torch.cuda.synchronize()
                except Exception as again:  # noqa: BLE001 -- said, with the capture's error
                    errors.append(f"device after the failure: {type(again).__name__}: {str(again)[:200]}")
            try:
                rng = recover_cuda_rng(device)  # None off CUDA
            except Exception as again:  # noqa: BLE001 -- never raised from here
                rng = {"ok": False, "error": f"{type(again).__name__}: {str(again)[:200]}"}
            if rng is not None:
                out["graph_rng"] = {**(out["graph_rng"] or {}), f"batch_{batch}": rng}
                said = _rng_text(rng) or (None if rng.get("ok") else f"CUDA RNG check failed: {rng.get('error')}")
                if said:
                    errors.append(said)
                    print(f"[bench] batch {batch}: {said}", file=sys.stderr, flush=True)
        free()
    out["graph_error"] = "; ".join(errors) or None
    out["graph_mode"] = modes[0] if modes else f"failed: {out['graph_error'][:200]}"
    return out


def measure(variant: str, model, *, kernel: str, bandwidth: float | None, new_tokens: int = 64, repeats: int = 5,
            warmup: int = 2, prompt_tokens: int = 32, large_batch: int = 16, prefill_tokens: int = 512,
            storage: bool = True, storage_bytes: int | None = None, storage_note: str = "",
            graph_decode: bool = True, graph_skip: str | None = None) -> Measurement:
    """All timings of one model, in one process; the floor is :func:`floor_bytes` over the measured bandwidth.

    Eager decode (``model.generate``), prefill and peak memory first; then storage; then (``graph_decode``) decode
    through a static KV cache replayed as a CUDA graph, at batch 1 and ``large_batch``
    (:func:`graph_decode_time_per_token`): a capture that fails leaves its error in ``graph_mode`` /
    ``graph_error`` and every other figure as measured; ``graph_skip`` (why the format's step is known not to be
    capturable, :func:`capture_skip`) skips it: graph figures None, ``graph_mode`` "not attempted: ...", no
    ``graph_error``. Peak memory is the eager section's, as the format's own
    footprint (:func:`studylib.core.efficiency.footprint`: leftovers of an earlier build do not count). The host's load
    averages are taken before and after each timed section (``host_load``).

    Storage: ``storage_bytes`` when the variant knows it (a checkpoint written while building it), else the model
    saved as it is now (``storage``), else None.
    """
    import torch

    from studylib.core.efficiency import PeakMemory, count_params, footprint, resident_bytes, saved_storage_bytes

    device = next(model.parameters()).device
    timing = dict(new_tokens=new_tokens, repeats=repeats, warmup=warmup, prompt_tokens=prompt_tokens)
    from studylib.core.records import host_load

    load = {"cpus": os.cpu_count(), "eager": {"before": host_load()["load_average_1_5_15_min"]}}
    with PeakMemory(device) as peak:
        b1 = decode_time_per_token(model, batch_size=1, **timing)
        big = decode_time_per_token(model, batch_size=large_batch, **timing)
        pre = prefill_seconds(model, tokens=prefill_tokens, warmup=warmup, repeats=repeats)
    load["eager"]["after"] = host_load()["load_average_1_5_15_min"]
    # the format's footprint: its tensors + what decoding allocated; not what an earlier build left in the process
    memory = footprint(resident_bytes(model, device) if peak.bytes is not None else None, peak.before, peak.bytes)
    if storage_bytes is None and storage:
        try:
            storage_bytes = saved_storage_bytes(model)
            storage_note = storage_note or "the model saved as it runs (save_pretrained, safetensors)"
        except Exception as err:  # noqa: BLE001 -- a format that cannot be saved is reported, not hidden
            storage_note = f"not saved: {type(err).__name__}: {str(err)[:160]}"
    graph = {}
    if graph_decode and graph_skip:
        graph = {"graph_mode": not_attempted_mode(graph_skip)}  # not captured: nothing timed, nothing failed
    elif graph_decode:
        load["graph"] = {"before": host_load()["load_average_1_5_15_min"]}
        graph = _graph_decode(model, large_batch=large_batch, timing=timing)
        load["graph"]["after"] = host_load()["load_average_1_5_15_min"]
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    fbytes = floor_bytes(model)
    floor_ms = None if not bandwidth else 1000 * fbytes / bandwidth
    return Measurement(
        variant=variant, kernel=kernel, decode_b1_ms=1000 * b1, decode_large_ms=1000 * big, large_batch=large_batch,
        prefill_ms=1000 * pre, prefill_tokens=prefill_tokens, peak_memory_bytes=memory["peak_memory_bytes"],
        weight_bytes=weight_bytes(model), floor_bytes=fbytes, storage_bytes=storage_bytes,
        params=count_params(model), layers=model.config.num_hidden_layers,
        floor_ms=floor_ms, storage_note=storage_note, **graph,
        graph_floor_ratio=_ratio(graph.get("graph_b1_ms"), floor_ms), host_load=load, memory=memory["memory"],
    )


def _ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and b else None


def ratios(rows: list, reference: str = REFERENCE) -> list[dict]:
    """Each row (a :class:`Measurement` or its dict) with its ratios to the reference format. Times: the ratio
    of the times (below 1 is faster); prefill also as a speed-up (above 1 is faster). Rows of variants that did
    not run, or a missing reference, give None. The graph decode figures are compared with the reference's graph
    figures (``graph_b1_ratio``, ``graph_large_ratio``) and the batch-1 one with the row's floor
    (``graph_floor_ratio``); None where either side has none."""
    rows = [r.as_dict() if isinstance(r, Measurement) else dict(r) for r in rows]
    ok = lambda r: r.get("status", "ok") == "ok"  # noqa: E731
    ref = next((r for r in rows if r["variant"] == reference and ok(r)), None)
    for row in rows:
        measured = ok(row) and ref is not None
        pick = (lambda key: row.get(key) if measured else None)
        base = (lambda key: ref.get(key) if measured else None)
        row["decode_b1_ratio"] = _ratio(pick("decode_b1_ms"), base("decode_b1_ms"))
        row["decode_large_ratio"] = _ratio(pick("decode_large_ms"), base("decode_large_ms"))
        row["prefill_ratio"] = _ratio(pick("prefill_ms"), base("prefill_ms"))
        row["prefill_speedup"] = _ratio(base("prefill_ms"), pick("prefill_ms"))
        row["memory_ratio"] = _ratio(pick("peak_memory_bytes"), base("peak_memory_bytes"))
        row["storage_ratio"] = _ratio(pick("storage_bytes"), base("storage_bytes"))
        row["floor_ratio"] = _ratio(row.get("decode_b1_ms"), row.get("floor_ms")) if ok(row) else None
        row["graph_b1_ratio"] = _ratio(pick("graph_b1_ms"), base("graph_b1_ms"))
        row["graph_large_ratio"] = _ratio(pick("graph_large_ms"), base("graph_large_ms"))
        row["graph_floor_ratio"] = _ratio(row.get("graph_b1_ms"), row.get("floor_ms")) if ok(row) else None
    return rows


def free(model=None) -> None:
    """Give the memory of dropped models back before the next variant is built (the caller drops its references;
    a model passed here is only this function's reference)."""
    import torch

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------- running


@contextlib.contextmanager
def alone():
    """The GPU to this process alone while timing, when runs share it (``studylib.core.gpulock``, where present)."""
    try:
        from studylib.core import gpulock
    except ImportError:
        yield
        return
    with gpulock.exclusive():
        yield


class Budget:
    """Wall-clock budget of a run: a step that would start after it is spent is recorded as skipped."""

    def __init__(self, seconds: float | None = None):
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def spent(self) -> bool:
        return self.seconds is not None and self.elapsed() >= self.seconds

    def why(self) -> str:
        return f"time budget of {self.seconds:g} s spent ({self.elapsed():.0f} s elapsed) before it started"


def say(budget: Budget, text: str) -> None:
    """One progress line on stderr, flushed: papermill passes a kernel's stderr through as it happens, so the
    pipeline's log shows it live (its stdout goes only into the executed notebook)."""
    print(f"[bench {budget.elapsed():6.0f} s] {text}", file=sys.stderr, flush=True)


def check_device(device: str) -> str:
    """The device, or a clear error before anything is built when it is not there."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA device; "
                               "the smoke profile runs on 'cpu'")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s)")
        return torch.cuda.get_device_name(index)
    return "cpu"


def plan(cfg) -> dict:
    """What will run, checked before anything is built: the device, the architecture, each variant and what it is."""
    from studylib.bench.variants import VARIANTS

    name = check_device(cfg.device)
    return {"device": cfg.device, "device_name": name, "architecture": cfg.architecture,
            "config": ARCHITECTURES[cfg.architecture], "variants": {v: VARIANTS[v] for v in cfg.variants},
            "compression_timing": {"gptq-w4": cfg.time_gptq, "wanda": cfg.time_wanda},
            "graph_decode": static_mode(cfg.device) if cfg.graph_decode else GRAPH_OFF,
            "graph_not_attempted": {v: why for v in cfg.variants
                                    if cfg.graph_decode and (why := capture_skip(v, cfg.device))},
            "time_budget_s": cfg.time_budget_s}


def measure_bandwidth(cfg) -> dict:
    n_bytes = cfg.bandwidth_mib * 2**20
    with alone():
        bps = copy_bandwidth(cfg.device, n_bytes=n_bytes, repeats=10)
    return {"bytes_per_s": bps, "gb_per_s": bps / 1e9, "n_bytes": n_bytes, "repeats": 10,
            "method": "device-to-device copy of one buffer into another; (bytes read + bytes written) / median time"}


def _not_run(name: str, status: str, why: str, trace: str | None = None) -> dict:
    row = {"variant": name, "status": status, "kernel": UNAVAILABLE if status == "failed" else "not run",
           "error": why}
    if trace:
        row["traceback"] = trace
    return row


def _failure(err: BaseException) -> tuple[str, str]:
    return f"{type(err).__name__}: {str(err)[:600]}", "".join(traceback.format_exception(err))[-3000:]


def _ms(value) -> str:
    return "not measured" if value is None else f"{value:.3f} ms/token"


def run_variants(cfg, bandwidth: dict | None, budget: Budget) -> list[dict]:
    """Build, measure and free each variant in turn; every one leaves a row (ok, failed or skipped)."""
    from studylib.bench.variants import VARIANTS, build_variant

    rows = []
    for name in cfg.variants:
        if budget.spent():
            rows.append(_not_run(name, "skipped", budget.why()))
            say(budget, f"{name}: skipped ({budget.why()})")
            continue
        say(budget, f"{name}: building ({VARIANTS[name]})")
        built = None
        try:
            start = time.perf_counter()
            with alone():  # a build may be a timed compression (GPTQ W4)
                built = build_variant(name, cfg)
            build_s = time.perf_counter() - start
            free()
            say(budget, f"{name}: built in {build_s:.1f} s ({built.kernel}); measuring")
            start = time.perf_counter()
            with alone():
                m = measure(name, built.model, kernel=built.kernel, bandwidth=(bandwidth or {}).get("bytes_per_s"),
                            new_tokens=cfg.new_tokens, repeats=cfg.repeats, warmup=cfg.warmup,
                            prompt_tokens=cfg.prompt_tokens, large_batch=cfg.large_batch,
                            prefill_tokens=cfg.prefill_tokens, storage=cfg.storage,
                            storage_bytes=built.storage_bytes, storage_note=built.storage_note,
                            graph_decode=cfg.graph_decode,
                            graph_skip=capture_skip(name, cfg.device) if cfg.graph_decode else None)
            row = {**m.as_dict(), "status": "ok", "error": None, "build_seconds": build_s,
                   "measure_seconds": time.perf_counter() - start, "compress_seconds": built.compress_seconds,
                   "info": built.info}
            floor = f", {m.decode_b1_ms / m.floor_ms:.2f}x its floor" if m.floor_ms else ""
            say(budget, f"{name}: batch 1 {m.decode_b1_ms:.3f} ms/token{floor}; batch {m.large_batch} "
                        f"{m.decode_large_ms:.3f} ms/token; prefill {m.prefill_ms:.2f} ms")
            if cfg.graph_decode:
                say(budget, f"{name}: static cache ({m.graph_mode[:300]}): batch 1 {_ms(m.graph_b1_ms)}"
                            + (f", {m.graph_floor_ratio:.2f}x its floor" if m.graph_floor_ratio else "")
                            + f"; batch {m.large_batch} {_ms(m.graph_large_ms)}"
                            + (f" ({m.graph_error[:300]})" if m.graph_error and m.graph_mode[:6] != "failed" else ""))
        except Exception as err:  # noqa: BLE001 -- a variant that fails is a result, recorded; the next one runs
            why, trace = _failure(err)
            row = _not_run(name, "failed", why, trace)
            say(budget, f"{name}: FAILED {why[:300]}")
        built = None
        free()
        rows.append(row)
    return ratios(rows)


def time_compression(cfg, rows: list[dict], budget: Budget) -> dict:
    """Compression wall times at this scale (synchronized): GPTQ 4-bit from the ``gptq-w4`` variant's build (built
    here for the timing alone when it is not among the variants), and Wanda."""
    from studylib.bench.variants import build_variant, time_wanda

    out = {}
    if cfg.time_gptq:
        done = next((r for r in rows if r["variant"] == "gptq-w4"), None)
        if done is not None and done["status"] == "ok":
            out["gptq-w4"] = _gptq_timing(done["compress_seconds"], done["info"])
        elif done is not None:
            out["gptq-w4"] = {"status": done["status"], "error": done.get("error")}
        elif budget.spent():
            out["gptq-w4"] = {"status": "skipped", "error": budget.why()}
        else:
            say(budget, "gptq-w4 compression timing: building (not among the measured variants)")
            try:
                with alone():
                    built = build_variant("gptq-w4", cfg)
                out["gptq-w4"] = _gptq_timing(built.compress_seconds, built.info)
            except Exception as err:  # noqa: BLE001 -- recorded
                why, trace = _failure(err)
                out["gptq-w4"] = {"status": "failed", "error": why, "traceback": trace}
            built = None
            free()
    if cfg.time_wanda:
        if budget.spent():
            out["wanda"] = {"status": "skipped", "error": budget.why()}
        else:
            say(budget, f"wanda {cfg.wanda_sparsity:g} compression timing: "
                        f"{cfg.wanda_calib_samples} x {cfg.wanda_calib_tokens} random tokens")
            try:
                with alone():
                    out["wanda"] = {"status": "ok", **time_wanda(cfg)}
            except Exception as err:  # noqa: BLE001 -- recorded
                why, trace = _failure(err)
                out["wanda"] = {"status": "failed", "error": why, "traceback": trace}
            free()
    for key, value in out.items():
        if value.get("status") == "ok":
            say(budget, f"{key} compression: {value['seconds']:.1f} s")
    return out


def _gptq_timing(route_seconds: float, info: dict) -> dict:
    """GPTQ's compression time: the route of ``studylib.methods.gptq`` up to the written GPTQ checkpoint (save the
    fp16 checkpoint, GPTQModel load + quantize, save), without loading it back for inference -- that load JIT-compiles
    the inference kernel the first time, which is not compression (``load_seconds``, inside ``route_seconds``)."""
    keys = ("save_seconds", "quantize_seconds", "load_seconds", "calibration", "modules", "mean_loss",
            "fallback_modules", "library", "backend_requested", "backend_fallback", "backends_tried")
    return {"status": "ok", "seconds": route_seconds - (info.get("load_seconds") or 0.0),
            "route_seconds": route_seconds, **{k: info.get(k) for k in keys if k in info},
            "what": "save the fp16 checkpoint + GPTQModel load and quantize (quantize_seconds) + save the GPTQ "
                    "checkpoint; route_seconds adds loading it with the inference kernel (load_seconds, which "
                    "includes the kernel's JIT build the first time)"}


# the decode targets' fields and the graph figures that replace them where a row has them
GRAPH_FIELDS = {"decode_b1_ratio": "graph_b1_ratio", "floor_ratio": "graph_floor_ratio"}
EAGER_FIGURE = "eager decode (model.generate)"


def _figure(field: str) -> str:
    if field in GRAPH_FIELDS:
        return EAGER_FIGURE
    return "prefill" if field.startswith("prefill") else "compression wall time" if field == "seconds" else field


def targets(bench: dict) -> list[dict]:
    """The issue's targets next to what was measured (``met`` None where nothing was measured).

    The batch-1 decode targets use the graph decode figure (static KV cache, CUDA graph replayed) of a row that has
    one -- the eager ``generate`` figure is launch-bound -- and the eager figure otherwise; ``figure`` says which
    (with the graph's mode), and ``eager`` keeps the eager value where the graph one was used."""
    rows = {r["variant"]: r for r in bench.get("variants", [])}
    out = []
    for key, field, op, goal, what in TARGETS:
        if key.startswith("compression:"):
            entry = (bench.get("compression") or {}).get(key.split(":", 1)[1]) or {}
        else:
            entry = rows.get(key) or {}
        ok = entry.get("status", "ok") == "ok"
        value = entry.get(field) if ok else None
        figure, eager = _figure(field), None
        graph_value = entry.get(GRAPH_FIELDS.get(field, "")) if ok else None
        if graph_value is not None:
            value, eager = graph_value, value
            figure = f"static-cache decode ({entry.get('graph_mode')})"
        met = None if value is None else (value <= goal if op == "<=" else value >= goal)
        row = {"target": what, "goal": f"{op} {goal:g}", "measured": value, "met": met, "figure": figure}
        if eager is not None:
            row["eager"] = eager
        out.append(row)
    return out


def make_benchmark_record(cfg, bandwidth: dict | None, rows: list[dict], compression: dict,
                          budget: Budget | None = None, plan_: dict | None = None) -> dict:
    from studylib.core import records

    bench = {
        "architecture": cfg.architecture,
        "config": ARCHITECTURES[cfg.architecture],
        "weights": RANDOM_WEIGHTS,
        "device": (plan_ or {}).get("device_name") or cfg.device,
        "reference": REFERENCE,
        "bandwidth": bandwidth,
        "timing": {"warmup": cfg.warmup, "repeats": cfg.repeats, "statistic": "median of the timed runs",
                   "prompt_tokens": cfg.prompt_tokens, "new_tokens": cfg.new_tokens, "large_batch": cfg.large_batch,
                   "prefill_tokens": cfg.prefill_tokens,
                   "decode": "(time to generate new_tokens - time to generate 1) / (new_tokens - 1), greedy, EOS "
                             "ignored; synchronized wall clock",
                   "floor": "floor_bytes (all weights but the input embedding table, which a step reads one row of) "
                            "/ bandwidth",
                   "graph_decode": GRAPH_DECODE if cfg.graph_decode else GRAPH_OFF,
                   "host_load": "per variant (host_load): the CPU count and the 1/5/15-minute load averages before "
                                "and after the eager and the graph timings"},
        "calibration": RANDOM_CALIBRATION,
        "variants": rows,
        "compression": compression,
        "elapsed_seconds": budget.elapsed() if budget else None,
    }
    bench["targets"] = targets(bench)
    return records.make_record(notebook=NOTEBOOK, run=cfg.run_name, params=cfg.as_dict(), profile=cfg.profile,
                               metrics={}, extra={"benchmark": bench})


def check_record(record: dict, cfg) -> None:
    """What every benchmark record must hold; raises AssertionError naming what is wrong."""
    bench = record["benchmark"]
    rows = {r["variant"]: r for r in bench["variants"]}
    assert list(rows) == list(cfg.variants), (list(rows), cfg.variants)  # every variant asked for has a row
    assert bench["bandwidth"] and bench["bandwidth"]["bytes_per_s"] > 0
    for name, r in rows.items():
        assert r["status"] in ("ok", "failed", "skipped"), (name, r["status"])
        if r["status"] == "ok":
            assert r["kernel"] and r["kernel"] != UNAVAILABLE, name
            for key in ("decode_b1_ms", "decode_large_ms", "prefill_ms", "weight_bytes", "floor_ms", "params"):
                assert r[key] and r[key] > 0, (name, key, r[key])
            assert r["host_load"]["cpus"] and "before" in r["host_load"]["eager"], name
            mode = r["graph_mode"]
            if not cfg.graph_decode:
                assert mode == GRAPH_OFF and r["graph_b1_ms"] is None, (name, mode)
                continue
            if graph_not_attempted(r):  # declared not capturable: nothing timed, nothing failed
                assert capture_skip(name, cfg.device), (name, mode)
                assert r["graph_b1_ms"] is None and r["graph_large_ms"] is None and not r["graph_error"], (name, r)
                continue
            assert mode == static_mode(cfg.device) or mode.startswith("failed: "), (name, mode)
            for key in ("graph_b1_ms", "graph_large_ms"):  # a figure, or the reason there is none
                assert (r[key] is not None and r[key] > 0) or r["graph_error"], (name, key, r[key])
            measured = r["graph_b1_ms"] is not None or r["graph_large_ms"] is not None
            assert measured != mode.startswith("failed: "), (name, mode)  # failed: neither batch measured
        else:
            assert r["error"], name  # why it did not run, said
            assert r["status"] != "failed" or r["kernel"] == UNAVAILABLE, name
    ref = rows.get(REFERENCE)
    if ref and ref["status"] == "ok":
        assert abs(ref["decode_b1_ratio"] - 1) < 1e-9 and abs(ref["prefill_speedup"] - 1) < 1e-9
        assert ref.get("graph_b1_ms") is None or abs(ref["graph_b1_ratio"] - 1) < 1e-9
    for key, wanted in (("gptq-w4", cfg.time_gptq), ("wanda", cfg.time_wanda)):
        entry = bench["compression"].get(key)
        assert (entry is not None) == bool(wanted), key
        if entry:
            assert entry["status"] in ("ok", "failed", "skipped"), key
            assert entry["status"] != "ok" or entry["seconds"] > 0, key
            assert entry["status"] == "ok" or entry["error"], key


GRAPH_KEYS = ("graph_b1_ms", "graph_b1_ratio", "graph_floor_ratio", "graph_large_ms", "graph_large_ratio",
              "graph_mode", "graph_error", "graph_check", "host_load")


def has_graph(rows) -> bool:
    """Whether a record's rows carry the graph decode fields (records made before they existed do not)."""
    return any("graph_mode" in r for r in rows or [])


def report_rows(record: dict) -> list[dict]:
    """The benchmark record's rows as the tables and figures use them (plain values, variant order kept). The graph
    decode fields (:data:`GRAPH_KEYS`) are added only when the record has them, so an older record reads as it did."""
    from studylib.bench.variants import LABELS

    bench = record.get("benchmark") or {}
    graph = has_graph(bench.get("variants"))
    errata = record.get("errata") or {}
    withdrawn = {}  # variant -> fields an erratum withdraws (results/errata.yaml: "<variant>:peak_memory")
    for field in errata.get("fields", []):
        variant, _, name = str(field).partition(":")
        withdrawn.setdefault(variant, []).append(name)
    out = []
    for r in bench.get("variants", []):
        row = {"variant": r["variant"], "label": LABELS.get(r["variant"], r["variant"]), "status": r["status"],
               "kernel": r.get("kernel"), "error": r.get("error"), "withdrawn": withdrawn.get(r["variant"], []),
               "errata": errata.get("reason") if r["variant"] in withdrawn else None}
        for key in ("decode_b1_ms", "decode_b1_ratio", "floor_ms", "floor_ratio", "decode_large_ms",
                    "decode_large_ratio", "large_batch", "prefill_ms", "prefill_ratio", "prefill_speedup",
                    "prefill_tokens", "peak_memory_bytes", "memory_ratio", "storage_bytes", "storage_ratio",
                    "storage_note", "weight_bytes", "floor_bytes", "params", "layers"):
            row[key] = r.get(key)
        if graph:
            for key in GRAPH_KEYS:
                row[key] = r.get(key)
        if "peak_memory" in row["withdrawn"]:
            row["peak_memory_bytes"] = row["memory_ratio"] = None
        out.append(row)
    return out
