"""The study's figures, drawn from the summary and significance tables (and the benchmark table) only, never from
model outputs, into ``<figures>/<name>.pdf`` and ``.png``.

``<figures>/figures.json`` lists every figure with its title, caption, status and, for a figure that cannot be drawn
yet, the reason (e.g. no GPTQ sweep recorded yet). A figure is never drawn from fewer points than it needs, and the
file of a skipped figure is removed. Which runs feed which figure:

``quality_by_direction``  every scored run: chrF++ per direction, coloured by the difference to the reference.
``pareto``                every scored run: quality against peak memory and time per token, the frontier marked.
``gptq_bits``, ``calibration``, ``prune_depth``, ``ood_size``
                          the sweeps (:mod:`~studylib.report.sweeps`).
``efficiency_7b``         the 7B-architecture benchmark, from ``<tables>/benchmark.json``, one block per record.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studylib.core import records
from studylib.report import benchmark, cost, quality, sweeps
from studylib.report import significance as S
from studylib.report.markdown import read_json, write_json
from studylib.report.plot import Skip, save, style
from studylib.report.summary import load_summary, runs_table, summary_path

log = logging.getLogger(__name__)

QUALITY = "chrf++"
FIGURES = (
    ("quality_by_direction", "Quality by direction", quality.quality_by_direction),
    ("pareto", "Quality against memory and time", cost.pareto),
    ("gptq_bits", "GPTQ bit width", sweeps.gptq_bits),
    ("calibration", "Calibration size", sweeps.calibration),
    ("prune_depth", "Layer pruning depth", sweeps.prune_depth),
    ("ood_size", "Out-of-domain data size", sweeps.ood_size),
    ("efficiency_7b", "Efficiency at the 7B scale", benchmark.efficiency_7b),
)
FROM_BENCHMARK = {"efficiency_7b"}  # drawn from the benchmark table (benchmark.json), not from the summary


@dataclass
class FigureResult:
    name: str
    title: str
    caption: str = ""
    status: str = "skipped"  # drawn | skipped
    reason: str = ""
    files: list = field(default_factory=list)
    data: dict = field(default_factory=dict)


def draw_all(summary, sig=None, out: str | Path = "figures", reference: str = S.DEFAULT_REFERENCE,
             metric: str = QUALITY, only=None, benchmark: dict | None = None) -> list[FigureResult]:
    """Draw every figure into ``out`` and write ``out/figures.json``; skipped figures say why. ``benchmark``: the
    benchmark table (``<tables>/benchmark.json``) for the 7B efficiency figure."""
    import matplotlib.pyplot as plt

    style()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = runs_table(summary) if summary is not None and len(summary) else None
    results = []
    for name, title, draw in FIGURES:
        if only and name not in only:
            continue
        result = FigureResult(name=name, title=title)
        try:
            if name in FROM_BENCHMARK:
                fig, caption, data = draw(benchmark)
            elif table is None or not len(table):
                raise Skip("no scored run in the summary yet")
            else:
                fig, caption, data = draw(table, sig, reference, metric)
            files = save(fig, out / name)
            plt.close(fig)
            result.status, result.caption, result.files, result.data = "drawn", caption, files, data
            log.info("figure %s: drawn", name)
        except Skip as why:
            result.reason = str(why)
            for ext in ("pdf", "png"):
                (out / f"{name}.{ext}").unlink(missing_ok=True)  # never leave a stale figure behind
            log.info("figure %s: skipped (%s)", name, why)
        results.append(result)
    write_json({"reference": "/".join(S.parse_reference(reference)), "metric": metric,
                "figures": [asdict(r) for r in results]}, out / "figures.json")
    return results


def write(results: str | Path | None = None, profile: str | None = "full", reference: str = S.DEFAULT_REFERENCE,
          out: str | Path = "figures", tables: str | Path | None = None) -> list[FigureResult]:
    """Every figure of ``profile`` under ``results``, from its summary, significance and benchmark tables."""
    tables = Path(tables or records.results_dir(results) / "tables")
    return draw_all(load_summary(summary_path(results, profile)), S.read_table(S.table_path(results, profile)), out,
                    reference, benchmark=read_json(tables / "benchmark.json"))


def text_pending_figures(ctx) -> str:
    figs = [f for f in (ctx.manifest.get("figures") or []) if f.get("status") != "drawn"]
    if not figs:
        return "Every figure of the study is drawn."
    return "Figures that wait for records: " + "; ".join(f"{f['title'].lower()} ({f['reason']})" for f in figs) + "."
