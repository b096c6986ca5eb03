"""From the records to the paper, in order: summary -> significance -> comparisons -> tables -> figures -> paper.

    python -m studylib.report [--results results] [--profile full|smoke] [--reference 01_teacher/gemma3-270m-lora]
                              [--figures figures] [--out paper/build]

writes ``<results>/summary-<profile>.csv``, ``<results>/significance-<profile>.csv`` (paired bootstrap of every run
against the reference, cached by a digest of the outputs), ``<results>/comparisons-<profile>.csv`` (the pairs of
methods the paper orders), ``<results>/tables/``, ``<figures>/`` and ``<out>/paper.html``.
A results directory without records of the profile, or a reference without a record, stops it with one line naming
what is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from studylib.core import records
from studylib.report import comparisons, figures, paper, significance, summary, tables


class InputError(ValueError):
    """The results to report on are not there (no records, no reference record)."""


def _profile(path: Path) -> str | None:
    return json.loads(path.read_text(encoding="utf-8")).get("profile") if path.is_file() else None


def check(results: Path, profile: str, reference: str) -> None:
    """Refuse a results directory without records of ``profile`` and a reference without a record."""
    runs = records.results_dir(results) / "runs"
    if not any(_profile(p) == profile for p in runs.glob("*/*.json")):
        raise InputError(f"no {profile}-profile record under {runs}")
    try:
        path = records.record_path(*significance.parse_reference(reference), results)
    except ValueError as err:
        raise InputError(str(err)) from None
    if _profile(path) != profile:
        raise InputError(f"reference {reference} has no {profile}-profile record ({path})")


def report(results: Path, profile: str, reference: str, figures_dir: Path, out: Path) -> Path:
    """Every step in order; returns the paper's HTML file."""
    check(results, profile, reference)
    print(summary.write_summary(results, profile), flush=True)
    for path in significance.write(results, profile, reference):
        print(path, flush=True)
    for path in comparisons.write(results, profile):
        print(path, flush=True)
    for path in tables.write(results, profile, reference):
        print(path, flush=True)
    for fig in figures.write(results, profile, reference, figures_dir):
        print(f"{fig.status:8s} {fig.name}" + (f"  ({fig.reason})" if fig.reason else ""), flush=True)
    return paper.build(results, profile, figures=figures_dir, out=out, reference=reference)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m studylib.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")
    ap.add_argument("--profile", choices=records.PROFILES, default="full")
    ap.add_argument("--reference", default=significance.DEFAULT_REFERENCE,
                    help=f"<notebook>/<run> every run is tested against (default: {significance.DEFAULT_REFERENCE})")
    ap.add_argument("--figures", type=Path, default=Path("figures"), help="where the figures go (default: figures)")
    ap.add_argument("--out", type=Path, default=Path("paper/build"), help="where the paper goes (default: paper/build)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(report(args.results, args.profile, args.reference, args.figures, args.out))
    except (InputError, paper.PaperError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
