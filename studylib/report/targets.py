"""The study's targets next to what its records measured: ``<results>/tables/targets.json`` and ``targets.md``.

A target is a goal an issue set for a figure the study measures as a ratio within one run (a format's time over the
fp16 of the same process, a decode time over the floor measured in the same process, seconds of one evaluation).
Each is read from the first record, in the order declared in :data:`TARGETS`, that measured it: vLLM's figures first
where the study has them, the transformers path's after. A target no record measured stays in the file with
``measured`` and ``met`` null. They are reported, never asserted.

The quality targets (:data:`COMPUTED`) are computed from the records instead: the reference teacher's scores and
failure rates, retention (a method's chrF++ over the reference teacher's, per direction, mean over the directions,
on the same segments only), a student's storage share, the WMT22/WMT24 rank correlation and the fewest seeds of a
student. Where no record qualifies, ``measured`` is null and ``why`` says what is missing.

Each entry: ``{id, target, goal, measured, met, record, figure, stale, why}``: ``record`` is the record's path under
``results/runs``, ``figure`` which of its figures was read, ``stale`` whether the record predates the current layout.
"""

from __future__ import annotations

import operator
import statistics
from dataclasses import dataclass

from studylib.bench.schema import NOTEBOOK as BENCH
from studylib.core import records
from studylib.core.languages import DIRECTIONS
from studylib.report import seeds, students, teachers
from studylib.report import significance as S
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

    def _row(self, record: dict) -> dict | None:
        return next((r for r in (record.get("benchmark") or {}).get("variants", []) if r.get("variant") == self.row),
                    None)

    def described(self, record: dict) -> str:
        """The figure, with the kernel the benchmark row names where it names one (vLLM picks it per GPU)."""
        kernel = (self._row(record) or {}).get("kernel") if self.row is not None else None
        return f"{self.figure} ({kernel})" if kernel and "/" in str(kernel) else self.figure

    def read(self, record: dict):
        if self.row is not None:
            row = self._row(record)
            if row is None or row.get("status", "ok") != "ok":
                return None
            return _number(row.get(self.field))
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
     [_bench("vllm-gptq-w4", "decode_b1_ratio", "vLLM GPTQ (gptq_marlin) vs vLLM fp16"),
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


# ----------------------------------------------------------------------------------------------- computed targets

TEACHER = S.DEFAULT_REFERENCE
# the study's reference teacher (issue "Study v2"): full fine-tuning with its schedule chosen on dev, read from this
# sweep's kept setting (studylib.report.selection) once it has a record; until then the LoRA teacher above
FULL_TEACHER_SWEEP = ("01_teacher", "gemma3-270m-full-dev")


def _found(value, rec, figure) -> dict:
    return {"measured": value, "record": f"{S.key(rec)}.json", "figure": figure, "stale": records.is_stale(rec)}


def _missing(why: str) -> dict:
    return {"measured": None, "why": why}


def _teacher_model(rec: dict) -> bool:
    """Whether ``rec`` decoded the reference teacher's own model, as it is (its saved artifact, no recipe)."""
    params = rec.get("params") or {}
    return (str(params.get("model_id") or "").rstrip("/").endswith(f"artifacts/{TEACHER}")
            and not params.get("recipe"))


def _fixed_decoding(teacher: dict, recs) -> tuple[dict, str]:
    """``teacher``'s evaluation on every test segment with the decoding chosen on dev (a ``00_baseline`` run of its
    artifact that read a ``decoding_record``), else its own record; and how it was chosen."""
    for rec in teachers.evaluations(teacher, recs)[1:]:
        params = rec.get("params") or {}
        if params.get("decoding_record") and params.get("n_test") is None:
            return rec, f"decoded with the choice of {params['decoding_record'].removesuffix('.json')}"
    return teacher, "its own evaluation, before a decoding was chosen on dev"


def _kept_full_teacher(recs) -> tuple[dict | None, str]:
    """The full fine-tuned teacher kept on dev (:data:`FULL_TEACHER_SWEEP`), when it scored every test segment: its
    evaluation with the decoding chosen on dev where one was made (:func:`_fixed_decoding`)."""
    from studylib.report import selection

    rec = selection.chosen_record(recs, *FULL_TEACHER_SWEEP)
    if rec is None or (rec.get("params") or {}).get("n_test") is not None or not any(_scores(rec)):
        return None, ""
    settings = next(e for e in selection.choices_data(recs) if (e["notebook"], e["parent"]) == FULL_TEACHER_SWEEP)
    n = len(settings["settings"])
    rec, decoded = _fixed_decoding(rec, recs)
    return rec, f"the full fine-tuned teacher kept on dev, of {n} setting{'s' if n > 1 else ''} recorded; {decoded}"


def _teacher_full(by_key, recs) -> tuple[dict | None, str]:
    """The record that scored the reference teacher on every test segment: the full fine-tuned teacher kept on dev
    where its sweep has a full-size record; else the LoRA teacher's own record when that one is full size, else the
    first record that decoded its saved model unchanged on every segment (the engines study's vLLM run); (None, why)
    when there is none."""
    kept, how = _kept_full_teacher(recs)
    if kept is not None:
        return kept, how
    rec = by_key.get(TEACHER)
    if rec is None:
        return None, "no record of the reference teacher"
    if (rec.get("params") or {}).get("n_test") is None:
        return rec, "its own record"
    full = [r for r in recs if _teacher_model(r) and (r.get("params") or {}).get("n_test") is None
            and any(_scores(r))]
    if not full:
        n_test = (rec.get("params") or {}).get("n_test")
        return None, f"no full-size record: the reference teacher's scores {n_test} segments per direction"
    return full[0], f"its saved model decoded by {_engine(full[0])}"


def _first_pass(rec: dict) -> dict:
    """An engines record's first pass (the engine it compares the others to), or {} for any other record."""
    return ((rec.get("engines") or {}).get("passes") or [{}])[0]


def _scores(rec: dict) -> tuple[dict, dict]:
    """(metrics, averages) of a record: its own, or an engines record's first pass."""
    own = rec if rec.get("metrics") or rec.get("averages") else _first_pass(rec)
    return own.get("metrics") or {}, own.get("averages") or {}


def _engine(rec: dict) -> str:
    info = _first_pass(rec).get("info") or rec.get("engine") or {}
    name = info.get("engine") or (rec.get("params") or {}).get("engine") or "hf"
    return f"{name} {info['version']}" if info.get("version") else name


def _teacher_runaway(by_key, recs) -> dict:
    """The largest runaway rate of the reference teacher over its directions (studylib.core.failures): from its own
    record when that carries failure rates, else from the full-size record of its saved model."""
    def rates(rec):
        found = [(_scores(rec)[0].get(d) or {}).get("runaway_rate") for d in DIRECTIONS]
        return [r for r in found if isinstance(r, (int, float))]

    own, how = _kept_full_teacher(recs)
    if own is None:
        own, how = by_key.get(TEACHER), "its own record"
    if own is None:
        return _missing("no record of the reference teacher")
    rec, how = (own, how) if rates(own) else _teacher_full(by_key, recs)
    found = rates(rec) if rec is not None else []
    if not found:
        return _missing("no record of the reference teacher carries failure rates")
    size = "all segments" if (rec.get("params") or {}).get("n_test") is None \
        else f"{rec['params']['n_test']} segments each"
    return _found(max(found), rec, f"largest runaway rate over {len(found)} directions, {size} ({how})")


def _teacher_chrf(group: str):
    def read(by_key, recs) -> dict:
        """The reference teacher's chrF++ on ``group``, from a record that scored every segment (n_test null)."""
        rec, how = _teacher_full(by_key, recs)
        if rec is None:
            return _missing(how)
        value = (_scores(rec)[1].get(group) or {}).get("chrf++")
        if not isinstance(value, (int, float)):
            return _missing(f"{S.key(rec)} has no {group} chrF++")
        return _found(float(value), rec, f"chrF++, mean over {group}, all segments ({how})")
    return read


def retention(rec: dict, teacher: dict) -> tuple[float | None, str]:
    """chrF++ of ``rec`` / the teacher's per direction, mean over the directions both scored; (None, why) when the
    two decoded differently (a repetition penalty alone moves chrF++ by points), a direction's segments differ or none
    is scored."""
    mine, theirs = teachers.decoding_of(rec), teachers.decoding_of(teacher)
    if mine != theirs:
        return None, (f"decoded with {teachers.knobs(mine)}, the teacher's record {S.key(teacher)} with "
                      f"{teachers.knobs(theirs)}: no teacher record decoded like it")
    ratios, sizes = [], set()
    for d in DIRECTIONS:
        a = ((rec.get("metrics") or {}).get(d) or {}).get("chrf++")
        b = ((teacher.get("metrics") or {}).get(d) or {}).get("chrf++")
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
            continue
        why = S.check_aligned(rec, teacher, d)
        if why:
            return None, f"{d}: {why}"
        ratios.append(a / b)
        sizes.add(len(rec["outputs"][d]["src"]))
    if not ratios:
        return None, "no direction scored by both"
    n = ", ".join(map(str, sorted(sizes)))
    return statistics.fmean(ratios), f"chrF++ / the reference teacher's, mean over {len(ratios)} directions, {n} segments each"


def _scored(rec: dict) -> bool:
    return teachers.scored(rec)


def teacher_of(rec: dict, by_key: dict) -> dict | None:
    """The record of the teacher ``rec`` was made from, decoded as ``rec`` was where such an evaluation exists
    (:func:`studylib.report.teachers.teacher_of`), else the reference teacher (:data:`TEACHER`)."""
    return teachers.teacher_of(rec, by_key, TEACHER)


def _retention_of(label: str, keys=(), method: str | None = None):
    def read(by_key, recs) -> dict:
        """Retention of the first scored record of ``keys``, else of the first whose method names ``method``, against
        the teacher it was made from (:func:`teacher_of`); a record with no like-decoded teacher record is passed
        over, and the value says so."""
        found = [by_key[k] for k in keys if k in by_key and _scored(by_key[k])]
        found += [r for r in recs if method and method in str((r.get("what") or {}).get("method", "")) and _scored(r)]
        if not found:
            return _missing(f"no {label} record with translation scores")
        passed = []  # records set aside, and why: said beside the value read from a later one
        for rec in found:
            teacher = teacher_of(rec, by_key)
            if teacher is None:
                passed.append(f"{S.key(rec)}: no record of the reference teacher")
                continue
            value, note = retention(rec, teacher)
            if value is not None:
                return _found(value, rec, note + "".join(f"; not read: {why}" for why in passed))
            passed.append(f"{S.key(rec)}: {note}")
        return _missing("; ".join(passed))
    return read


def _rank_spearman(by_key, recs) -> dict:
    """Spearman's rank correlation of the runs' en→xx chrF++ on WMT22 and on WMT24: each run that decoded WMT24 beside
    its WMT22 test sets (``also_tests``, params ``also_test``), and each variant with a record on each test set."""
    def en_xx(averages):
        value = ((averages or {}).get("en-xx") or {}).get("chrf++")
        return value if isinstance(value, (int, float)) else None

    pairs = {}  # run or variant -> (WMT22 score, WMT24 score, a record that holds them)
    for r in recs:
        if (r.get("what") or {}).get("testset") == "wmt22":
            both = en_xx(r.get("averages")), en_xx((((r.get("also_tests") or {}).get("wmt24")) or {}).get("averages"))
            if None not in both:
                pairs[S.key(r)] = (*both, r)

    def scores(testset):
        out = {}
        for r in recs:
            what = r.get("what") or {}
            value = en_xx(r.get("averages"))
            if what.get("testset") == testset and value is not None:
                out.setdefault(what.get("variant") or S.key(r), (value, r))
        return out
    old, new = scores("wmt22"), scores("wmt24")
    for variant in sorted(set(old) & set(new)):
        if old[variant][1].get("also_tests") is None:  # its WMT22 record did not decode WMT24 itself
            pairs.setdefault(variant, (old[variant][0], new[variant][0], new[variant][1]))
    if not pairs:
        return _missing("no WMT24 record")
    if len(pairs) < 3:
        return _missing(f"{len(pairs)} methods scored on both WMT22 and WMT24 (3 needed)")
    import pandas as pd

    names = sorted(pairs)
    rho = pd.Series([pairs[n][0] for n in names]).corr(pd.Series([pairs[n][1] for n in names]), method="spearman")
    return _found(float(rho), pairs[names[0]][2], f"Spearman over {len(names)} methods, en→xx chrF++")


def _storage_share(run_key: str):
    def read(by_key, recs) -> dict:
        """A student's stored size (NF4 base + adapter) over the reference teacher's (:mod:`students`)."""
        study = students.students_data(recs, TEACHER)
        teacher = (study.get("teacher") or {}).get("storage_bytes")
        student = next((s for s in study.get("students") or [] if s["record"] == run_key), None)
        if student is None:
            return _missing(f"no record of {run_key}")
        if not teacher or not student.get("storage_bytes"):
            return _missing("no storage size in the records")
        return _found(student["storage_bytes"] / teacher, by_key[run_key], "stored bytes / the reference teacher's")
    return read


def _student_seeds(by_key, recs) -> dict:
    """The fewest seeds of any student run (records identical but for the seed, :mod:`seeds`)."""
    keys = {s["record"] for s in students.students_data(recs, TEACHER).get("students") or []}
    counts = [(seeds.n_seeds(g), g[0]) for g in seeds.seed_groups(recs) if any(S.key(r) in keys for r in g)]
    if not counts:
        return _missing("no student record")
    fewest, rec = min(counts, key=lambda c: c[0])
    return _found(float(fewest), rec, f"fewest seeds over {len(counts)} student runs")


def _kept_runs(recs, notebook: str, parent: str) -> tuple[list[dict], str]:
    """The records of the setting the sweep ``parent`` of ``notebook`` keeps on dev, one per seed
    (:func:`studylib.report.selection.choices_data`), and that setting's label; ([], "") before the sweep has one."""
    from studylib.report import selection

    for entry in selection.choices_data(recs):
        if (entry["notebook"], entry["parent"]) == (notebook, parent):
            runs = set(entry["chosen_runs"])
            return [r for r in recs if r["notebook"] == notebook and r["run"] in runs], entry["chosen"]
    return [], ""


def _student(label: str, sweep: tuple, older: str, measure: str):
    """A student target read from the setting its sweep keeps on dev (``sweep``: notebook and parent run), as the mean
    over that setting's seeds; before that sweep has records, from the ``older`` single run, saying so. ``measure``:
    ``retention`` (chrF++ against the teacher each record was made from, decoded alike: :func:`teacher_of`) or
    ``storage`` (stored bytes over the reference teacher's)."""
    single = _retention_of(label, [older]) if measure == "retention" else _storage_share(older)

    def one(rec, by_key, recs) -> tuple[float | None, str]:
        if measure == "storage":
            got = _storage_share(S.key(rec))(by_key, recs)
            return got["measured"], got.get("why") or ""
        teacher = teacher_of(rec, by_key)
        return retention(rec, teacher) if teacher else (None, "no record of the reference teacher")

    def read(by_key, recs) -> dict:
        kept, setting = _kept_runs(recs, *sweep)
        if not kept:
            out = single(by_key, recs)
            if out.get("measured") is not None:
                out["figure"] += f"; {sweep[0]}/{sweep[1]} has no record yet"
            return out
        values, passed = [], []
        for rec in kept:
            value, note = one(rec, by_key, recs)
            (values.append(value) if value is not None else passed.append(f"{S.key(rec)}: {note}"))
        if not values:
            return _missing("; ".join(passed))
        return _found(statistics.fmean(values), kept[0],
                      f"mean over {len(values)} seed{'s' if len(values) > 1 else ''} of {sweep[0]}/{sweep[1]} at the "
                      f"setting kept on dev ({setting})" + "".join(f"; not read: {why}" for why in passed))
    return read


MODEL_A, MODEL_B = "31_model_a/teacher-nf4-qlora", "32_model_b/middle8-nf4-qlora"
# the students' sweeps on the reference teacher (issue 17): their targets read the setting each keeps on dev
MODEL_A_SWEEP = ("31_model_a", "teacher-full-nf4-qlora")
MODEL_B_SWEEP = ("32_model_b", "teacher-full-iterative4-full-nf4-qlora")
# id, what, operator, goal, how to compute it from the records (issues 16 and 17)
COMPUTED = (
    ("teacher-runaway-max", "largest runaway rate of the reference teacher over the directions", "<=", 0.02,
     _teacher_runaway),
    ("teacher-xx-en-chrf++", "reference teacher chrF++ xx→en, every test segment", ">=", 43, _teacher_chrf("xx-en")),
    ("teacher-en-xx-chrf++", "reference teacher chrF++ en→xx, every test segment", ">=", 33, _teacher_chrf("en-xx")),
    ("nf4-retention", "NF4 chrF++ retention", ">=", 0.97,
     _retention_of("NF4", ["11_bnb_nf4/teacher-full-nf4", "11_bnb_nf4/teacher-lora-nf4"])),
    ("gptq-w4-retention", "GPTQ W4 chrF++ retention", ">=", 0.97,
     _retention_of("GPTQ W4", ["12_gptq/teacher-full-gptq-w4g128", "12_gptq/teacher-lora-gptq-w4g128"])),
    ("awq-w4-retention", "AWQ W4 chrF++ retention", ">=", 0.97, _retention_of("AWQ", method="awq")),
    ("fp8-retention", "FP8 chrF++ retention", ">=", 0.99, _retention_of("FP8", method="fp8")),
    ("wanda50-retention", "Wanda 50 % chrF++ retention", ">=", 0.85,
     _retention_of("Wanda 50 %", ["20_wanda/teacher-full-wanda50", "20_wanda/teacher-lora-wanda50"])),
    ("wmt24-rank-spearman", "rank correlation of the methods on WMT22 and WMT24 (en→xx)", ">=", 0.9, _rank_spearman),
    ("model-a-retention", "student A (teacher, NF4 + QLoRA) chrF++ retention", ">=", 0.97,
     _student("student A", MODEL_A_SWEEP, MODEL_A, "retention")),
    ("model-b-retention", "student B (pruned, NF4 + QLoRA) chrF++ retention", ">=", 0.95,
     _student("student B", MODEL_B_SWEEP, MODEL_B, "retention")),
    ("model-b-storage-share", "student B storage / the reference teacher's", "<=", 0.5,
     _student("student B", MODEL_B_SWEEP, MODEL_B, "storage")),
    ("student-seeds", "fewest seeds of any student run", ">=", 3, _student_seeds),
)


def _entry(tid, what, op, goal) -> dict:
    return {"id": tid, "target": what, "goal": f"{op} {goal:g}", "measured": None, "met": None, "record": None,
            "figure": None, "stale": None, "why": None}


def targets_data(recs: list[dict]) -> list[dict]:
    """Every target of :data:`TARGETS` with the value of the first record that measured it (None if none did), then
    every target of :data:`COMPUTED`."""
    by_key = {(r["notebook"], r["run"]): r for r in recs}
    out = []
    for tid, what, op, goal, sources in TARGETS:
        entry = _entry(tid, what, op, goal)
        for src in sources:
            rec = by_key.get((src.notebook, src.run))
            value = src.read(rec) if rec else None
            if value is not None:
                entry.update(measured=value, met=bool(OPS[op](value, goal)), record=f"{src.notebook}/{src.run}.json",
                             figure=src.described(rec), stale=records.is_stale(rec))
                break
        if entry["measured"] is None:
            entry["why"] = "no record measured it"
        out.append(entry)
    keyed = {S.key(r): r for r in recs}
    for tid, what, op, goal, compute in COMPUTED:
        entry = _entry(tid, what, op, goal)
        entry.update(compute(keyed, recs))
        if entry["measured"] is not None:
            entry["met"] = bool(OPS[op](entry["measured"], goal))
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
        where = (f"— ({r['why']})" if r.get("why") else "—") if r["record"] is None \
            else f"{r['record']}{stale_mark(r['stale'])} ({r['figure']})"
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
