"""Test data never feeds calibration, selection or training: the guards every such step runs.

:func:`test_sentences` collects every ALMA test sentence of the given directions,
:func:`assert_no_test_overlap` raises :class:`DataLeakError` when a candidate set
(calibration, fine-tuning, layer selection) shares a sentence with them, and
:func:`drop_test_overlap` removes such pairs and says how many. Sentences are
compared after collapsing whitespace; the comparison is case-sensitive and exact.

Measured on the shipped data (all ten test sets pooled): 6 ALMA train pairs share a
short generic sentence with some test set ("So what?", "Amazing.", "Thank you.",
"That was it.", "Ну и что?"), and 885 of the 1,002 pairs of *each* of the cs, de, ru
and zh valid files have an English side that is a source sentence of the en->is test
set (WMT21 news shared its English source across language pairs). ALMA's dev data
must therefore not feed anything that is later evaluated on en->is unless those
pairs are dropped first.

:class:`DataLeakError` is deliberately an ``AssertionError`` and *not* a ``DataError``: a leak is a broken invariant
of the study, and code that handles "data not found" (``except ValueError``) must not swallow it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from studylib.core import data
from studylib.core.data import DataLeakError, Example, load_alma, normalize
from studylib.core.languages import DIRECTIONS

log = logging.getLogger(__name__)


def test_sentences(directions: Iterable[str] | None = None, root=None) -> frozenset[str]:
    """Every sentence (both sides, normalized) of the ALMA test sets of ``directions`` (default all ten)."""
    out: set[str] = set()
    for d in DIRECTIONS if directions is None else directions:
        for e in load_alma(d, "test", root):
            out.add(normalize(e.src))
            out.add(normalize(e.tgt))
    return frozenset(out)


test_sentences.__test__ = False  # not a pytest test, despite the name


def every_test_sentence(root=None) -> frozenset:
    """Every sentence (normalized) of every test set the study evaluates on: ALMA's (WMT22; WMT21 for is) in all ten
    directions, and WMT24 (en->xx, every row of ``wmt24/wmt24.jsonl`` where the data folder has it)."""
    pool = set(test_sentences(root=root))
    wmt24 = data.resolve_data_dir(root) / "wmt24" / "wmt24.jsonl"
    if wmt24.is_file():  # every row of the file (en->xx); a data folder without wmt24/ has none of its sentences
        for e in data.load_jsonl(wmt24):
            pool.add(normalize(e.src))
            pool.add(normalize(e.tgt))
    return frozenset(pool)


def _sentence_set(test: Iterable[Example | str]) -> set[str]:
    out = set()
    for t in test:
        if isinstance(t, str):
            out.add(normalize(t))
        else:
            out.add(normalize(t.src))
            out.add(normalize(t.tgt))
    return out


def find_test_overlap(examples: Iterable[Example], test: Iterable[Example | str]) -> list[Example]:
    """The examples whose source or target equals (whitespace-normalized) a test sentence."""
    pool = _sentence_set(test)
    return [e for e in examples if normalize(e.src) in pool or normalize(e.tgt) in pool]


def assert_no_test_overlap(examples: Iterable[Example], test: Iterable[Example | str], purpose: str) -> None:
    """Raise DataLeakError if any candidate sentence is a test sentence.

    ``test`` is a list of test examples or a set of sentences (e.g. :func:`test_sentences`).
    """
    hits = find_test_overlap(examples, test)
    if hits:
        shown = "; ".join(f"{e.direction}: {e.src[:60]!r}" for e in hits[:3])
        raise DataLeakError(
            f"{len(hits)} example(s) meant for {purpose} share a sentence with the test data "
            f"(e.g. {shown}); remove them with drop_test_overlap()"
        )


def drop_test_overlap(examples: Iterable[Example], test: Iterable[Example | str]) -> tuple[list[Example], int]:
    """``(kept, n_dropped)``: the examples without any test sentence, and how many were removed."""
    examples = list(examples)
    pool = _sentence_set(test)
    kept = [e for e in examples if normalize(e.src) not in pool and normalize(e.tgt) not in pool]
    dropped = len(examples) - len(kept)
    if dropped:
        log.info("dropped %d of %d examples that share a sentence with the test data", dropped, len(examples))
    return kept, dropped
