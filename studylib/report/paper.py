"""Build the paper: ``paper/paper.md`` with its placeholders filled from the generated files, rendered to HTML.

The template's prose holds no result numbers. Every number enters through a placeholder:

``{{ table:NAME | caption }}``  the Markdown table ``<tables>/NAME.md`` (:mod:`studylib.report.tables`), numbered, with
                                the caption; an empty one is left out (its text says why).
``{{ figure:NAME }}``           the figure ``<figures>/NAME.png`` with its caption from ``<figures>/figures.json``;
                                a figure not drawn yet becomes a note saying why.
``{{ value:PATH }}``            a value from ``<tables>/setup.json`` (dotted path; lists are joined), or one of
                                the values computed here (``n_samples``, ``alpha``, ``reference``, ...).
``{{ text:NAME }}``             a sentence generated from the generated tables (:data:`TEXTS`, each written by the
                                module of its part of the paper).

An unknown placeholder, a missing table or an unknown value fails the build. The HTML links the figures by
relative path (``paper/build/paper.html`` -> ``figures/``); ``embed`` inlines them instead.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from studylib.core import records
from studylib.report import (benchmark, claims, comparisons, cost, engines, figures, quality, seeds, selection, setup,
                             speed, students, targets)
from studylib.report.markdown import join, read_json, write_text
from studylib.report.significance import DEFAULT_REFERENCE, N_SAMPLES, alpha_of, parse_reference, read_table, table_path
from studylib.report.summary import load_summary, summary_path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "paper" / "paper.md"
STYLE = REPO / "paper" / "style.css"
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*:\s*([^}|]+?)\s*(?:\|\s*([^}]*?)\s*)?\}\}")
TEXTS = {
    "runs_overview": quality.text_runs_overview,
    "stale": setup.text_stale,
    "teacher_vs_base": quality.text_teacher_vs_base,
    "teachers": quality.text_teachers,
    "compressed": quality.text_compressed,
    "pareto": cost.text_pareto,
    "speed": cost.text_speed,
    "speed_formats": speed.text_speed_formats,
    "pending_figures": figures.text_pending_figures,
    "teachers_setup": setup.text_teachers_setup,
    "benchmark": benchmark.text_benchmark,
    "students": students.text_students,
    "engines": engines.text_engines,
    "targets": targets.text_targets,
    "comparisons": comparisons.text_comparisons,
    "seeds": seeds.text_seeds,
    "selection": selection.text_selection,
    "claims": claims.text_claims,
}


class PaperError(ValueError):
    """The paper cannot be built from the generated files (a missing table, an unknown placeholder)."""


@dataclass
class Context:
    """What the placeholders are filled from; the sentence writers of :data:`TEXTS` read it."""
    tables: Path
    figures: Path
    out: Path
    summary: object
    sig: object
    setup: dict
    manifest: dict
    reference: str
    embed: bool = False
    counters: dict = field(default_factory=lambda: {"table": 0, "figure": 0})


# ----------------------------------------------------------------------------------------------- values


def values(ctx: Context) -> dict:
    """setup.json plus values computed from the significance table and the reference."""
    sig = ctx.sig
    vals = dict(ctx.setup)
    n_samples = sig["n_samples"].dropna() if sig is not None and len(sig) else []
    vals["n_samples"] = int(n_samples.iloc[0]) if len(n_samples) else N_SAMPLES
    vals["alpha"] = alpha_of(sig)
    vals["reference"] = ctx.reference
    vals["reference_run"] = parse_reference(ctx.reference)[1]
    vals["n_directions"] = len(ctx.setup.get("directions") or [])
    vals["n_languages"] = len(ctx.setup.get("languages") or [])
    dates = sorted(set(ctx.setup.get("dates") or []))
    vals["date_range"] = (f"between {dates[0]} and {dates[-1]}" if len(dates) > 1 else f"on {dates[0]}" if dates
                          else "at dates not recorded")
    devices = ctx.setup.get("devices") or []
    vals["device"] = join(devices) if devices else "no device recorded"
    return vals


def lookup(vals: dict, path: str):
    node = vals
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise PaperError(f"unknown value {path!r}")
    return node


def render_value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return join([render_value(x) for x in v]) if v else "none"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {render_value(x)}" for k, x in v.items())
    return str(v)


# ----------------------------------------------------------------------------------------------- placeholders


def _figure(ctx: Context, name: str) -> dict | None:
    return next((f for f in ctx.manifest.get("figures") or [] if f.get("name") == name), None)


def _src(ctx: Context, path: Path) -> str:
    if ctx.embed:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    return Path(os.path.relpath(path, ctx.out)).as_posix()


def fill(kind: str, arg: str, caption: str | None, ctx: Context, vals: dict) -> str:
    if kind == "table":
        path = ctx.tables / f"{arg}.md"
        if not path.is_file():
            raise PaperError(f"table {arg!r} not found: {path} (run `python -m studylib.report`)")
        body = path.read_text(encoding="utf-8")
        if not body.strip():  # nothing to show yet (the text around it says so): no table, no number
            return ""
        ctx.counters["table"] += 1
        head = f"**Table {ctx.counters['table']}.** {caption}" if caption else f"**Table {ctx.counters['table']}.**"
        return f'\n<div class="table" id="table-{arg}">\n\n{head}\n\n{body}\n</div>\n'
    if kind == "figure":
        fig = _figure(ctx, arg)
        if fig is None:
            raise PaperError(f"figure {arg!r} is not in {ctx.figures / 'figures.json'} (run `python -m studylib.report`)")
        if fig.get("status") != "drawn":
            return f'\n<p class="pending"><em>{html.escape(fig["title"])}: not drawn yet — {html.escape(fig["reason"])}.</em></p>\n'
        png = ctx.figures / f"{arg}.png"
        if not png.is_file():
            raise PaperError(f"figure {arg!r} is listed as drawn but {png} is missing")
        ctx.counters["figure"] += 1
        pdf = Path(os.path.relpath(ctx.figures / f"{arg}.pdf", ctx.out)).as_posix()
        return (f'\n<figure id="figure-{arg}"><img src="{_src(ctx, png)}" alt="{html.escape(fig["title"])}">'
                f'<figcaption><strong>Figure {ctx.counters["figure"]}.</strong> {html.escape(fig["caption"])} '
                f'<a href="{pdf}">PDF</a></figcaption></figure>\n')
    if kind == "value":
        return render_value(lookup(vals, arg))
    if kind == "text":
        if arg not in TEXTS:
            raise PaperError(f"unknown generated text {arg!r}; known: {', '.join(TEXTS)}")
        return TEXTS[arg](ctx)
    raise PaperError(f"unknown placeholder kind {kind!r} in {{{{ {kind}:{arg} }}}}")


def expand(template: str, ctx: Context) -> str:
    vals = values(ctx)
    return PLACEHOLDER.sub(lambda m: fill(m.group(1), m.group(2), m.group(3), ctx, vals), template)


def to_html(markdown_text: str, title: str, css: str) -> str:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": True, "typographer": False}).enable("table")
    body = md.render(markdown_text)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{css}</style>\n</head>\n<body>\n<main>\n{body}</main>\n"
            "</body>\n</html>\n")


def load_context(results=None, profile: str | None = "full", tables=None, figures="figures", out="paper/build",
                 reference: str = DEFAULT_REFERENCE, embed: bool = False) -> Context:
    tables = Path(tables or records.results_dir(results) / "tables")
    figures = Path(figures)
    setup_facts = read_json(tables / "setup.json")
    if setup_facts is None:
        raise PaperError(f"{tables / 'setup.json'} not found (the tables step writes it)")
    manifest = read_json(figures / "figures.json")
    if manifest is None:
        raise PaperError(f"{figures / 'figures.json'} not found (the figures step writes it)")
    return Context(tables=tables, figures=figures, out=Path(out), summary=load_summary(summary_path(results, profile)),
                   sig=read_table(table_path(results, profile)), setup=setup_facts, manifest=manifest,
                   reference=reference, embed=embed)


def build(results=None, profile: str | None = "full", tables=None, figures="figures", out="paper/build",
          reference: str = DEFAULT_REFERENCE, template: str | Path = TEMPLATE, embed: bool = False) -> Path:
    """Fill the template and write ``<out>/paper.html`` (and the filled ``<out>/paper.md``)."""
    ctx = load_context(results, profile, tables, figures, out, reference, embed)
    text = expand(Path(template).read_text(encoding="utf-8"), ctx)
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "Paper")
    css = STYLE.read_text(encoding="utf-8") if STYLE.is_file() else ""
    write_text(text, ctx.out / "paper.md")
    return write_text(to_html(text, title, css), ctx.out / "paper.html")
