"""Compressed students recovered with QLoRA on human + knowledge-distillation (+ out-of-domain) data.

Reproduces the setup of Moslem (IWSLT 2025): "Model A" is the teacher itself in 4-bit NF4 fine-tuned
with QLoRA; "Model B" is a layer-pruned student (``prune_recipe``) fine-tuned the same way; the
out-of-domain data-size study adds Tatoeba pairs to Model B's training data. Each student is scored on
WMT22 (in-domain) and on a held-out Tatoeba slice (out-of-domain), and its chrF++ retention against the
teacher's record is stored per direction.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from studylib.core import data, efficiency, evaluation, leakage, models, prompts, records, training
from studylib.runs import distillation
from studylib.runs.params import (EvalParams, ParamsError, _check, _positive_int, check_dev_selection, check_training,
                                  normalize_directions)
from studylib.methods import MethodError, apply_recipe, build_recipe, devset



@dataclass
class StudentParams(EvalParams):
    """31_model_a: a (pruned) student recovered with QLoRA on human + KD (+ out-of-domain) data."""

    NOTEBOOK: ClassVar[str] = "31_model_a"
    FAMILY: ClassVar[str] = "distillation"
    GPU: ClassVar[str] = "exclusive"  # times decoding
    H200_MINUTES: ClassVar[float] = 25.0
    SMOKE_SWEEP: ClassVar[dict] = {"learning_rate": [2e-4], "seed": [0]}  # a rate and seed axis: one setting on the CPU

    prune_recipe: list = field(default_factory=list)
    train_directions: list | str = "all"
    human_per_direction: int | None = 4
    kd_data: str | None = None
    ood_total: int = 0
    ood_test_per_direction: int = 2
    qlora_r: int = 64
    qlora_alpha: int = 128
    qlora_dropout: float = 0.0
    rslora: bool = True
    double_quant: bool = True
    compute_dtype: str = "bfloat16"
    epochs: float = 1.0
    max_steps: int | None = None  # when set: exactly this many optimizer steps, whatever the data's size (not epochs)
    learning_rate: float = 2e-4
    train_batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 128
    warmup_ratio: float = 0.03
    dev_per_direction: int | None = None  # early stopping on dev chrF++ (null: train to the end of the plan)
    dev_every: int | None = None
    dev_patience: int | None = None
    teacher_record: str | None = None
    save_dir: str | None = None
    # "25_layer_pruning/<run>.json": remove the layers that run's iterative selection chose (instead of a prune_recipe;
    # the same teacher), so that every setting of a sweep starts from one selection
    prune_layers_from: str | None = None
    # Moslem's Model B: the pruned student fully fine-tuned on the human pairs before NF4 + QLoRA (0: no such stage)
    full_ft_epochs: float = 0.0
    full_ft_learning_rate: float = 5e-5
    full_ft_batch_size: int = 4

    def __post_init__(self):
        super().__post_init__()
        _check(self.prompt_style != "alma-fewshot", "students are prompted zero-shot: use 'alma' or 'tower'")
        check_dev_selection(self)
        self.train_directions = normalize_directions(self.train_directions)
        _positive_int("human_per_direction", self.human_per_direction, allow_none=True)
        _check(isinstance(self.ood_total, int) and self.ood_total >= 0, f"ood_total must be >= 0, got {self.ood_total!r}")
        _positive_int("ood_test_per_direction", self.ood_test_per_direction)
        _positive_int("max_steps", self.max_steps, allow_none=True)
        _check(self.compute_dtype in ("bfloat16", "float16", "float32"), f"compute_dtype {self.compute_dtype!r}?")
        check_training(self, lora="qlora_")
        _check(self.teacher_record is None or str(self.teacher_record).endswith(".json"),
               f"teacher_record must look like '01_teacher/<run>.json' (or a 00_baseline run of the teacher decoded as "
               f"this run decodes), got {self.teacher_record!r}")
        _check(self.kd_data is None or str(self.kd_data).endswith((".jsonl", ".jsonl.gz")),
               f"kd_data must be a .jsonl(.gz) file from 30_kd_data, got {self.kd_data!r}")
        if self.prune_recipe:
            try:
                build_recipe(self.prune_recipe)
            except MethodError as err:
                raise ParamsError(str(err)) from err
        _check(self.prune_layers_from is None or (str(self.prune_layers_from).startswith("25_layer_pruning/")
                                                  and str(self.prune_layers_from).endswith(".json")),
               f"prune_layers_from must look like '25_layer_pruning/<run>.json', got {self.prune_layers_from!r}")
        _check(not (self.prune_layers_from and self.prune_recipe),
               "set prune_recipe or prune_layers_from, not both: the layers removed come from one of them")
        self._prune_layers = None  # the order read from prune_layers_from's record (resolve)
        _check(isinstance(self.full_ft_epochs, (int, float)) and 0 <= self.full_ft_epochs <= 20,
               f"full_ft_epochs must be in [0, 20], got {self.full_ft_epochs!r}")
        if self.full_ft_epochs:
            _check(bool(self.prune_recipe or self.prune_layers_from),
                   "full_ft_epochs fine-tunes a pruned student: it needs a prune_recipe or prune_layers_from "
                   "(Model A starts from the fine-tuned teacher itself)")
            _check(isinstance(self.full_ft_learning_rate, float) and 0 < self.full_ft_learning_rate < 1,
                   f"full_ft_learning_rate must be a float in (0, 1), got {self.full_ft_learning_rate!r}")
            _positive_int("full_ft_batch_size", self.full_ft_batch_size)
            _check(self.human_per_direction != 0, "full_ft_epochs trains on the human pairs: human_per_direction is 0")

    def uses(self) -> list[str]:
        return (super().uses() + ([self.kd_data] if self.kd_data else [])
                + ([f"results/runs/{self.teacher_record}"] if self.teacher_record else [])
                + ([f"results/runs/{self.prune_layers_from}"] if self.prune_layers_from else []))

    def resolve(self) -> None:
        """With ``prune_layers_from``: the removal order that 25_layer_pruning run recorded, checked to have been
        chosen on this run's model."""
        super().resolve()
        if not self.prune_layers_from:
            return
        rec = self.run_record("prune_layers_from")
        if (rec.get("params") or {}).get("model_id") != self.model_id:
            raise ParamsError(f"prune_layers_from {self.prune_layers_from}: its layers were chosen on "
                              f"{(rec.get('params') or {}).get('model_id')!r}, not on this run's model {self.model_id!r}")
        orders = [step["removal_order"] for step in (rec.get("compression") or {}).get("recipe") or []
                  if isinstance(step, dict) and step.get("method") == "layer-prune-greedy" and step.get("removal_order")]
        if len(orders) != 1:
            raise ParamsError(f"prune_layers_from {self.prune_layers_from}: no iterative removal order in it")
        self._prune_layers = list(orders[0])


@dataclass
class ModelBParams(StudentParams):
    """32_model_b: the student is the teacher with decoder layers removed before QLoRA."""

    NOTEBOOK: ClassVar[str] = "32_model_b"

    prune_recipe: list = field(default_factory=lambda: [{"method": "layer-prune-middle", "depth": 1}])

    def __post_init__(self):
        super().__post_init__()
        _check(bool(self.prune_recipe or self.prune_layers_from),
               "Model B is a pruned student: set a prune_recipe or prune_layers_from")


@dataclass
class OODSizeParams(ModelBParams):
    """33_ood_size: Model B recovered with ``ood_total`` out-of-domain pairs added (the params file sweeps it)."""

    NOTEBOOK: ClassVar[str] = "33_ood_size"
    SMOKE_SWEEP: ClassVar[dict] = {"ood_total": [0, 4], "seed": [0]}  # a file's seed axis: one seed on the CPU


def training_set(cfg, root) -> tuple[list, dict, dict]:
    """Human + KD (+ OOD) pairs, duplicates removed, nothing shared with any test set (asserted).

    Returns (examples, counts, ood_test) -- ood_test is the held-out Tatoeba slice per direction.
    """
    wmt_test = leakage.test_sentences(root=root)
    human = [ex for d in cfg.train_directions
             for ex in data.load_split("alma", d, "train", n=cfg.human_per_direction, seed=cfg.seed, root=root)]
    human, dropped = leakage.drop_test_overlap(human, wmt_test)
    kd = []
    if cfg.kd_data:
        kd_path = records.in_results(cfg.kd_data, cfg.results_dir)
        kd = [ex for ex in distillation.load_examples(kd_path) if ex.direction in cfg.train_directions]
        kd, more = leakage.drop_test_overlap(kd, wmt_test)
        dropped += more
    pool, ood_test = distillation.ood_split(cfg.directions, n_test_per_direction=cfg.ood_test_per_direction,
                                            seed=cfg.test_seed, root=root)  # the held-out slice: the same for every seed
    ood = distillation.sample_ood({d: pool[d] for d in cfg.train_directions if d in pool}, cfg.ood_total, cfg.seed)
    examples, counts = distillation.combine(("human", human), ("kd", kd), ("ood", ood))
    leakage.assert_no_test_overlap(examples, wmt_test, purpose="student training (WMT test sets)")
    leakage.assert_no_test_overlap(examples, [ex for exs in ood_test.values() for ex in exs],
                                purpose="student training (held-out out-of-domain test)")
    counts["dropped_test_overlap"] = dropped
    return examples, counts, ood_test


def prune_steps(cfg) -> list[dict]:
    """The pruning the student runs: the layers ``cfg.prune_layers_from`` chose (read by ``resolve``), else
    ``cfg.prune_recipe``, where a ``layer-prune-greedy`` step that sets no ``repetition_penalty`` decodes its dev set
    with the run's (the one its ``decoding_record`` chose), so that selection decodes as the test does."""
    if cfg.prune_layers_from:
        if cfg._prune_layers is None:
            raise ParamsError(f"prune_layers_from {cfg.prune_layers_from}: not read yet (load the params with .load)")
        return [{"method": "layer-prune-listed", "layers": list(cfg._prune_layers),
                 "selected_by": cfg.prune_layers_from.removesuffix(".json")}]
    return [dict(step, repetition_penalty=step.get("repetition_penalty", cfg.repetition_penalty))
            if step.get("method") == "layer-prune-greedy" else dict(step) for step in cfg.prune_recipe]


def prune_student(cfg, human: list | None = None, *, progress: bool = True):
    """Apply ``cfg.prune_recipe`` to the teacher, fully fine-tune it on the ``human`` pairs when
    ``cfg.full_ft_epochs`` (Moslem's Model B), and save the student; returns (checkpoint path, recipe info, the full
    fine-tuning's summary or None)."""
    steps = prune_steps(cfg)
    if not steps:
        return cfg.model_id, [], None
    model, tokenizer = models.load_model(cfg.model_id, "float32", cfg.device)
    model, described = apply_recipe(model, tokenizer, build_recipe(steps), None)
    full_ft = None
    if cfg.full_ft_epochs:
        pairs = [prompts.training_text(ex, cfg.prompt_style, tokenizer=tokenizer) for ex in human or []]
        result = training.finetune(model, tokenizer, pairs, epochs=cfg.full_ft_epochs,
                                   learning_rate=cfg.full_ft_learning_rate, batch_size=cfg.full_ft_batch_size,
                                   max_length=cfg.max_length, warmup_ratio=cfg.warmup_ratio, seed=cfg.seed,
                                   progress=progress)
        full_ft = {**result.summary(), "pairs": len(pairs), "epochs": cfg.full_ft_epochs,
                   "learning_rate": cfg.full_ft_learning_rate}
    path = Path(tempfile.mkdtemp(prefix="studylib-student-"))
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    del model
    return str(path), described, full_ft


def retention(metrics: dict, teacher_record: dict, metric: str = "chrf++") -> dict:
    """Student / teacher ``metric`` per direction present in both (1.0 = as good as the teacher)."""
    out = {}
    for d, scores in metrics.items():
        ref = teacher_record["metrics"].get(d, {}).get(metric)
        if ref:
            out[d] = scores[metric] / ref
    return out


def train_student(cfg, *, notebook: str, progress: bool = True) -> dict:
    """Build, train, evaluate one student; returns its record (not written)."""
    root = data.resolve_data_dir(cfg.data_dir)
    test_sets = evaluation.load_test_sets(cfg)
    also = evaluation.load_also_test_sets(cfg)
    examples, counts, ood_test = training_set(cfg, root)
    dev = None
    if cfg.dev_per_direction is not None:  # built before any model loads: disjoint from the tests and the training data
        dev = devset.dev_examples(cfg.directions, cfg.dev_per_direction, seed=cfg.test_seed, root=root)
        examples = devset.hold_out(examples, dev)
    teacher = None
    if cfg.teacher_record:
        teacher = json.loads(records.results_dir(cfg.results_dir).joinpath("runs", cfg.teacher_record).read_text())

    human = [ex for ex in examples if ex.meta_dict().get("origin") == "human"]
    student_path, pruned, full_ft = prune_student(cfg, human, progress=progress)
    try:
        model, tokenizer, qinfo = training.load_qlora(
            student_path, r=cfg.qlora_r, alpha=cfg.qlora_alpha, dropout=cfg.qlora_dropout, rslora=cfg.rslora,
            double_quant=cfg.double_quant, compute_dtype=cfg.compute_dtype, device=cfg.device)
    finally:
        if pruned:
            shutil.rmtree(student_path, ignore_errors=True)
    pairs = [prompts.training_text(ex, cfg.prompt_style, tokenizer=tokenizer) for ex in examples]
    stopping = None if dev is None else devset.early_stopping(
        dev, tokenizer, every=cfg.dev_every, patience=cfg.dev_patience, style=cfg.prompt_style,
        batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, repetition_penalty=cfg.repetition_penalty)
    result = training.finetune(model, tokenizer, pairs, epochs=cfg.epochs, max_steps=cfg.max_steps,
                               learning_rate=cfg.learning_rate,
                               batch_size=cfg.train_batch_size, grad_accum=cfg.grad_accum, max_length=cfg.max_length,
                               warmup_ratio=cfg.warmup_ratio, seed=cfg.seed, progress=progress, dev=stopping)
    with tempfile.TemporaryDirectory(prefix="studylib-adapter-") as tmp:
        model.save_pretrained(tmp)
        adapter_bytes = efficiency.storage_bytes(tmp)
        if cfg.save_dir:
            shutil.copytree(tmp, Path(cfg.save_dir) / "adapter", dirs_exist_ok=True)

    ev = evaluation.evaluate(model, tokenizer, cfg, test_sets, progress=progress, also=also)
    ood = evaluation.evaluate(model, tokenizer, cfg, ood_test, progress=progress)
    storage = qinfo["base_storage_bytes"] + adapter_bytes
    eff = efficiency.efficiency_report(model, tokenizer, prompt=evaluation.speed_prompt(cfg, tokenizer),
                                       batch_sizes=cfg.speed_batch_sizes, new_tokens=cfg.speed_new_tokens,
                                       storage=storage, measure_storage=False)
    extra = {
        "training": {**result.summary(), "qlora": qinfo},
        "training_data": counts,
        "student": {"prune_recipe": pruned, "layers": _num_layers(model), "full_ft": full_ft,
                    "storage_bytes": {"base_nf4": qinfo["base_storage_bytes"], "adapter": adapter_bytes}},
        "ood_metrics": ev_to_dict(ood),
        "ood_averages": records.direction_averages(ood.metrics),
        **evaluation.also_block(ev),
    }
    if cfg.prune_layers_from:  # the record's "what" reads the steps that ran (the params name only their source)
        extra["compression"] = {"recipe": pruned}
    if teacher:
        extra["retention_chrf++"] = retention(ev.metrics, teacher)
        extra["teacher_record"] = cfg.teacher_record
    return records.make_record(notebook=notebook, run=cfg.run_name, params=cfg.as_dict(), profile=cfg.profile,
                               **cfg.identity(), metrics=ev.metrics, efficiency=eff,
                               outputs=ev.outputs if cfg.keep_outputs else None, engine=ev.engine, extra=extra)


def ev_to_dict(ev) -> dict:
    return {d: {k: v for k, v in s.items() if k != "signatures"} for d, s in ev.metrics.items()}


def _num_layers(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "num_hidden_layers", None)
