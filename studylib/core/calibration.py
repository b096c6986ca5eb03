"""Calibration data for compression: ALMA *train* pairs, balanced over directions, in the evaluation prompt.

Reference implementations calibrated on the test set, or silently on one language; here every direction
contributes the same number of samples (recorded), and the texts are asserted disjoint from every test set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from studylib.core import data, leakage, prompts
from studylib.core.languages import normalize_directions


@dataclass
class Calibration:
    texts: list[str]
    per_direction: dict = field(default_factory=dict)
    style: str = "alma"
    seed: int = 0

    def describe(self) -> dict:
        return {"n": len(self.texts), "per_direction": self.per_direction, "style": self.style, "seed": self.seed,
                "source": "ALMA human-written train split (test overlap dropped and asserted)"}


def calibration_set(per_direction: int, directions="all", *, style: str = "alma", seed: int = 0, root=None,
                    tokenizer=None) -> Calibration:
    """``per_direction`` prompt+reference texts from ALMA's train split for each direction."""
    if not isinstance(per_direction, int) or per_direction < 1:
        raise ValueError(f"per_direction must be a positive integer, got {per_direction!r}")
    directions = normalize_directions(directions)
    root = data.resolve_data_dir(root)
    pool = leakage.test_sentences(root=root)
    texts, counts = [], {}
    for d in directions:
        candidates, _ = leakage.drop_test_overlap(data.load_split("alma", d, "train", root=root), pool)
        chosen = data.subsample(candidates, per_direction, data.direction_seed(seed, d))  # de-en and en-de differ
        if len(chosen) < per_direction:
            raise ValueError(f"{d}: only {len(chosen)} train pairs for {per_direction} calibration samples")
        leakage.assert_no_test_overlap(chosen, pool, purpose="calibration")
        for ex in chosen:
            prompt, target = prompts.training_text(ex, style, tokenizer=tokenizer)
            texts.append(prompt + target.rstrip("\n"))
        counts[d] = len(chosen)
    return Calibration(texts=texts, per_direction=counts, style=style, seed=seed)
