"""The study's targets next to what its records measured: ``<results>/tables/targets.json`` and ``targets.md``.

A target is a goal an issue set for a figure the study measures as a ratio within one run (a format's time over the
fp16 of the same process, a decode time over the floor measured in the same process, seconds of one evaluation).
Each is read from the first record, in the order declared in :data:`TARGETS`, that measured it: vLLM's figures first
where the study has them, the transformers path's after. A target no record measured stays in the file with
``measured`` and ``met`` null. They are reported, never asserted.

Each entry: ``{id, target, goal, measured, met, record, figure, stale}``: ``record`` is the record's path under
``results/runs``, ``figure`` which of its figures was read, ``stale`` whether the record predates the current layout.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from studylib.bench.schema import NOTEBOOK as BENCH
from studylib.core import records
from studylib.report.markdown import code, join, md_table, read_json, stale_mark, stale_note

OPS = {"<=": operator.le, ">=": operator.ge, "==": lambda a, b: abs(a - b) < 1e-12}


@dataclass(frozen=True)
class Source:
    """Where a target's value is read: a record (notebook/run), and in it a benchmark row's field, or a path."""

    notebook: str
    run: str
    row: str | None = None  # a benchmark row's variant
    field: str = ""  # the row's field, or a dotted path into the record
    figure: str = ""  # what the value is, for the table

    def read(self, record: dict):
        if self.row is not None:
            rows = [r for r in (record.get("benchmark") or {}).get("variants", []) if r.get("variant") == self.row]
            if not rows or rows[0].get("status", "ok") != "ok":
                return None
            return _number(rows[0].get(self.field))
        value = record
        for key in self.field.split("."):
            if isinstance(value, list):
                value = next((v for v in value if _matches(v, key)), None)
            elif isinstance(value, dict):
                value = value.get(key)
            else:
                return None
        return _number(value)


def _matches(item, key: str) -> bool:
    """A list element picked by ``engine=value,pooled=true`` (the engines record's passes)."""
    if not isinstance(item, dict):
        return False
    for part in key.split(","):
        name, _, want = part.partition("=")
        have = item.get(name)
        if str(have).lower() != want.lower():
            return False
    return True


def _number(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _bench(variant: str, field: str, figure: str, reference: str | None = None, run: str | None = None) -> Source:
    return Source(BENCH, run or f"llama2-7b-{variant}", row=variant if reference is None else reference, field=field,
                  figure=figure)


def _all_formats(variant: str, field: str, figure: str) -> Source:
    """The record that measured every transformers format in one process (the layout before one format a run)."""
    return _bench(variant, field, figure, run="llama2-7b")


VLLM_FORMATS = ("vllm-fp8", "vllm-gptq-w4", "vllm-int8-w8a8", "vllm-awq-w4", "vllm-gptq-w8", "vllm-layers-75",
                "vllm-nf4")
HF_FORMATS = ("bf16", "layers-75", "layers-50", "sparse-2of4", "bnb-nf4", "gptq-w4", "gptq-w8", "bnb-int8",
              "wanda-50")
ENGINES_RUN = ("41_engines", "teacher-lora")  # hf generate and vLLM on the same set in one process
DETERMINISM_RUN = ("41_engines", "teacher-lora-vllm")  # vLLM alone: the same pool twice, then each direction alone

# id, what, operator, goal, where to read it (first measured wins)
TARGETS = (
    ("fp16-floor", "fp16 batch-1 time per token / its floor (7B)", "<=", 1.2,
     [_bench(v, "floor_ratio", "vLLM fp16 (the reference of this record), batch 1", "vllm-fp16")
      for v in VLLM_FORMATS]
     + [_bench(v, "graph_floor_ratio", "transformers fp16, static-cache CUDA graph", "fp16") for v in HF_FORMATS]
     + [_all_formats("fp16", "graph_floor_ratio", "transformers fp16, static-cache CUDA graph")]),
    ("w4-decode", "GPTQ W4 batch-1 time / fp16 (7B)", "<=", 0.35,
     [_bench("vllm-gptq-w4", "decode_b1_ratio", "vLLM gptq_marlin vs vLLM fp16"),
      _bench("gptq-w4", "graph_b1_ratio", "transformers Marlin, CUDA graph, vs fp16"),
      _all_formats("gptq-w4", "graph_b1_ratio", "transformers Marlin, CUDA graph, vs fp16")]),
    ("fp8-decode", "FP8 W8A8 batch-1 time / fp16 (7B)", "<=", 0.55,
     [_bench("vllm-fp8", "decode_b1_ratio", "vLLM fp8 vs vLLM fp16")]),
    ("int8-decode", "INT8 batch-1 time / fp16 (7B)", "<=", 0.6,
     [_bench("vllm-int8-w8a8", "decode_b1_ratio", "vLLM INT8 W8A8 vs vLLM fp16"),
      _bench("bnb-int8", "decode_b1_ratio", "transformers LLM.int8(), eager, vs fp16"),
      _all_formats("bnb-int8", "decode_b1_ratio", "transformers LLM.int8(), eager, vs fp16")]),
    ("nf4-decode", "NF4 batch-1 time / fp16 (7B)", "<=", 0.6,
     [_bench("vllm-nf4", "decode_b1_ratio", "vLLM bitsandbytes NF4 vs vLLM fp16"),
      _bench("bnb-nf4", "graph_b1_ratio", "transformers bitsandbytes NF4, CUDA graph, vs fp16"),
      _all_formats("bnb-nf4", "graph_b1_ratio", "transformers bitsandbytes NF4, CUDA graph, vs fp16")]),
    ("sparse24-prefill", "2:4 sparse prefill speed / fp16 (7B, 512 tokens)", ">=", 1.3,
     [_bench("vllm-2of4", "prefill_speedup", "vLLM 2:4"),
      _bench("sparse-2of4", "prefill_speedup", "transformers 2:4 semi-structured kernels vs fp16"),
      _all_formats("sparse-2of4", "prefill_speedup", "transformers 2:4 semi-structured kernels vs fp16")]),
    ("eval-throughput", "seconds to translate the 17,471 WMT22/WMT21 segments with the 270M teacher", "<=", 180,
     [Source(*ENGINES_RUN, field="engines.passes.engine=vllm,pooled=true.seconds",
             figure="vLLM, all ten directions in one pool, engine start apart"),
      Source(*DETERMINISM_RUN, field="engines.passes.engine=vllm,pooled=true.seconds",
             figure="vLLM, all ten directions in one pool, engine start apart (no hf pass beside it)")]),
    ("identical-rerun", "share of hypotheses the same params reproduce with other batches", "==", 1.0,
     [Source(*DETERMINISM_RUN, field="engines.rerun.share",
             figure="vLLM, batch-invariant, prompts prefilled whole: pooled vs each direction alone"),
      Source(*ENGINES_RUN, field="engines.rerun.share",
             figure="the last engine of 41_engines, pooled vs each direction alone")]),
)


def targets_data(recs: list[dict]) -> list[dict]:
    """Every target of :data:`TARGETS` with the value of the first record that measured it (None if none did)."""
    by_key = {(r["notebook"], r["run"]): r for r in recs}
    out = []
    for tid, what, op, goal, sources in TARGETS:
        entry = {"id": tid, "target": what, "goal": f"{op} {goal:g}", "measured": None, "met": None, "record": None,
                 "figure": None, "stale": None}
        for src in sources:
            rec = by_key.get((src.notebook, src.run))
            value = src.read(rec) if rec else None
            if value is not None:
                entry.update(measured=value, met=bool(OPS[op](value, goal)), record=f"{src.notebook}/{src.run}.json",
                             figure=src.figure, stale=records.is_stale(rec))
                break
        out.append(entry)
    return out


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def targets_table(rows: list[dict]) -> str:
    """The targets as a Markdown table: met / not met / not measured, with the record and figure read."""
    header = ["id", "target", "goal", "measured", "", "record (figure)"]
    body = []
    for r in rows:
        verdict = "not measured" if r["met"] is None else "met" if r["met"] else "not met"
        where = "—" if r["record"] is None else f"{r['record']}{stale_mark(r['stale'])} ({r['figure']})"
        body.append([f"`{r['id']}`", r["target"], r["goal"], _fmt(r["measured"]), verdict, where])
    note = stale_note(any(r["stale"] for r in rows))
    return md_table(header, body, "lllrll") + (f"\n{note}\n" if note else "")


def text_targets(ctx) -> str:
    """Which targets the records meet, from ``<tables>/targets.json``."""
    rows = read_json(ctx.tables / "targets.json") or []
    if not rows:
        return "No target is measured yet."
    said = lambda r: f"{code(r['id'])} ({_fmt(r['measured'])}, goal {r['goal']})"  # noqa: E731
    met = [said(r) for r in rows if r["met"] is True]
    not_met = [said(r) for r in rows if r["met"] is False]
    absent = [code(r["id"]) for r in rows if r["met"] is None]
    parts = [f"met: {join(met)}" if met else "none is met",
             *([f"not met: {join(not_met)}"] if not_met else []),
             *([f"not measured yet: {join(absent)}"] if absent else [])]
    return f"Of the {len(rows)} targets, " + "; ".join(parts) + "."
