"""Supervised fine-tuning on (prompt, target) pairs: full fine-tuning or LoRA, loss on the target only.

A plain PyTorch loop (AdamW, linear warm-up and decay, gradient clipping, bf16 autocast on CUDA) with a
progress bar over the optimizer steps (its total known up front, so it shows an ETA) and a loss log, so that
what a run did is visible and recorded.

Early stopping on dev (:class:`DevSelection`): every ``every`` optimizer steps, and after the last, the model is
scored on a dev set (never a test set: the caller's dev set is checked for that before training starts); the
trained parameters of the best score are kept and put back at the end, and training stops after ``patience``
scorings without a gain. The record holds the dev curve and the step chosen.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm


@dataclass
class DevSelection:
    """Early stopping on a dev score (higher is better): ``score(model)`` every ``every`` optimizer steps and after
    the last; with ``patience``, training stops after that many scorings without a gain."""

    score: Callable[[object], float]
    every: int
    patience: int | None = None
    what: dict = field(default_factory=dict)  # the dev set and metric, for the record

    def __post_init__(self):
        if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
            raise ValueError(f"dev scoring every must be a positive number of steps, got {self.every!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise ValueError(f"patience must be a positive number of scorings or None, got {self.patience!r}")


@dataclass
class TrainResult:
    model: object
    steps: int
    seconds: float
    examples: int
    skipped_too_long: int
    trainable_params: int
    total_params: int
    losses: list = field(default_factory=list)  # (step, mean loss since the last log)
    passes: float | None = None  # batches trained over batches in one pass over the data (epochs, as trained)
    dev: dict | None = None  # early stopping: the dev curve, the step kept, whether training stopped early

    def summary(self) -> dict:
        return {
            "steps": self.steps,
            "passes": self.passes,
            "seconds": self.seconds,
            "examples": self.examples,
            "skipped_too_long": self.skipped_too_long,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "trainable_share": self.trainable_params / max(self.total_params, 1),
            "loss_log": self.losses,
            "final_loss": self.losses[-1][1] if self.losses else None,
            "dev_selection": self.dev,
        }


def encode_pairs(tokenizer, pairs, max_length: int):
    """Token ids and labels (-100 on the prompt) for each (prompt, target); over-long pairs are cut or skipped."""
    encoded, skipped = [], 0
    for prompt, target in pairs:
        p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        t = tokenizer(target, add_special_tokens=False)["input_ids"]
        if len(p) >= max_length - 1:
            skipped += 1
            continue
        ids = (p + t)[:max_length]
        labels = ([-100] * len(p) + t)[:max_length]
        encoded.append((ids, labels))
    return encoded, skipped


def _batches(encoded, batch_size: int, rng: random.Random):
    """Shuffled batches of similar length (sorted inside pools of 64 batches), themselves shuffled."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    pool = batch_size * 64
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: len(encoded[i][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(encoded, idx, pad_id, device):
    import torch

    width = max(len(encoded[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), -100, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        x, y = encoded[i]
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return ids.to(device), mask.to(device), labels.to(device)


def add_lora(model, *, r: int, alpha: int, dropout: float, rslora: bool = False):
    """Wrap a model with LoRA adapters on all linear layers (peft)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear",
                        task_type="CAUSAL_LM", use_rslora=rslora)
    return get_peft_model(model, config)


def finetune(model, tokenizer, pairs, *, epochs: float = 1.0, max_steps: int | None = None,
             learning_rate: float = 2e-5, batch_size: int = 8,
             grad_accum: int = 1, max_length: int = 256, warmup_ratio: float = 0.03, weight_decay: float = 0.0,
             seed: int = 0, progress: bool = True, log_every: int | None = None,
             dev: DevSelection | None = None) -> TrainResult:
    """Train ``model`` in place on ``pairs`` (list of (prompt, target)); returns the model and a log.

    ``epochs`` may be fractional (0.5 = half the shuffled batches). ``max_steps``, when given, replaces it: exactly
    that many optimizer steps, the data reshuffled for each pass it needs, so that runs on data of different sizes
    train equally long. The loss covers target tokens only.
    ``log_every`` optimizer steps the mean loss is logged (default: about 50 entries per run).
    ``dev``: early stopping on a dev score (:class:`DevSelection`); the model comes back with the trained
    parameters of its best score. ``seconds`` includes the dev scorings (``dev['seconds']`` apart).
    """
    import torch
    from transformers import get_linear_schedule_with_warmup

    if not pairs:
        raise ValueError("no training pairs")
    device = next(model.parameters()).device
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    encoded, skipped = encode_pairs(tokenizer, pairs, max_length)
    if not encoded:
        raise ValueError(f"every training pair is longer than max_length={max_length}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    plan = []
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        while len(plan) < max_steps * grad_accum:
            plan += _batches(encoded, batch_size, rng)
        plan = plan[: max_steps * grad_accum]
    for epoch in range(0 if max_steps is not None else math.ceil(epochs)):
        epoch_batches = _batches(encoded, batch_size, rng)
        if epoch + 1 > epochs:  # fractional last epoch
            epoch_batches = epoch_batches[: max(1, int(len(epoch_batches) * (epochs - epoch)))]
        plan += epoch_batches
    total_steps = max(1, math.ceil(len(plan) / grad_accum))
    log_every = log_every or max(1, total_steps // 50)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    model.train()
    losses, running, running_n, step = [], 0.0, 0, 0
    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc="fine-tuning", disable=not progress, unit="step")
    optimizer.zero_grad(set_to_none=True)
    tracker = _DevTracker(dev, model) if dev is not None else None
    for micro, idx in enumerate(plan, start=1):
        ids, mask, labels = _collate(encoded, idx, pad_id, device)
        last = micro % grad_accum == 0 or micro == len(plan)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step + 1}; lower learning_rate")
        (loss / grad_accum).backward()
        running += loss.item()
        if last:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        running_n += 1
        if last:
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == total_steps:
                losses.append((step, running / running_n))
                bar.set_postfix(loss=f"{running / running_n:.4f}")
                running, running_n = 0.0, 0
            if tracker is not None and (step % dev.every == 0 or step == total_steps):
                if tracker.scored(step) and step < total_steps:
                    tracker.stopped = True
                    break
    bar.close()
    model.eval()
    if tracker is not None:  # scored at the last step trained, whether patience ran out or the plan did
        tracker.restore()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return TrainResult(
        model=model,
        steps=step,
        seconds=time.perf_counter() - start,
        examples=len(encoded),
        skipped_too_long=skipped,
        trainable_params=sum(p.numel() for p in params),
        total_params=sum(p.numel() for p in model.parameters()),
        losses=losses,
        passes=len(plan) / len(_batches(encoded, batch_size, random.Random(0))),  # a pass's count: shuffle-free
        dev=tracker.summary(total_steps) if tracker is not None else None,
    )


class _DevTracker:
    """Scores the model on dev, keeps a CPU copy of the trained parameters at the best score, restores them."""

    def __init__(self, dev: DevSelection, model):
        self.dev, self.model = dev, model
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.curve, self.best, self.best_step, self.kept, self.waited, self.stopped = [], None, None, None, 0, False
        self.seconds = 0.0

    def scored(self, step: int) -> bool:
        """Score at ``step``; True when patience has run out."""
        import torch

        start = time.perf_counter()
        self.model.eval()
        device = next(self.model.parameters()).device
        # decoded under the bf16 autocast the training steps use (on a GPU that has it), not in plain fp32
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=device.type == "cuda" and torch.cuda.is_bf16_supported()):
            value = float(self.dev.score(self.model))
        self.model.train()
        self.curve.append((step, value))
        if self.best is None or value > self.best:
            self.best, self.best_step, self.waited = value, step, 0
            self.kept = {n: p.detach().to("cpu", copy=True) for n, p in self.named}
        else:
            self.waited += 1
        self.seconds += time.perf_counter() - start
        return self.dev.patience is not None and self.waited >= self.dev.patience

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for n, p in self.named:
                p.copy_(self.kept[n].to(p.device))

    def summary(self, planned_steps: int) -> dict:
        return {"curve": self.curve, "best_step": self.best_step, "best_score": self.best,
                "stopped_early": self.stopped, "planned_steps": planned_steps, "every": self.dev.every,
                "patience": self.dev.patience, "seconds": self.seconds, **self.dev.what}


def weights_digest(model) -> str:
    """sha256 over the model's state (each tensor's name, dtype, shape and bytes, in name order): equal digests, equal
    weights. A teacher trained again is checked against its record by it."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_teacher(model, tokenizer, save_dir, base_model_id: str | None = None) -> Path:
    """Save a fine-tuned model atomically: ``<dir>/merged`` (a plain checkpoint) and, for LoRA, ``<dir>/adapter``.

    The adapter alone rebuilds the teacher from the base (``models.load_model(<dir>/adapter)``); its config names
    ``base_model_id`` (e.g. 'gemma-3-270m') rather than a machine-specific path. ``merged`` is what later
    notebooks load.
    """
    import json
    import os
    import shutil
    import tempfile

    final = Path(save_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        if hasattr(model, "merge_and_unload"):  # a peft model
            model.save_pretrained(tmp / "adapter")
            if base_model_id:
                cfg_path = tmp / "adapter" / "adapter_config.json"
                config = json.loads(cfg_path.read_text())
                config["base_model_name_or_path"] = base_model_id
                cfg_path.write_text(json.dumps(config, indent=2))
            model = model.merge_and_unload()
        model.save_pretrained(tmp / "merged", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "merged")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_qlora(model_id: str, *, r: int = 64, alpha: int = 128, dropout: float = 0.0, rslora: bool = True,
               double_quant: bool = True, compute_dtype: str = "bfloat16", device: str = "auto",
               gradient_checkpointing: bool = False):
    """QLoRA (Dettmers et al. 2023): the base frozen in 4-bit NF4 (double quantization, ``compute_dtype``
    compute), LoRA adapters of rank ``r`` on every linear layer, rank-stabilized scaling (alpha/sqrt(r),
    Kalajdzievski 2023) when ``rslora``. Returns (peft model, tokenizer, info): the trainable share and the
    storage of the 4-bit base as saved (bytes), for the compression accounting.
    """
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from studylib.core import models

    for name, value in (("r", r), ("alpha", alpha)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    device = models.resolve_device(device)
    dtype = getattr(torch, compute_dtype)
    path = models.checkpoint_path(model_id)
    tokenizer = models.prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                               bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, device_map=device, dtype=dtype)
    from studylib.core.efficiency import saved_storage_bytes

    base_bytes = saved_storage_bytes(model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    model = add_lora(model, r=r, alpha=alpha, dropout=dropout, rslora=rslora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return model, tokenizer, {"trainable_params": trainable, "total_params": total, "trainable_share": trainable / total,
                              "base_storage_bytes": base_bytes, "r": r, "alpha": alpha, "dropout": dropout,
                              "rslora": rslora, "double_quant": double_quant, "compute_dtype": compute_dtype}
