"""Dev data for every choice made on dev (layer and head selection, early stopping of training): a dev set disjoint
from every test set, and its score.

Selections read ALMA's dev split (``data.load_split(..., "dev")``). ALMA's valid files share 885 of 1,002 English
sides with the en->is WMT21 test sources, so every dev pair sharing a sentence with any test set of the study
(ALMA's WMT22/21 test sets of all ten directions and WMT24) is dropped, and the rest is asserted disjoint before
use. That leaves 117 pairs for cs/de/ru/zh and 200 for is (per direction). For early stopping, the training pairs
that share a sentence with the dev set are held out of training (:func:`hold_out`, counted), so that dev measures
translation of unseen sentences. It is this way round because ALMA's train data are multi-way parallel: the English
sides of Icelandic's dev pairs (carved from its train file) recur in the other directions' training pairs, so dropping
dev pairs seen in training would leave no Icelandic dev set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studylib.core import data, leakage


def check_dev_selection_params(p: dict, int_keys: tuple[str, ...], error=ValueError) -> None:
    """The parameters a dev-set-driven selection method shares (layer and head pruning): positive integers,
    a zero-shot prompt style, the study's directions. Raises ``error`` with one clear message."""
    from studylib.core.languages import UnknownDirectionError, normalize_directions

    for key in int_keys:
        if not isinstance(p[key], int) or isinstance(p[key], bool) or p[key] < 1:
            raise error(f"{key} must be a positive integer, got {p[key]!r}")
    if p["prompt_style"] not in ("alma", "tower"):
        raise error(f"prompt_style must be 'alma' or 'tower', got {p['prompt_style']!r}")
    try:
        normalize_directions(p["directions"])
    except UnknownDirectionError as err:
        raise error(str(err)) from err


@dataclass
class DevSet:
    examples: list
    per_direction: dict = field(default_factory=dict)
    dropped: dict = field(default_factory=dict)
    seed: int = 0
    held_out: int | None = None  # training pairs removed because they share a sentence with the dev set

    def describe(self) -> dict:
        return {"n": len(self.examples), "per_direction": self.per_direction,
                "dropped_test_overlap": self.dropped, "seed": self.seed,
                **({"held_out_of_training": self.held_out} if self.held_out is not None else {}),
                "source": "ALMA dev split (valid files; is: carved from train), pairs sharing a sentence with any "
                          "ALMA or WMT24 test set dropped, then asserted disjoint"}


def dev_examples(directions, per_direction: int | None, *, seed: int = 0, root=None) -> DevSet:
    """``per_direction`` ALMA dev pairs of each direction, test-overlapping pairs dropped and asserted."""
    from studylib.core.languages import normalize_directions

    directions = normalize_directions(directions)
    root = data.resolve_data_dir(root)
    pool = leakage.every_test_sentence(root)
    out, counts, dropped = [], {}, {}
    for d in directions:
        kept, n_dropped = leakage.drop_test_overlap(data.load_split("alma", d, "dev", root=root), pool)
        chosen = data.subsample(kept, per_direction, seed)
        if per_direction is not None and len(chosen) < per_direction:
            raise ValueError(f"{d}: only {len(chosen)} dev pairs are disjoint from the test sets, "
                             f"fewer than the {per_direction} asked for")
        leakage.assert_no_test_overlap(chosen, pool, purpose="choices made on dev")
        out.extend(chosen)
        counts[d], dropped[d] = len(chosen), n_dropped
    return DevSet(out, counts, dropped, seed)


def hold_out(examples, dev: DevSet) -> list:
    """The training ``examples`` without those that share a sentence with ``dev`` (their count kept in
    ``dev.held_out``): whatever is chosen on dev is chosen on sentences the model did not train on."""
    kept, dev.held_out = leakage.drop_test_overlap(examples, dev.examples)
    return kept


def dev_score(model, tokenizer, dev: DevSet, *, metric: str = "chrf++", style: str = "alma", batch_size: int = 16,
              max_new_tokens: int = 64, repetition_penalty: float = 1.0) -> dict:
    """Greedy translations of the dev set scored per direction; ``score`` is the mean over directions."""
    from studylib.core import generation, metrics, prompts
    from studylib.core.languages import parse_direction

    # one generate call over every direction (batched by length across directions), scored per direction
    gens = generation.generate(model, tokenizer, prompts.build_prompts(dev.examples, style, tokenizer=tokenizer),
                               batch_size=batch_size, max_new_tokens=max_new_tokens, progress=False,
                               repetition_penalty=repetition_penalty)
    by_dir: dict = {}
    for ex, hyp in zip(dev.examples, gens.texts):
        by_dir.setdefault(ex.direction, ([], []))
        by_dir[ex.direction][0].append(hyp)
        by_dir[ex.direction][1].append(ex.tgt)
    per = {d: metrics.corpus_scores(hyps, refs, parse_direction(d)[1], [metric])[metric]
           for d, (hyps, refs) in by_dir.items()}
    return {"score": sum(per.values()) / len(per), "per_direction": per, "metric": metric}


def early_stopping(dev: DevSet, tokenizer, *, every: int, patience: int | None, style: str = "alma",
                   batch_size: int = 16, max_new_tokens: int = 256, metric: str = "chrf++",
                   repetition_penalty: float = 1.0):
    """Early stopping of a fine-tuning run on ``metric`` over ``dev`` (mean over directions), decoded as every
    evaluation decodes (greedy, ``max_new_tokens``): a :class:`studylib.core.training.DevSelection`."""
    from studylib.core import training

    def score(model) -> float:
        return dev_score(model, tokenizer, dev, metric=metric, style=style, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty)["score"]

    return training.DevSelection(score, every=every, patience=patience,
                                 what={"metric": metric, "max_new_tokens": max_new_tokens,
                                       "repetition_penalty": repetition_penalty, "dev": dev.describe()})
