"""Sequence-level knowledge distillation (Kim & Rush 2016) and the training sets built from it.

The teacher translates the train sources greedily; its pairs are filtered (:mod:`studylib.core.kd_filter`: empty,
runaway, length ratio, off-target, duplicates) and the student is trained on the human pairs plus the kept ones,
duplicates removed. Out-of-domain pairs (Tatoeba) can be added for the data-size study;
a held-out slice of the same pool is the out-of-domain test set and never feeds training.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

from dataclasses import dataclass, field
from typing import ClassVar

from studylib.core import data, kd_filter, leakage, prompts
from studylib.runs.params import EvalParams, ParamsError, _check, _positive_int, normalize_directions
from studylib.core.generation import generate, generate_vllm


def teacher_translations(teacher, tokenizer, sources: list[data.Example], *, style: str = "alma",
                         batch_size: int = 64, max_new_tokens: int = 256, progress: bool = True,
                         repetition_penalty: float = 1.0, engine=None, seed: int = 0) -> list[data.Example]:
    """The teacher's greedy translation of each example's source, as new examples (origin 'kd'), each with its
    decoded token count (meta ``new_tokens``: the runaway filter compares it with the cap).

    Examples may mix directions; each direction is prompted as itself. With ``engine`` (a started
    :class:`studylib.core.engines.VLLMEngine`) every direction is decoded in one pool through it, else by HF
    ``generate`` a direction at a time; both with the same prompts, cap, stop and ``repetition_penalty``. Every output
    is returned, empty ones too: :func:`studylib.core.kd_filter.filter_pairs` drops and counts them.
    """
    by_direction: dict[str, list[data.Example]] = {}
    for ex in sources:
        by_direction.setdefault(ex.direction, []).append(ex)
    if engine is not None:
        pool = [ex for exs in by_direction.values() for ex in exs]
        texts = [p for exs in by_direction.values() for p in prompts.build_prompts(exs, style, tokenizer=tokenizer)]
        gens = generate_vllm(engine, tokenizer, texts, max_new_tokens=max_new_tokens, seed=seed, progress=progress,
                             repetition_penalty=repetition_penalty)
        return [data.Example(ex.src, hyp, ex.direction, (("origin", "kd"), ("new_tokens", n)))
                for ex, hyp, n in zip(pool, gens.texts, gens.new_tokens)]
    out = []
    for direction, exs in by_direction.items():
        gens = generate(teacher, tokenizer, prompts.build_prompts(exs, style, tokenizer=tokenizer),
                        batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress,
                        desc=f"KD {direction}", repetition_penalty=repetition_penalty)
        out += [data.Example(ex.src, hyp, direction, (("origin", "kd"), ("new_tokens", n)))
                for ex, hyp, n in zip(exs, gens.texts, gens.new_tokens)]
    return out


def kd_translations(teacher, tokenizer, sources: list[data.Example], cfg, *, progress: bool = True):
    """:func:`teacher_translations` as the run's params say (``engine``, ``repetition_penalty``, cap, seed): a vLLM
    engine is started for the teacher and closed after. Returns (translations, the engine's description for the
    record)."""
    from studylib.core import engines, evaluation

    engine = evaluation.serve_with_vllm(teacher, cfg) if cfg.engine == "vllm" else None
    try:
        translated = teacher_translations(teacher, tokenizer, sources, style=cfg.prompt_style,
                                          batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                                          progress=progress, repetition_penalty=cfg.repetition_penalty,
                                          engine=engine, seed=cfg.seed)
        info = engine.info() if engine is not None else engines.hf_info()
    finally:
        if engine is not None:
            engine.close()
    return translated, {**info, "asked": cfg.engine, "why": None, "pooled": engine is not None}


def _key(ex: data.Example) -> tuple:
    return ex.direction, data.normalize(ex.src), data.normalize(ex.tgt)


def combine(*parts: tuple[str, list[data.Example]]) -> tuple[list[data.Example], dict]:
    """Concatenate named parts (e.g. ('human', ...), ('kd', ...)), dropping exact duplicates; returns counts."""
    seen, merged, stats = set(), [], {"duplicates_removed": 0}
    for name, examples in parts:
        kept = 0
        for ex in examples:
            key = _key(ex)
            if key in seen:
                stats["duplicates_removed"] += 1
                continue
            seen.add(key)
            meta = ex.meta_dict()
            meta.setdefault("origin", name)
            merged.append(replace(ex, meta=tuple(meta.items())))
            kept += 1
        stats[name] = kept
    stats["total"] = len(merged)
    return merged, stats


def ood_split(directions, *, n_test_per_direction: int, seed: int = 0, root=None):
    """Tatoeba per direction, split into a held-out out-of-domain test slice and the training pool.

    Pairs sharing a sentence with any WMT test set are dropped first. A direction and its reverse are the same
    Tatoeba pairs, so a pool leaves out every sentence held out in *any* direction (else en-cs training would hold
    cs-en's test pairs, reversed); pools and test slices are disjoint across all directions (asserted).
    Returns (pool: {direction: [Example]}, test: {direction: [Example]}).
    """
    wmt_test = leakage.test_sentences(root=root)
    examples, test = {}, {}
    for d in directions:
        examples[d], _ = leakage.drop_test_overlap(data.load_split("tatoeba", d, "train", root=root), wmt_test)
        test[d] = data.subsample(examples[d], n_test_per_direction, data.direction_seed(seed, d))
    held = [e for d in directions for e in test[d]]
    held_keys = {data.normalize(e.src) for e in held} | {data.normalize(e.tgt) for e in held}
    pool = {d: [e for e in examples[d] if data.normalize(e.src) not in held_keys
                and data.normalize(e.tgt) not in held_keys] for d in directions}
    leakage.assert_no_test_overlap([e for d in directions for e in pool[d]], held, purpose="out-of-domain training pool")
    return pool, test


def sample_ood(pool: dict, total: int, seed: int = 0) -> list[data.Example]:
    """``total`` out-of-domain pairs spread evenly over the pool's directions (fewer where a pool runs out)."""
    if total < 0:
        raise ValueError("total must be >= 0")
    if total == 0:
        return []
    directions = list(pool)
    share, extra = divmod(total, len(directions))
    out = []
    for i, d in enumerate(directions):
        n = share + (1 if i < extra else 0)
        if n:
            out += data.subsample(pool[d], n, data.direction_seed(seed, d))
    return out


def save_examples(examples: list[data.Example], path: str | Path) -> Path:
    """JSON lines in the course schema ``{langs, src, tgt, origin}``, gzip-compressed when the name ends in .gz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(tmp, "wt", encoding="utf-8") as fh:
        for ex in examples:
            row = {"langs": ex.direction, "src": ex.src, "tgt": ex.tgt, "origin": ex.get("origin", "")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def load_examples(path: str | Path) -> list[data.Example]:
    path = Path(path)
    if not path.is_file():
        raise data.DataError(f"{path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                row = json.loads(line)
                try:
                    out.append(data.Example(row["src"], row["tgt"], row["langs"], (("origin", row.get("origin", "")),)))
                except KeyError as err:
                    raise data.DataError(f"{path}:{n}: missing field {err}") from None
    return out


@dataclass
class KDParams(EvalParams):
    """30_kd_data: the teacher translates ALMA's train sources (sequence-level knowledge distillation); its pairs
    pass ``kd_filters`` in order (:mod:`studylib.core.kd_filter`), with ``kd_length_ratio`` the bounds of output over
    source length and ``kd_max_tokens_ratio`` the output tokens over source tokens past which a pair is a runaway."""

    NOTEBOOK: ClassVar[str] = "30_kd_data"
    FAMILY: ClassVar[str] = "distillation"
    METHOD: ClassVar[str] = "kd-data"
    GPU: ClassVar[str] = "shared"  # translates only
    H200_MINUTES: ClassVar[float] = 10.0

    kd_per_direction: int | None = 4
    kd_directions: list | str = "all"
    kd_out: str | None = None
    kd_filters: list = field(default_factory=lambda: list(kd_filter.FILTERS))
    kd_length_ratio: list = field(default_factory=lambda: list(kd_filter.LENGTH_RATIO))
    kd_max_tokens_ratio: float = kd_filter.MAX_TOKENS_RATIO

    def kd_path(self) -> Path:
        """Where the KD pairs go: ``kd_out``, else ``<results>/artifacts/30_kd_data/<run_name>.jsonl.gz``."""
        from studylib.core.records import in_results, results_dir

        if self.kd_out:
            return in_results(self.kd_out, self.results_dir)
        return results_dir(self.results_dir) / "artifacts" / "30_kd_data" / f"{self.run_name}.jsonl.gz"

    def makes(self) -> list[str]:
        return [self.kd_out or f"results/artifacts/30_kd_data/{self.run_name}.jsonl.gz"]

    def __post_init__(self):
        super().__post_init__()
        _positive_int("kd_per_direction", self.kd_per_direction, allow_none=True)
        self.kd_directions = normalize_directions(self.kd_directions)
        _check(self.prompt_style != "alma-fewshot", "the teacher is prompted zero-shot: use 'alma' or 'tower'")
        try:
            kd_filter.check(self.kd_filters, self.kd_length_ratio, self.kd_max_tokens_ratio)
        except ValueError as err:
            raise ParamsError(str(err)) from None
