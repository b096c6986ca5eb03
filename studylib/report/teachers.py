"""Which teacher a record was made from, and which of that teacher's evaluations decoded as the record did.

A method run loads a saved teacher (``results/artifacts/01_teacher/<run>[/merged]``); its scores mean something only
beside that teacher's scores on the same segments, decoded the same way. The teacher's own ``01_teacher`` record
decodes the test sets before a decoding is chosen on dev (notebook ``02_decoding``); the methods made from it decode
with that choice. So a teacher can have several evaluations: its own record, and ``00_baseline`` runs of its saved
model with the decoding chosen on dev. Retention (``targets``) and the paired tests (``significance``) read the one
decoded like the run they judge.
"""

from __future__ import annotations

from pathlib import Path

from studylib.core.generation import DECODING_KNOBS, NO_PENALTY


def scored(rec: dict) -> bool:
    return bool(rec.get("metrics")) and bool(rec.get("averages"))


def decoding_of(rec: dict) -> dict:
    """The decoding knobs a record decoded its test sets with (:data:`studylib.core.generation.DECODING_KNOBS`; no
    repetition penalty where a record predates that knob)."""
    params = rec.get("params") or {}
    return {k: params.get(k, NO_PENALTY if k == "repetition_penalty" else None) for k in DECODING_KNOBS}


def knobs(decoding: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in decoding.items())


def artifact_run(rec: dict) -> str | None:
    """The ``01_teacher`` run whose saved model ``rec`` loaded (``results/artifacts/01_teacher/<run>[/merged]``)."""
    parts = Path(str((rec.get("params") or {}).get("model_id") or "")).parts
    for i in range(len(parts) - 2):
        if parts[i:i + 2] == ("artifacts", "01_teacher"):
            return parts[i + 2]
    return None


def is_evaluation(rec: dict) -> bool:
    """Whether ``rec`` decoded a model as it is: a ``01_teacher`` record, or a ``00_baseline`` run (no recipe)."""
    return rec.get("notebook") == "01_teacher" or (rec.get("notebook") == "00_baseline"
                                                    and not (rec.get("params") or {}).get("recipe"))


def evaluations(teacher: dict, recs) -> list[dict]:
    """The records that decoded ``teacher``'s model as it is: its own ``01_teacher`` record first, then each scored
    ``00_baseline`` run of its saved artifact."""
    run = teacher.get("run") if teacher.get("notebook") == "01_teacher" else None
    again = [r for r in recs if run and r.get("notebook") == "00_baseline" and artifact_run(r) == run
             and is_evaluation(r) and scored(r)]
    return [teacher] + again


def teacher_of(rec: dict, by_key: dict, default: str | None = None) -> dict | None:
    """The record of the teacher ``rec`` was made from, decoded as ``rec`` was where such an evaluation exists
    (:func:`evaluations`), else that teacher's own record: the ``01_teacher`` run whose saved artifact its
    ``model_id`` names; for a record made from no saved teacher, the record ``default`` names."""
    run = artifact_run(rec)
    teacher = by_key.get(f"01_teacher/{run}") if run else None
    if teacher is None:
        return by_key.get(default) if default else None
    same = [t for t in evaluations(teacher, by_key.values()) if decoding_of(t) == decoding_of(rec)]
    return same[0] if same else teacher
