"""Translate a test set per direction and score it: the step every notebook shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from studylib.core import data, engines, failures, metrics, prompts, records
from studylib.core.generation import generate, generate_vllm
from studylib.core.languages import parse_direction


@dataclass
class Evaluation:
    metrics: dict = field(default_factory=dict)  # direction -> {"bleu", "chrf", "chrf++", ["comet"], "n", ...}
    outputs: dict = field(default_factory=dict)  # direction -> {"src", "ref", "hyp"}
    seconds: float = 0.0
    new_tokens: int = 0
    engine: dict = field(default_factory=dict)  # which engine decoded, its version, and why if not the one asked for
    also: dict = field(default_factory=dict)  # test set -> {"metrics", "averages"} of the sets decoded beside (also_test)


def load_test_sets(cfg) -> dict:
    """The test examples of each direction, subsampled deterministically to ``cfg.n_test`` by ``cfg.test_seed`` (not
    the run's ``seed``: the seeds of a trained run are scored on the same segments). Every notebook calls it
    before its model loads, so an engine that cannot run here (``cfg.engine`` or ``cfg.engines``: vLLM without a GPU
    or its wheels) fails here too, in one line."""
    for name in dict.fromkeys([getattr(cfg, "engine", "hf"), *getattr(cfg, "engines", [])]):
        engines.check_engine(name, cfg.device)
    root = data.resolve_data_dir(cfg.data_dir)
    seed = getattr(cfg, "test_seed", 0)
    return {d: data.load_split(cfg.test_source, d, "test", n=cfg.n_test, seed=seed, root=root) for d in cfg.directions}


def load_also_test_sets(cfg) -> dict:
    """The other test sets a run also decodes (``cfg.also_test``), each on the run's directions it holds, subsampled
    as the main ones: ``{test set: {direction: examples}}``. Called beside :func:`load_test_sets`, before any model
    loads, so a missing file fails there."""
    root = data.resolve_data_dir(cfg.data_dir)
    seed = getattr(cfg, "test_seed", 0)
    holds = {"wmt24": data.WMT24_DIRECTIONS}
    return {source: {d: data.load_split(source, d, "test", n=cfg.n_test, seed=seed, root=root)
                     for d in cfg.directions if d in holds.get(source, cfg.directions)}
            for source in getattr(cfg, "also_test", None) or []}


def make_prompts(cfg, direction, examples, tokenizer) -> list[str]:
    shot_pairs = None
    if cfg.prompt_style == "alma-fewshot":
        shot_pairs = data.load_few_shot(direction, root=data.resolve_data_dir(cfg.data_dir))
    return prompts.build_prompts(examples, cfg.prompt_style, shots=cfg.shots, shot_pairs=shot_pairs,
                                 tokenizer=tokenizer)


def recipe_methods(cfg) -> list[str]:
    """The compression methods a run's model went through (none for a base or a teacher)."""
    return [step["method"] for step in (getattr(cfg, "recipe", None) or [])]


def serve_with_vllm(model, cfg, **kwargs):
    """A vLLM engine serving ``model``, started with the run's seed: from the checkpoint its method kept
    (:func:`studylib.core.engines.keep_checkpoint`, e.g. GPTQ's), else as it is in memory, saved as a plain checkpoint
    in its dtype into a temporary folder (kept while the engine lives; ``engine.served_dir``). The engine takes
    ``cfg.vllm_memory`` of the GPU's memory unless ``gpu_memory_utilization`` is given, compiled and with CUDA graphs
    unless ``cfg.vllm_eager``, with FlashInfer's autotuning at start unless ``cfg.vllm_autotune`` is false."""
    import tempfile

    kwargs.setdefault("gpu_memory_utilization", getattr(cfg, "vllm_memory", 0.4))
    kwargs.setdefault("enforce_eager", getattr(cfg, "vllm_eager", False))
    kwargs.setdefault("flashinfer_autotune", getattr(cfg, "vllm_autotune", True))
    kept = engines.served_checkpoint(model)
    if kept is not None and kept.get("path"):
        engine = engines.VLLMEngine(kept["path"], dtype=cfg.dtype, seed=cfg.seed, **kwargs)
        engine.checkpoint = kept["format"]
        return engine
    tmp = tempfile.mkdtemp(prefix="studylib-vllm-")
    model.save_pretrained(tmp, safe_serialization=True)
    engine = engines.VLLMEngine(tmp, dtype=cfg.dtype, seed=cfg.seed, **kwargs)
    engine.served_dir = tmp
    return engine


def evaluate(model, tokenizer, cfg, test_sets: dict | None = None, progress: bool = True, *, engine=None,
             pooled: bool = True, also: dict | None = None) -> Evaluation:
    """Greedy translations of every direction's test set, scored with ``cfg.metrics``.

    ``pooled`` (the default): all directions are decoded together, one pool of prompts (on hf batched by length
    across directions, ``cfg.batch_size`` prompts a batch), so a small model keeps the GPU busy; else each direction
    is decoded as a pool of its own. The scores are per direction. COMET gets the plain source sentences (never the
    prompt) from a local checkpoint. Each direction also gets its failure rates (off-target, runaway, empty:
    :mod:`studylib.core.failures`).

    ``cfg.engine`` 'vllm' decodes through vLLM (``engine``: one already started, e.g. to decode twice; else one is
    started for ``model`` and closed after) unless a method of the run's recipe is one vLLM does not serve
    (:func:`studylib.core.engines.choose`); ``Evaluation.engine`` says which engine ran and why.

    ``also`` (:func:`load_also_test_sets`): other test sets decoded in the same pool, scored the same way into
    ``Evaluation.also`` (their outputs are not kept: the main test sets' are what the paired tests read).
    """
    test_sets = test_sets if test_sets is not None else load_test_sets(cfg)
    # the other test sets join the pool as directions of their own, "<test set>:<direction>", and are split off after
    named = {f"{source}:{d}": examples for source, sets in (also or {}).items() for d, examples in sets.items()}
    test_sets = {**test_sets, **named}
    result = Evaluation()
    name, why, _ = engines.route(*engines.choose(getattr(cfg, "engine", "hf"), recipe_methods(cfg)), model)
    own = name == "vllm" and engine is None
    if own:
        engine = serve_with_vllm(model, cfg)
    result.engine = {**(engine.info() if name == "vllm" else engines.hf_info()), "asked": getattr(cfg, "engine", "hf"),
                     "why": why, "pooled": pooled,
                     "language_id": failures.lid_name() or "not installed: no off-target rate"}
    pools = [list(test_sets)] if pooled else [[d] for d in test_sets]
    texts, counts, seconds = {}, {}, 0.0
    try:
        for pool in pools:
            prompts_, spans = [], {}
            for direction in pool:
                ps = make_prompts(cfg, direction.rpartition(":")[2], test_sets[direction], tokenizer)
                spans[direction] = (len(prompts_), len(prompts_) + len(ps))
                prompts_ += ps
            desc = f"translating ({', '.join(pool) if len(pool) < 3 else f'{len(pool)} directions'})"
            if name == "vllm":
                gens = generate_vllm(engine, tokenizer, prompts_, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                                     progress=progress, repetition_penalty=getattr(cfg, "repetition_penalty", 1.0))
            else:
                gens = generate(model, tokenizer, prompts_, batch_size=cfg.batch_size,
                                max_new_tokens=cfg.max_new_tokens, progress=progress, desc=desc,
                                repetition_penalty=getattr(cfg, "repetition_penalty", 1.0))
            seconds += gens.seconds
            for direction, (first, last) in spans.items():
                texts[direction], counts[direction] = gens.texts[first:last], gens.new_tokens[first:last]
    finally:
        if own:
            engine.close()
    for direction, examples in test_sets.items():
        _, tgt_lang = parse_direction(direction.rpartition(":")[2])
        hyps = texts[direction]
        srcs = [ex.src for ex in examples]
        refs = [ex.tgt for ex in examples]
        scores = metrics.corpus_scores(hyps, refs, tgt_lang, [m for m in cfg.metrics if m != "comet"])
        if "comet" in cfg.metrics:
            from studylib.core.comet import score_comet

            scores["comet"] = score_comet(srcs, hyps, refs, cfg.comet_checkpoint)["score"]
        scores["n"] = len(examples)
        scores["new_tokens"] = int(sum(counts[direction]))
        scores.update(failures.direction_failures(hyps, srcs, tgt_lang, tokenizer, counts[direction],
                                                  cfg.max_new_tokens))
        result.metrics[direction] = scores
        result.outputs[direction] = {"src": srcs, "ref": refs, "hyp": hyps}
    result.seconds = seconds
    result.new_tokens = int(sum(sum(c) for c in counts.values()))
    for name in named:
        source, _, direction = name.partition(":")
        scores = result.metrics.pop(name)
        result.outputs.pop(name)
        result.also.setdefault(source, {"metrics": {}})["metrics"][direction] = scores
    for block in result.also.values():
        block["averages"] = records.direction_averages(block["metrics"])
    return result


def also_block(ev: Evaluation) -> dict:
    """The record's ``also_tests`` entry for the other test sets an evaluation decoded ({} when none)."""
    return {"also_tests": ev.also} if ev.also else {}


def speed_prompt(cfg, tokenizer) -> str:
    """A fixed, realistic prompt for decode-speed measurements: the first test sentence of the first direction."""
    direction = cfg.directions[0]
    root = data.resolve_data_dir(cfg.data_dir)
    example = data.load_split(cfg.test_source, direction, "test", n=1, seed=getattr(cfg, "test_seed", 0), root=root)
    return make_prompts(cfg, direction, example, tokenizer)[0]
