"""Translate a test set per direction and score it: the step every notebook shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from studylib.core import data, metrics, prompts
from studylib.core.generation import generate
from studylib.core.languages import parse_direction


@dataclass
class Evaluation:
    metrics: dict = field(default_factory=dict)  # direction -> {"bleu", "chrf", "chrf++", ["comet"], "n", ...}
    outputs: dict = field(default_factory=dict)  # direction -> {"src", "ref", "hyp"}
    seconds: float = 0.0
    new_tokens: int = 0


def load_test_sets(cfg) -> dict:
    """The test examples of each direction, subsampled deterministically to ``cfg.n_test``."""
    root = data.resolve_data_dir(cfg.data_dir)
    return {d: data.load_split(cfg.test_source, d, "test", n=cfg.n_test, seed=cfg.seed, root=root)
            for d in cfg.directions}


def make_prompts(cfg, direction, examples, tokenizer) -> list[str]:
    shot_pairs = None
    if cfg.prompt_style == "alma-fewshot":
        shot_pairs = data.load_few_shot(direction, root=data.resolve_data_dir(cfg.data_dir))
    return prompts.build_prompts(examples, cfg.prompt_style, shots=cfg.shots, shot_pairs=shot_pairs,
                                 tokenizer=tokenizer)


def evaluate(model, tokenizer, cfg, test_sets: dict | None = None, progress: bool = True) -> Evaluation:
    """Greedy translations of every direction's test set, scored with ``cfg.metrics``.

    All directions are decoded together: one pool of prompts, batched by length across directions
    (``cfg.batch_size`` prompts a batch), so a small model keeps the GPU busy with few, wide decoding steps. The
    scores are per direction. COMET gets the plain source sentences (never the prompt) from a local checkpoint.
    """
    test_sets = test_sets if test_sets is not None else load_test_sets(cfg)
    result = Evaluation()
    prompts, spans = [], {}
    for direction, examples in test_sets.items():
        ps = make_prompts(cfg, direction, examples, tokenizer)
        spans[direction] = (len(prompts), len(prompts) + len(ps))
        prompts += ps
    gens = generate(model, tokenizer, prompts, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                    progress=progress, desc=f"translating ({len(test_sets)} directions)")
    for direction, examples in test_sets.items():
        _, tgt_lang = parse_direction(direction)
        first, last = spans[direction]
        hyps = gens.texts[first:last]
        srcs = [ex.src for ex in examples]
        refs = [ex.tgt for ex in examples]
        scores = metrics.corpus_scores(hyps, refs, tgt_lang, [m for m in cfg.metrics if m != "comet"])
        if "comet" in cfg.metrics:
            from studylib.core.comet import score_comet

            scores["comet"] = score_comet(srcs, hyps, refs, cfg.comet_checkpoint)["score"]
        scores["n"] = len(examples)
        scores["new_tokens"] = int(sum(gens.new_tokens[first:last]))
        result.metrics[direction] = scores
        result.outputs[direction] = {"src": srcs, "ref": refs, "hyp": hyps}
    result.seconds = gens.seconds
    result.new_tokens = gens.total_new_tokens
    return result


def speed_prompt(cfg, tokenizer) -> str:
    """A fixed, realistic prompt for decode-speed measurements: the first test sentence of the first direction."""
    direction = cfg.directions[0]
    root = data.resolve_data_dir(cfg.data_dir)
    example = data.load_split(cfg.test_source, direction, "test", n=1, seed=cfg.seed, root=root)
    return make_prompts(cfg, direction, example, tokenizer)[0]
