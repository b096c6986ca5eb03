import json
import re
from pathlib import Path

import pandas as pd
import pytest

from studylib.report import comparisons, figures, paper, significance, summary, tables
from studylib.report.markdown import signed
from synthetic import core, everything

REPO = Path(__file__).resolve().parent.parent
REF = "01_teacher/teacher-lora"


def _chain(results, figures_dir, out, reference=REF):
    summary.write_summary(results, "full")
    significance.write(results, "full", reference, n_samples=100)
    comparisons.write(results, "full", n_samples=100)
    tables.write(results, "full", reference)
    figures.write(results, "full", reference, figures_dir)
    return paper.build(results, "full", figures=figures_dir, out=out, reference=reference)


def test_the_paper_is_built_from_generated_files_only(tmp_path):
    results = tmp_path / "results"
    everything(results)
    html_path = _chain(results, tmp_path / "figures", tmp_path / "paper")
    html = html_path.read_text()
    filled = (tmp_path / "paper" / "paper.md").read_text()
    assert "{{" not in filled and "}}" not in filled
    assert "Table 1." in html and "Figure 1." in html and "<table>" in html
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert (html_path.parent / src).is_file(), src  # figures are linked by a path that resolves
    main = (results / "tables" / "main.md").read_text()
    assert main.splitlines()[0] in filled  # the main table's header, verbatim
    assert "teacher-bits8" in filled and "closest to the reference" in filled
    assert "Every figure of the study is drawn." in filled
    assert "Every record was made by the current layout of the code." in filled and "§" not in filled
    assert "Efficiency at the 7B scale" in html and "The fastest format at batch size one is GPTQ W4" in filled
    assert "Compressing the model at this scale took: GPTQ 4-bit 400 s and Wanda 60.0 s" in filled
    # numbers in generated sentences are those of the significance table
    sig = significance.read_table(results / "significance-full.csv")
    row = sig[(sig["run"] == "base-3shot") & (sig["direction"] == "en-xx") & (sig["metric"] == "chrf++")].iloc[0]
    assert signed(-row["delta"]) in filled


def test_pending_figures_become_notes_and_an_embedded_paper_is_self_contained(tmp_path):
    results = tmp_path / "results"
    core(results)
    _chain(results, tmp_path / "figures", tmp_path / "paper")
    filled = (tmp_path / "paper" / "paper.md").read_text()
    assert "GPTQ bit width: not drawn yet" in filled and "Figures that wait for records" in filled
    assert "No compressed or distilled run has been recorded yet" in filled
    assert "The benchmark has not been measured yet" in filled and "Not measured yet" in filled  # no placeholder numbers
    assert "Efficiency at the 7B scale: not drawn yet" in filled
    assert filled.count("No sweep has been chosen on dev yet") == 1 and 'id="table-selection"' not in filled
    embedded = paper.build(results, "full", figures=tmp_path / "figures", out=tmp_path / "embedded", reference=REF,
                           embed=True)
    assert "data:image/png;base64," in embedded.read_text()


def test_unknown_placeholders_and_missing_inputs_fail_the_build(tmp_path):
    results = tmp_path / "results"
    core(results)
    _chain(results, tmp_path / "figures", tmp_path / "paper")
    for text, match in (("{{ value:no.such.value }}", "unknown value"), ("{{ table:nothing }}", "not found"),
                        ("{{ text:nothing }}", "unknown generated text"), ("{{ figure:nothing }}", "not in"),
                        ("{{ bogus:x }}", "unknown placeholder")):
        template = tmp_path / "t.md"
        template.write_text(f"# T\n\n{text}\n")
        with pytest.raises(paper.PaperError, match=match):
            paper.build(results, "full", figures=tmp_path / "figures", out=tmp_path / "x", reference=REF,
                        template=template)
    with pytest.raises(paper.PaperError, match="setup.json"):
        paper.build(tmp_path / "elsewhere", "full", figures=tmp_path / "figures", out=tmp_path / "x")


# a number standing on its own: not part of a name such as WMT22, ALMA-7B, Gemma-3-270M, 13a or W8A8
_NUMBER = re.compile(r"(?<![\w.\-/])[−-]?\d+(?:[.,]\d+)*%?(?![\w\-/])")
_YEAR = re.compile(r"^(19|20)\d\d$")


def test_the_paper_template_has_no_hand_typed_numbers():
    text = paper.TEMPLATE.read_text()
    prose = paper.PLACEHOLDER.sub(" ", text)
    prose = re.sub(r"```.*?```", " ", prose, flags=re.S)  # command blocks
    prose = re.sub(r"`[^`]*`", " ", prose)
    found = [n for n in _NUMBER.findall(prose) if not _YEAR.match(n)]
    assert not found, f"numbers typed into paper/paper.md (use a placeholder): {found}"
    for kind, arg, _ in paper.PLACEHOLDER.findall(text):
        assert kind in ("table", "figure", "value", "text"), kind
        if kind == "text":
            assert arg in paper.TEXTS


# --------------------------------------------------------------------- the committed full-profile results


def test_committed_generated_files_match_the_committed_records(tmp_path):
    """summary, significance and tables in results/ are what the committed records give (else: `make paper`)."""
    results = REPO / "results"
    recs = summary.load_records(results, "full")
    if not recs:
        pytest.skip("no committed full-profile records")
    hint = "out of date: run `python -m studylib.report` and commit results/, figures/ and paper/build/"
    fresh = summary.summary_table(recs)
    committed = pd.read_csv(results / "summary-full.csv")
    pd.testing.assert_frame_equal(committed, pd.read_csv(_csv(fresh, tmp_path)), check_dtype=False, obj=hint)
    sig = significance.read_table(results / "significance-full.csv")
    by_key = {significance.key(r): r for r in recs}
    ref = by_key.get(significance.DEFAULT_REFERENCE)
    assert ref is not None
    for rec in recs:
        if rec is ref or not rec.get("metrics"):
            continue
        rows = sig[(sig["notebook"] == rec["notebook"]) & (sig["run"] == rec["run"])]
        assert len(rows), f"{significance.key(rec)} has no significance rows: {hint}"
        mine = rows[rows["comparable"]]
        if not len(mine):  # scored on other segments than the reference (e.g. every segment against a sample)
            assert rows["reason"].str.contains("not comparable").all(), hint
            continue
        # the digests say the rows were computed from exactly these outputs
        for d in ("de-en", "en-zh"):
            if d in rec.get("outputs", {}) and d in ref.get("outputs", {}):
                row = mine[(mine["direction"] == d) & (mine["metric"] == "chrf++")].iloc[0]
                a, b = rec["outputs"][d], ref["outputs"][d]
                digest = significance._digest(significance._digest(a["src"], a["ref"], a["hyp"], b["hyp"],
                                                                   int(row["n_samples"]), int(row["seed"]),
                                                                   float(row["alpha"]), significance.TEST),
                                            "chrf++")
                assert row["digest"] == digest, hint
    out = tmp_path / "tables"
    tables.write(results, "full", out=out, params_dir=REPO / "params")
    for path in sorted(out.glob("*.md")) + sorted(out.glob("*.json")) + [out / "main.csv"]:
        committed_file = results / "tables" / path.name
        assert committed_file.is_file() and committed_file.read_text() == path.read_text(), f"{path.name}: {hint}"


def test_figures_and_paper_build_from_the_committed_results(tmp_path):
    results = REPO / "results"
    if not (results / "summary-full.csv").is_file():
        pytest.skip("no committed summary")
    tables.write(results, "full", out=tmp_path / "tables", params_dir=REPO / "params")
    drawn = figures.write(results, "full", out=tmp_path / "figures", tables=tmp_path / "tables")
    committed = json.loads((REPO / "figures" / "figures.json").read_text())
    assert [(f.name, f.status, f.caption) for f in drawn] == [
        (f["name"], f["status"], f["caption"]) for f in committed["figures"]], \
        "figures/ is out of date: run `python -m studylib.report`"
    for f in drawn:
        if f.status == "drawn":
            assert (REPO / "figures" / f"{f.name}.png").is_file() and (REPO / "figures" / f"{f.name}.pdf").is_file()
    html = paper.build(results, "full", tables=tmp_path / "tables", figures=tmp_path / "figures",
                       out=tmp_path / "paper").read_text()
    assert "Table 1." in html and "<img" in html and "{{" not in html


def _csv(frame, tmp_path):
    path = tmp_path / "summary.csv"
    frame.to_csv(path, index=False)
    return path


def test_speed_sentence_gives_each_compressed_run_its_ratio_to_the_reference(tmp_path):
    results = tmp_path / "results"
    everything(results)
    _chain(results, tmp_path / "figures", tmp_path / "paper")
    ctx = paper.load_context(results, "full", figures=tmp_path / "figures", out=tmp_path / "paper", reference=REF)
    main = summary.main_rows(ctx.summary)
    ref_ms = main[(main["notebook"] + "/" + main["run"]) == REF]["time_per_token_ms"].iloc[0]
    text = paper.TEXTS["speed"](ctx)
    first = main.groupby(["notebook", "run"])[["time_per_token_ms", "family"]].first()
    for (nb, run), (ms, family) in first.iterrows():
        if family in ("quantization", "pruning", "distillation") and pd.notna(ms):
            assert f"`{run}` {ms / ref_ms:.2f}×" in text
    assert f"{ref_ms:.1f} ms per token" in text


def test_committed_comparisons_cover_every_declared_pair():
    results = REPO / "results"
    table = comparisons.read_table(comparisons.table_path(results, "full"))
    if table is None:
        pytest.skip("no committed comparisons")
    hint = "results/comparisons-full.csv is out of date: run `python -m studylib.report`"
    keys = {significance.key(r) for r in summary.load_records(results, "full")}
    assert list(dict.fromkeys(table["claim"])) == [c for c, _, _ in comparisons.PAIRS], hint
    for claim, a, b in comparisons.PAIRS:
        status = set(table[table["claim"] == claim]["status"])
        assert (status == {"absent"}) == (a not in keys or b not in keys), f"{claim}: {hint}"


def test_runs_made_from_another_teacher_are_described_against_it(tmp_path):
    """A compressed run made from a second saved teacher is tested against that teacher (not the table's reference),
    and the text says so."""
    from studylib.core import records
    from synthetic import make

    results = tmp_path / "results"
    core(results)  # two teachers: the LoRA one is the reference, the full one a second saved teacher
    records.write_record(make("10_bnb_int8", "full-int8", family="quantization", noise=0.2,
                              params={"model_id": "results/artifacts/01_teacher/teacher-full/merged"}), results)
    _chain(results, tmp_path / "figures", tmp_path / "paper")
    filled = (tmp_path / "paper" / "paper.md").read_text()
    assert "against `01_teacher/teacher-full`" in filled and "closest to their references" in filled
    sig = significance.read_table(results / "significance-full.csv")
    assert set(sig[sig["run"] == "full-int8"]["reference"]) == {"01_teacher/teacher-full"}
