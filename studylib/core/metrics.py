"""Corpus metrics (BLEU, chrF, chrF++, optionally COMET) and paired bootstrap resampling.

Metric settings are fixed once here so every number in the study is comparable:

* BLEU: sacreBLEU defaults (exp smoothing, mixed case, 4-grams) with tokenizer ``zh``
  when the target language is Chinese and ``13a`` otherwise.
* chrF: character order 6, word order 0, beta 2.
* chrF++: character order 6, word order 2, beta 2.

COMET is a neural metric with its own module (:mod:`studylib.core.comet`); ``corpus_scores``
only delegates to it when it is given a local checkpoint and the source sentences.

Significance uses paired bootstrap resampling (Koehn, 2004), implemented here on
sacreBLEU's per-segment sufficient statistics so that each resample costs one sum, not
a re-tokenisation of the corpus.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from studylib.core.languages import LANG_NAMES
from studylib.core.segments import check_parallel

#: Metrics computed from sacreBLEU's sufficient statistics.
STRING_METRICS = ("bleu", "chrf", "chrf++")
#: Everything ``corpus_scores`` accepts.
ALLOWED_METRICS = STRING_METRICS + ("comet",)
DEFAULT_METRICS = STRING_METRICS

CHRF_CHAR_ORDER = 6
CHRF_WORD_ORDER = 0
CHRFPP_WORD_ORDER = 2

# Resamples drawn per chunk in the bootstrap; it bounds memory at chunk x n_segments ints.
_BOOTSTRAP_CHUNK = 100


# --------------------------------------------------------------------------- validation


def _check_lang(tgt_lang: str) -> str:
    if tgt_lang not in LANG_NAMES:
        raise ValueError(
            f"unknown target language {tgt_lang!r}: expected one of {', '.join(LANG_NAMES)}"
        )
    return tgt_lang


def _normalise_metric(name, allowed: Sequence[str] = ALLOWED_METRICS) -> str:
    key = name.lower() if isinstance(name, str) else name
    if key not in allowed:
        raise ValueError(f"unknown metric {name!r}: allowed are {', '.join(allowed)}")
    return key


# --------------------------------------------------------------------------- metric objects


def bleu_tokenizer(tgt_lang: str) -> str:
    """The sacreBLEU tokenizer used for BLEU into ``tgt_lang``: ``zh`` for Chinese, else ``13a``."""
    return "zh" if _check_lang(tgt_lang) == "zh" else "13a"


def make_metric(name: str, tgt_lang: str, sentence_level: bool = False):
    """A fresh sacreBLEU metric object with the study's settings.

    ``sentence_level=True`` only changes BLEU: it switches on effective n-gram order, as
    sacreBLEU recommends for single sentences (otherwise most short sentences score 0).
    """
    name = _normalise_metric(name, STRING_METRICS)
    if name == "bleu":
        return BLEU(
            tokenize=bleu_tokenizer(tgt_lang),
            trg_lang=tgt_lang,
            effective_order=sentence_level,
        )
    word_order = CHRFPP_WORD_ORDER if name == "chrf++" else CHRF_WORD_ORDER
    return CHRF(char_order=CHRF_CHAR_ORDER, word_order=word_order)


def _segment_stats(metric, hyps: list[str], refs: list[str]) -> np.ndarray:
    """Per-segment sufficient statistics, shape (n_segments, n_stats), exact integers.

    ``_extract_corpus_statistics`` is sacreBLEU's own hook for re-scoring (its bootstrap
    and randomisation tests use it); the statistics are integer counts for BLEU and chrF.
    """
    stats = metric._extract_corpus_statistics(hyps, [refs])
    return np.asarray(stats, dtype=np.int64)


def _score_from_summed_stats(metric, summed: np.ndarray) -> float:
    """Corpus score from statistics already summed over segments (one row)."""
    # Plain Python ints: identical arithmetic to sacreBLEU's own corpus_score.
    return float(metric._compute_score_from_stats([int(v) for v in summed]).score)


# --------------------------------------------------------------------------- corpus scores


def corpus_scores(
    hyps: Sequence[str],
    refs: Sequence[str],
    tgt_lang: str,
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    comet_checkpoint: str | None = None,
    sources: Sequence[str] | None = None,
) -> dict:
    """Corpus-level scores of one system against one reference per segment.

    Args:
        hyps: system outputs, one string per segment.
        refs: references, parallel to ``hyps``.
        tgt_lang: target language code (one of ``LANG_NAMES``); ``zh`` selects the
            ``zh`` BLEU tokenizer.
        metrics: any of ``bleu``, ``chrf``, ``chrf++``, ``comet`` (case-insensitive).
        comet_checkpoint: local COMET checkpoint; required iff ``comet`` is requested.
        sources: source sentences (never prompts), required iff ``comet`` is requested.

    Returns:
        ``{"bleu": 12.3, "chrf": 40.1, ..., "signatures": {"bleu": "nrefs:1|...", ...}}``.
        For COMET the "signature" is ``checkpoint:<path of the .ckpt used>``.
    """
    hyps, refs = check_parallel(hyps=hyps, refs=refs)
    _check_lang(tgt_lang)
    if isinstance(metrics, str):
        metrics = (metrics,)
    names = list(dict.fromkeys(_normalise_metric(m) for m in metrics))
    if not names:
        raise ValueError(f"no metric requested: allowed are {', '.join(ALLOWED_METRICS)}")

    out: dict = {}
    signatures: dict[str, str] = {}
    for name in names:
        if name == "comet":
            continue
        metric = make_metric(name, tgt_lang)
        out[name] = float(metric.corpus_score(hyps, [refs]).score)
        signatures[name] = metric.get_signature().format()

    if "comet" in names:
        if comet_checkpoint is None or sources is None:
            raise ValueError(
                "metric 'comet' needs comet_checkpoint= (a local COMET checkpoint) and "
                "sources= (the source sentences); or call studylib.core.comet.score_comet"
            )
        from studylib.core.comet import score_comet  # heavy import, only when asked

        result = score_comet(sources, hyps, refs, comet_checkpoint)
        out["comet"] = result["score"]
        signatures["comet"] = f"checkpoint:{result['checkpoint']}"

    out["signatures"] = signatures
    return out


def sentence_scores(
    hyps: Sequence[str], refs: Sequence[str], tgt_lang: str, metric: str = "chrf"
) -> list[float]:
    """Segment-level scores (sentence BLEU uses effective order; chrF/chrF++ as in corpus)."""
    hyps, refs = check_parallel(hyps=hyps, refs=refs)
    _check_lang(tgt_lang)
    m = make_metric(metric, tgt_lang, sentence_level=True)
    stats = _segment_stats(m, hyps, refs)
    return [_score_from_summed_stats(m, row) for row in stats]


# --------------------------------------------------------------------------- bootstrap


def _resample_sums(stats: list[np.ndarray], n_samples: int, seed: int):
    """Yield, chunk by chunk, the summed statistics of each system on the same resamples.

    Each resample draws ``n`` segment indices with replacement; the sum of the drawn
    segments' statistics equals ``counts @ stats`` where ``counts[j]`` is how often
    segment ``j`` was drawn. Every system is summed over the *same* draws (pairing).
    """
    rng = np.random.default_rng(seed)
    n = stats[0].shape[0]
    done = 0
    while done < n_samples:
        k = min(_BOOTSTRAP_CHUNK, n_samples - done)
        idx = rng.integers(0, n, size=(k, n))
        # Row r's draws are offset by r*n so one bincount counts every row at once.
        flat = (idx + np.arange(k)[:, None] * n).ravel()
        counts = np.bincount(flat, minlength=k * n).reshape(k, n).astype(np.int64)
        yield [counts @ s for s in stats]
        done += k


def _bootstrap_summary(
    score_a: float,
    score_b: float,
    deltas: np.ndarray,
    n_samples: int,
    seed: int,
    confidence: float,
) -> dict:
    delta = score_a - score_b
    if delta > 0:
        one_sided = float(np.mean(deltas <= 0))
    elif delta < 0:
        one_sided = float(np.mean(deltas >= 0))
    else:
        one_sided = 1.0
    se = float(np.std(deltas, ddof=1)) if len(deltas) > 1 else 0.0
    alpha = (1.0 - confidence) / 2.0
    ci_low, ci_high = np.quantile(deltas, [alpha, 1.0 - alpha])
    return {
        "score_a": score_a,
        "score_b": score_b,
        "delta": delta,
        "p_value": two_sided_p(delta, se),
        "p_one_sided": one_sided,
        "se": se,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "confidence": confidence,
        "n_samples": n_samples,
        "seed": seed,
    }


def two_sided_p(delta: float, se: float) -> float:
    """Two-sided p-value of ``delta`` against no difference, from the bootstrap standard error of the paired
    differences (normal approximation, Efron & Tibshirani 1993, ch. 16): ``P(|Z| >= |delta| / se)``. Continuous, so
    that a Holm correction over many tests is not limited by the number of resamples; 1 for no difference, 0 for a
    difference that no resample moves."""
    if delta == 0:
        return 1.0
    if not se > 0:
        return 0.0
    return float(math.erfc(abs(delta) / se / math.sqrt(2.0)))


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment (Holm, 1979) of a family of p-values, in their order: the k-th smallest times
    (m - k + 1), made monotone, capped at 1. A test is significant at ``alpha`` when its adjusted p is below it."""
    p = [float(v) for v in p_values]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _check_bootstrap_args(n_samples, seed, confidence) -> None:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a float in (0, 1), got {confidence!r}")


def _run_paired_bootstrap(
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    score_fn: Callable[[np.ndarray], float],
    n_samples: int,
    seed: int,
    confidence: float,
) -> dict:
    score_a = score_fn(stats_a.sum(axis=0))
    score_b = score_fn(stats_b.sum(axis=0))
    deltas = np.empty(n_samples, dtype=np.float64)
    pos = 0
    for sums_a, sums_b in _resample_sums([stats_a, stats_b], n_samples, seed):
        for row_a, row_b in zip(sums_a, sums_b):
            deltas[pos] = score_fn(row_a) - score_fn(row_b)
            pos += 1
    return _bootstrap_summary(score_a, score_b, deltas, n_samples, seed, confidence)


def paired_bootstrap(
    sys_a: Sequence[str],
    sys_b: Sequence[str],
    refs: Sequence[str],
    metric: str = "chrf",
    tgt_lang: str = "en",
    n_samples: int = 1000,
    seed: int = 12345,
    confidence: float = 0.95,
) -> dict:
    """Paired bootstrap resampling (Koehn, 2004) of system A against system B.

    Each of ``n_samples`` resamples draws the segment indices ``0..n-1`` with
    replacement (seeded, so the result is deterministic for a seed); both systems are
    scored with the corpus metric on the same drawn segments.

    Returns a dict with
        ``score_a``, ``score_b``: corpus scores on the full test set (equal to
            ``corpus_scores``), ``delta = score_a - score_b``;
        ``p_value``: two-sided, against no difference (:func:`two_sided_p`: the
            normal approximation from the resampled deltas' standard error ``se``);
            ``p_one_sided``: Koehn's share of resamples in which the observed winner
            does *not* win (``mean(delta_i <= 0)`` if ``delta > 0``, ``mean(delta_i >= 0)``
            if ``delta < 0``, 1.0 if ``delta == 0``), kept for reference;
        ``ci_low``, ``ci_high``: the percentile ``confidence`` interval of the
            resampled deltas;
        ``metric``, ``signature``, ``confidence``, ``n_samples``, ``seed``.
    """
    sys_a, sys_b, refs = check_parallel(sys_a=sys_a, sys_b=sys_b, refs=refs)
    _check_lang(tgt_lang)
    _check_bootstrap_args(n_samples, seed, confidence)
    m = make_metric(metric, tgt_lang)
    stats_a = _segment_stats(m, sys_a, refs)
    stats_b = _segment_stats(m, sys_b, refs)
    result = _run_paired_bootstrap(
        stats_a,
        stats_b,
        lambda summed: _score_from_summed_stats(m, summed),
        n_samples,
        seed,
        confidence,
    )
    result["metric"] = _normalise_metric(metric, STRING_METRICS)
    result["signature"] = m.get_signature().format()
    return result


def paired_bootstrap_mean(items: list[tuple[list[str], list[str], list[str], str]], metric: str = "chrf++",
                          n_samples: int = 1000, seed: int = 12345, confidence: float = 0.95) -> dict:
    """Paired bootstrap of the *mean over directions* of a corpus metric.

    ``items``: one ``(hyps_a, hyps_b, refs, tgt_lang)`` per direction. Each resample draws every direction's
    segments with replacement (its own draws, shared by both systems) and averages the per-direction corpus scores;
    p-value and interval are defined as in :func:`paired_bootstrap`.
    """
    if not items:
        raise ValueError("no directions to test")
    _check_bootstrap_args(n_samples, seed, confidence)
    scorers, stats = [], []
    for hyps_a, hyps_b, refs, tgt in items:
        hyps_a, hyps_b, refs = check_parallel(hyps_a=hyps_a, hyps_b=hyps_b, refs=refs)
        m = make_metric(metric, tgt)
        scorers.append(m)
        stats.append((_segment_stats(m, hyps_a, refs), _segment_stats(m, hyps_b, refs)))

    def mean_score(sums, which):
        return float(np.mean([_score_from_summed_stats(m, s[which]) for m, s in zip(scorers, sums)]))

    full = [(a.sum(axis=0), b.sum(axis=0)) for a, b in stats]
    score_a, score_b = mean_score(full, 0), mean_score(full, 1)
    deltas = np.empty(n_samples, dtype=np.float64)
    pos = 0
    # one generator per direction, each seeded apart; they yield chunks of the same size, so zip keeps them in step
    generators = [_resample_sums([a, b], n_samples, seed + i) for i, (a, b) in enumerate(stats)]
    for chunks in zip(*generators):
        for r in range(chunks[0][0].shape[0]):
            rows = [(c[0][r], c[1][r]) for c in chunks]
            deltas[pos] = mean_score(rows, 0) - mean_score(rows, 1)
            pos += 1
    out = _bootstrap_summary(score_a, score_b, deltas, n_samples, seed, confidence)
    out["metric"] = metric
    return out


def paired_bootstrap_segment_means(
    seg_a: Sequence[float],
    seg_b: Sequence[float],
    n_samples: int = 1000,
    seed: int = 12345,
    confidence: float = 0.95,
) -> dict:
    """Paired bootstrap for metrics whose corpus score is the mean of segment scores
    (COMET: pass ``score_comet(...)["segments"]`` of both systems).

    Same resampling and the same result keys and p-value definition as
    :func:`paired_bootstrap` (``metric`` is ``"segment-mean"``, no signature).
    """
    arrays = []
    for name, seg in (("seg_a", seg_a), ("seg_b", seg_b)):
        if isinstance(seg, (str, bytes)) or not isinstance(seg, Sequence) or len(seg) == 0:
            raise ValueError(f"{name} must be a non-empty list of numbers")
        arr = np.asarray(seg, dtype=np.float64)
        if arr.ndim != 1 or not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be a flat list of finite numbers")
        arrays.append(arr)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"segment counts differ (seg_a={arrays[0].size}, seg_b={arrays[1].size})"
        )
    _check_bootstrap_args(n_samples, seed, confidence)

    # Statistics are (score, 1) per segment so one resampled sum gives sum and count.
    def stats_of(arr):
        return np.stack([arr, np.ones_like(arr)], axis=1)

    result = _run_paired_bootstrap(
        stats_of(arrays[0]),
        stats_of(arrays[1]),
        lambda summed: float(summed[0] / summed[1]),
        n_samples,
        seed,
        confidence,
    )
    result["metric"] = "segment-mean"
    return result
