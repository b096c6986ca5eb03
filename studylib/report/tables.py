"""The study's tables, written into ``<results>/tables/`` from the summary, the significance table and the records.

``main.md`` / ``main.csv``
    every scored run: quality per direction group (significance marks), efficiency (:mod:`~studylib.report.quality`).
``directions-chrf++.md``, ``directions-bleu.md``
    the same per direction.
``significance.md``
    the differences to the reference per direction (:mod:`~studylib.report.significance`).
``students.md`` / ``students.json``
    the distillation study (:mod:`~studylib.report.students`).
``benchmark.md`` / ``benchmark.json``
    the 7B-architecture benchmark, one section per record (:mod:`~studylib.report.benchmark`).
``engines.md`` / ``engines.json``
    the evaluation engines side by side on one model (:mod:`~studylib.report.engines`).
``seeds.md`` / ``seeds.json``
    runs repeated with other seeds: chrF++ mean ± sd beside one seed's interval (:mod:`~studylib.report.seeds`).
``speed.md`` / ``speed.json``
    every 270M format timed in a job of its own beside its reference (:mod:`~studylib.report.speed`).
``selection.md`` / ``selection.json``
    the settings of sweeps trained with early stopping on dev, the values a run tried on dev (SmoothQuant's α, a
    teacher's decoding), and the one kept (:mod:`~studylib.report.selection`).
``comparisons.md`` / ``comparisons.json``
    pairs of methods tested against each other, from the comparisons CSV (:mod:`~studylib.report.comparisons`).
``targets.md`` / ``targets.json``
    the issues' targets next to what the records measured (:mod:`~studylib.report.targets`).
``claims.md`` / ``claims.json``
    the seed studies' claims, each with its evidence, test and verdict, decided from the significance and comparisons
    tables, the benchmark and the records (:mod:`~studylib.report.claims`).
``environment.md``, ``commands.md``, ``setup.json``
    where and with what each record was made, the command that remakes it, the facts of the setup section
    (:mod:`~studylib.report.setup`).

Every table names a stale record with the stale mark and says what it means. The JSON files are what the figures and
the paper's sentences read.
"""

from __future__ import annotations

from pathlib import Path

from studylib.core import records
from studylib.report import (benchmark, claims, comparisons, engines, quality, seeds, selection, setup, speed,
                             students, targets)
from studylib.report import significance as S
from studylib.report.markdown import write_json, write_text
from studylib.report.summary import load_records, load_summary, summary_path


def write(results: str | Path | None = None, profile: str | None = "full", reference: str = S.DEFAULT_REFERENCE,
          out: str | Path | None = None, params_dir: str | Path = setup.PARAMS_DIR) -> list[Path]:
    """Write every table of ``profile`` under ``results`` into ``out`` (default ``<results>/tables``)."""
    out = Path(out or records.results_dir(results) / "tables")
    summary = load_summary(summary_path(results, profile))
    sig = S.read_table(S.table_path(results, profile))
    recs = load_records(results, profile)
    stale = {(r["notebook"], r["run"]) for r in recs if records.is_stale(r)}
    frame, main_md = quality.main_table(summary, sig, reference)
    bench = benchmark.benchmark_data(recs)
    study = students.students_data(recs, reference)
    goals = targets.targets_data(recs)
    compared = engines.engines_data(recs)
    spread = seeds.seeds_data(recs, sig)
    chosen = selection.choices_data(recs) + selection.run_choices(recs) + selection.decoding_choices(recs)
    timed = speed.speed_data(recs)
    pairs = comparisons.read_table(comparisons.table_path(results, profile))
    verdicts = claims.claims_data(recs, sig, pairs, bench, reference)
    texts = {
        "main.md": main_md,
        "main.csv": frame.to_csv(index=False) if len(frame) else "",
        "significance.md": S.markdown(sig, alpha=S.alpha_of(sig), stale=stale),
        **{f"directions-{m}.md": quality.directions_table(summary, sig, m, reference) for m in ("chrf++", "bleu")},
        "environment.md": setup.environment_table(recs),
        "commands.md": setup.commands_table(recs, params_dir, profile or "full"),
        "benchmark.md": benchmark.benchmark_table(bench),
        "students.md": students.students_table(study),
        "targets.md": targets.targets_table(goals),
        "engines.md": engines.engines_table(compared),
        "seeds.md": seeds.seeds_table(spread),
        "selection.md": selection.selection_table(chosen),
        "speed.md": speed.speed_table(timed),
        "comparisons.md": comparisons.markdown(pairs),
        "claims.md": claims.claims_table(verdicts, S.alpha_of(sig)),
    }
    written = [write_text(text, out / name) for name, text in texts.items()]
    for name, data in (("benchmark.json", bench), ("students.json", study), ("targets.json", goals),
                       ("engines.json", compared), ("seeds.json", spread), ("selection.json", chosen),
                       ("speed.json", timed),
                       ("comparisons.json", comparisons.comparisons_data(pairs)), ("claims.json", verdicts),
                       ("setup.json", setup.setup_facts(recs, reference, profile))):
        written.append(write_json(data, out / name))
    return written
