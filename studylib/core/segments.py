"""Segment lists as the metrics take them: non-empty lists of strings, parallel where several are given.

Shared by the string metrics (:mod:`studylib.core.metrics`), COMET (:mod:`studylib.core.comet`) and the paired
tests of the report, so that a wrong input is the same one clear ValueError wherever it enters.
"""

from __future__ import annotations

from collections.abc import Sequence


def check_texts(name: str, texts) -> list[str]:
    """A non-empty list/tuple of strings, else one clear ValueError."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise ValueError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} is empty: at least one segment is needed")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"{name}[{i}] is {type(t).__name__}, not a string")
    return list(texts)


def check_parallel(**named: Sequence[str]) -> list[list[str]]:
    """Check each argument with ``check_texts`` and that all have the same length."""
    checked = [check_texts(name, texts) for name, texts in named.items()]
    lengths = {name: len(texts) for name, texts in zip(named, checked)}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}={n}" for name, n in lengths.items())
        raise ValueError(f"segment counts differ ({detail}); they must be parallel")
    return checked
