"""The decoding engines an evaluation runs on: transformers ``generate`` (``hf``) and vLLM (``vllm``).

``hf`` runs everywhere (CPU, CI, the smoke profile) and serves every format the study makes. ``vllm`` is the GPU
engine: paged attention, continuous batching and CUDA graphs, so that full test sets and several seeds fit the GPU
time a session has. Both get the same token ids (the prompts built and tokenized by the study's own code; vLLM starts
with ``skip_tokenizer_init`` and never tokenizes), the same stopping rule (EOS or any token whose text holds a
newline, :func:`studylib.core.generation.stop_token_ids`), the same token cap, greedy decoding, and their outputs are
cut and scored by the same code.

vLLM's batch-invariant mode (``VLLM_BATCH_INVARIANT=1``, Hopper and newer) is meant to make a prompt's greedy output
independent of what else is in its batch; it is on by default and the record says whether it was. Two of vLLM
0.26.0's choices still let the neighbours in, so with batch invariance on both are set otherwise:
- chunked prefill splits a long pool's prompts at token-budget boundaries that depend on their neighbours: every
  prompt is prefilled whole (``enable_chunked_prefill`` off);
- on Hopper vLLM picks FlashAttention 3, whose kernel for a decoding row changes with the longest prompt prefilled in
  the same step (vllm-project/vllm issues 47069 and 51902): FlashAttention 2 is asked for (``attention_config``).
Whether it holds is measured, not assumed: notebook 41 decodes the same prompts again in the same pool and pooled
otherwise, and records the share that repeat.

A compressed model reaches vLLM as a plain checkpoint, or as the checkpoint its method kept for vLLM
(:func:`keep_checkpoint`: GPTQ's, where vLLM's gptq_marlin takes its settings; SmoothQuant's W8A8 exported in
compressed-tensors form; NF4 in transformers' bitsandbytes serialization), unless a method of its recipe is one
vLLM cannot serve from this study (:data:`HF_ONLY`): then ``hf`` decodes it and the record says why (:func:`choose`,
:func:`route`). This module imports neither torch nor vLLM until an engine starts: the mapping from params to vLLM's
arguments is plain Python, tested on the CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import tempfile
import time

ENGINES = ("hf", "vllm")
VLLM_VERSION = "0.26.0"  # the version the device kit carries (tools/device/vllm-wheels.sh)

# Recipe methods whose models vLLM does not serve from this study yet, and why: hf decodes them (:func:`choose`). Every
# other model reaches vLLM as a plain checkpoint in the run's dtype (the zeros of unstructured pruning stay in place;
# removed layers leave a config with fewer layers), or as the checkpoint its method kept (GPTQ: :func:`route`).
# vLLM's own kernels for the quantized formats are timed at 7B by the benchmark (engine vllm), on weights made in
# vLLM's formats.
HF_ONLY = {
    "bnb-int8": "vLLM has no LLM.int8() (bitsandbytes 8-bit with outlier decomposition) path",
    "head-prune": "the heads kept differ between layers; vLLM's Gemma-3 takes one head count for every layer",
}


# vLLM 0.26's gptq_marlin: symmetric 4- or 8-bit weights, groups of these sizes; its other GPTQ kernel (exllama)
# computes in float16 only and reads asymmetric or 2/3-bit GPTQModel checkpoints as the older format (wrong outputs).
MARLIN_BITS = (4, 8)
MARLIN_GROUP_SIZES = (-1, 32, 64, 128)
CHECKPOINT = "studylib_checkpoint"  # attribute of a model whose method kept a checkpoint vLLM loads as it is


def gptq_served_why(bits: int, group_size: int, sym: bool) -> str | None:
    """None when vLLM serves a GPTQ checkpoint of these settings with gptq_marlin, else why not (hf decodes it)."""
    if bits not in MARLIN_BITS:
        return f"vLLM's gptq_marlin takes {' or '.join(map(str, MARLIN_BITS))}-bit weights, not {bits}-bit"
    if group_size not in MARLIN_GROUP_SIZES:
        return f"vLLM's gptq_marlin takes groups of {', '.join(map(str, MARLIN_GROUP_SIZES))}, not {group_size}"
    if not sym:
        return "vLLM's gptq_marlin takes symmetric GPTQ weights only"
    return None


def keep_checkpoint(model, folder, fmt: str, why: str | None = None, *, move: bool = False) -> None:
    """Mark ``model`` as served from ``folder`` (a checkpoint vLLM loads as it is, e.g. GPTQModel's), copied (or
    moved: a rename on one file system, however large) into a folder of this process's that is removed when it exits;
    ``why`` not None: vLLM cannot serve it, and why (nothing is kept)."""
    kept = None
    if why is None:
        import atexit
        import shutil
        import tempfile
        from pathlib import Path

        root = tempfile.mkdtemp(prefix=f"studylib-{fmt}-served-")
        atexit.register(shutil.rmtree, root, True)
        kept = str(Path(root) / "checkpoint")
        if move:
            shutil.move(str(folder), kept)
        else:
            shutil.copytree(folder, kept)
    setattr(model, CHECKPOINT, {"path": kept, "format": fmt, "why": why})


def served_checkpoint(model) -> dict | None:
    """The checkpoint :func:`keep_checkpoint` marked ``model`` with (``path``, ``format``, ``why``), or None. An
    adapter's wrapper is never served from its base's checkpoint (it would lose the adapter)."""
    if hasattr(model, "peft_config"):
        return None
    found = getattr(model, CHECKPOINT, None)
    return found if isinstance(found, dict) else None


def route(name: str, why: str | None, model) -> tuple[str, str | None, dict | None]:
    """The engine that decodes ``model`` after :func:`choose` said ``name``: (engine, why, checkpoint to serve).
    vLLM serves a model as a plain checkpoint of what is in memory, or from the checkpoint its method kept; an
    adapter, or a quantized model with no kept checkpoint, goes to hf, which says why."""
    if name != "vllm":
        return name, why, None
    if hasattr(model, "peft_config"):
        return "hf", "an adapter in memory: served as a plain checkpoint it would not be itself", None
    kept = served_checkpoint(model)
    if kept is not None:
        return ("hf", kept["why"], None) if kept.get("why") else ("vllm", None, kept)
    if getattr(model, "is_quantized", False):
        return "hf", "a quantized model in memory with no checkpoint vLLM loads: served plain it would not be itself", None
    return "vllm", None, None


class EngineError(RuntimeError):
    """An engine that cannot run here (vLLM not installed, no GPU): one line, before any model loads."""


def vllm_version() -> str | None:
    """The installed vLLM's version, or None when vLLM is not importable (CPU machines and CI never have it)."""
    if importlib.util.find_spec("vllm") is None:
        return None
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_engine(engine: str, device: str) -> None:
    """Whether ``engine`` can run on ``device`` here; an :class:`EngineError` of one line if not."""
    if engine not in ENGINES:
        raise EngineError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "vllm":
        if device == "cpu" or not _cuda():
            raise EngineError("engine 'vllm' needs a CUDA GPU; on the CPU use engine 'hf'")
        if vllm_version() is None:
            raise EngineError(f"engine 'vllm' needs vllm=={VLLM_VERSION}, which is not installed here (on the lent "
                              "GPU: tools/device/vllm-wheels.sh and session.sh vllm-piece); use engine 'hf'")


def choose(engine: str, methods: list[str]) -> tuple[str, str | None]:
    """The engine a run's model is decoded with, and why it is not the one asked for: vLLM serves a model when
    every method of its recipe is servable (:data:`HF_ONLY`), else hf decodes it."""
    if engine != "vllm":
        return engine, None
    for name in methods:
        if name in HF_ONLY:
            return "hf", f"{name}: {HF_ONLY[name]}"
    return "vllm", None


def check_repetition_penalty(value) -> None:
    """A repetition penalty is a number >= 1.0 (1.0: none); one clear error otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1.0:
        raise ValueError(f"repetition_penalty must be a number >= 1.0 (1.0: none), got {value!r}")


def sampling_kwargs(max_new_tokens: int, stop_ids: list[int], seed: int = 0, repetition_penalty: float = 1.0) -> dict:
    """vLLM ``SamplingParams`` for the study's decoding: greedy, at most ``max_new_tokens``, stopped by the first of
    ``stop_ids`` (kept in the output so that the cut is the one hf makes), token ids only (no detokenizer).
    ``repetition_penalty`` is CTRL's, as transformers applies it: the logit of every token already in the prompt or the
    output is divided by it (multiplied when negative); 1.0 is none."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    check_repetition_penalty(repetition_penalty)
    return {"n": 1, "temperature": 0.0, "seed": seed, "max_tokens": int(max_new_tokens),
            "repetition_penalty": float(repetition_penalty),
            "stop_token_ids": sorted(int(i) for i in stop_ids), "ignore_eos": False, "detokenize": False,
            "skip_special_tokens": False}


WHOLE_PROMPT_TOKENS = 16384  # tokens a scheduler step holds when prompts are never split (vLLM's offline default)


def llm_kwargs(model_dir: str, *, dtype: str = "bfloat16", quantization: str | None = None, seed: int = 0,
               max_model_len: int = 2048, gpu_memory_utilization: float = 0.4, max_num_seqs: int = 256,
               load_format: str = "auto", capture_sizes: list[int] | None = None,
               enforce_eager: bool = False, chunked_prefill: bool = True,
               max_num_batched_tokens: int = WHOLE_PROMPT_TOKENS, flash_attn_version: int | None = None,
               flashinfer_autotune: bool = True) -> dict:
    """vLLM ``LLM(...)`` arguments for a local checkpoint (never a hub id: nothing is downloaded). Prefix caching is
    off: a cached prefix would be computed in another batch than the rest of its prompt. Without ``chunked_prefill``
    each prompt is prefilled in one step, and a step holds up to ``max_num_batched_tokens`` tokens (at least
    ``max_model_len``, so that every prompt fits one). ``flash_attn_version`` (2 or 3) pins the FlashAttention
    version; None leaves vLLM's choice (3 on Hopper). ``flashinfer_autotune`` false skips FlashInfer's kernel
    autotuning at start (its default kernels then run, whatever a tuning would have timed fastest)."""
    if dtype not in ("bfloat16", "float16", "auto"):
        raise ValueError(f"vLLM serves bfloat16 or float16 activations, got dtype {dtype!r}")
    if not 0 < gpu_memory_utilization < 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1), got {gpu_memory_utilization!r}")
    kw = {"model": str(model_dir), "skip_tokenizer_init": True, "dtype": dtype, "seed": seed,
          "max_model_len": int(max_model_len), "gpu_memory_utilization": gpu_memory_utilization,
          "max_num_seqs": int(max_num_seqs), "enable_prefix_caching": False, "load_format": load_format,
          "enforce_eager": enforce_eager}
    if flash_attn_version is not None:
        if flash_attn_version not in (2, 3):
            raise ValueError(f"flash_attn_version must be 2, 3 or None, got {flash_attn_version!r}")
        kw["attention_config"] = {"flash_attn_version": int(flash_attn_version)}
    if not chunked_prefill:
        kw["enable_chunked_prefill"] = False
        kw["max_num_batched_tokens"] = max(int(max_num_batched_tokens), int(max_model_len))
    if not flashinfer_autotune:
        kw["enable_flashinfer_autotune"] = False
    if quantization:
        kw["quantization"] = quantization
    if capture_sizes:
        kw["compilation_config"] = {"cudagraph_capture_sizes": sorted(set(int(s) for s in capture_sizes))}
    return kw


def finish(row: list[int], stops, max_new_tokens: int) -> int:
    """How many of a continuation's tokens count: up to and including its first stop token, else all of them."""
    stop = set(stops)
    for i, token in enumerate(row):
        if token in stop:
            return i + 1
    return min(len(row), max_new_tokens)


@contextlib.contextmanager
def start_lock(path: str | None = None):
    """Hold this host's vLLM start lock while an engine starts, so that engines start one at a time. vLLM sizes its KV
    cache from the GPU memory its start-up profile sees taken; an engine starting beside it on the same GPU at the
    same moment counts as its own use and can leave it none ("No available memory for the cache blocks"). Engines that
    have started share the GPU as before. ``path`` None: ``$STUDYLIB_VLLM_LOCK``, else a file in the temp folder."""
    path = path or os.environ.get("STUDYLIB_VLLM_LOCK") or os.path.join(tempfile.gettempdir(), "studylib-vllm-start.lock")
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class VLLMEngine:
    """One vLLM engine in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: ``llm.apply_model`` reaches the model
    to count its bytes, and closing the engine frees the GPU for the next one)."""

    def __init__(self, model_dir: str, *, batch_invariant: bool = True, chunked_prefill: bool | None = None,
                 flash_attn_version: int | None = None, **kwargs):
        """``chunked_prefill`` None: off when ``batch_invariant`` (see the module's docstring), else vLLM's default;
        ``flash_attn_version`` None: 2 when ``batch_invariant``, else vLLM's choice."""
        # read when vLLM is first imported: every engine of one process runs with the first one's setting
        os.environ["VLLM_BATCH_INVARIANT"] = "1" if batch_invariant else "0"
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # apply_model's function, if it crosses
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
        importlib.invalidate_caches()  # a vLLM installed into a folder on the path after this process started
        from vllm import LLM

        if chunked_prefill is None:
            chunked_prefill = not batch_invariant
        if flash_attn_version is None and batch_invariant:
            flash_attn_version = 2
        self.kwargs = llm_kwargs(model_dir, chunked_prefill=chunked_prefill, flash_attn_version=flash_attn_version,
                                 **kwargs)
        self.batch_invariant = batch_invariant
        waited = time.perf_counter()
        with start_lock():
            start = time.perf_counter()
            self.start_wait_seconds = start - waited
            self.llm = LLM(**self.kwargs)
            self.start_seconds = time.perf_counter() - start

    def generate(self, prompt_ids: list[list[int]], *, max_new_tokens: int, stop_ids: list[int], seed: int = 0,
                 progress: bool = True, repetition_penalty: float = 1.0) -> list[list[int]]:
        """Each prompt's greedy continuation as token ids, in prompt order, ending with its stop token if it
        stopped on one."""
        from vllm import SamplingParams

        params = SamplingParams(**sampling_kwargs(max_new_tokens, stop_ids, seed, repetition_penalty))
        outs = self.llm.generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params, use_tqdm=progress)
        rows = []
        for out in outs:
            c = out.outputs[0]
            row = list(c.token_ids)
            if isinstance(c.stop_reason, int) and (not row or row[-1] != c.stop_reason):
                row.append(c.stop_reason)  # a stop token vLLM left out of the ids
            rows.append(row)
        return rows

    def info(self) -> dict:
        return {"engine": "vllm", "version": vllm_version(), "batch_invariant": self.batch_invariant,
                "start_seconds": self.start_seconds, "start_wait_seconds": getattr(self, "start_wait_seconds", 0.0),
                "checkpoint": getattr(self, "checkpoint", "plain"),
                "kwargs": {k: v for k, v in self.kwargs.items() if k != "model"}}

    def close(self) -> None:
        """Free the engine and its GPU memory."""
        import gc

        import torch

        llm, self.llm = self.llm, None
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 -- best effort: in-process engines have no core process to stop
            pass
        del llm
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:  # noqa: BLE001
            pass
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        served = getattr(self, "served_dir", None)
        if served:  # the checkpoint studylib.core.evaluation.serve_with_vllm wrote for this engine
            import shutil

            shutil.rmtree(served, ignore_errors=True)


def hf_info() -> dict:
    import transformers

    return {"engine": "hf", "version": transformers.__version__, "batch_invariant": False}
