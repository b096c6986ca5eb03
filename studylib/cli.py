"""The course starter's one-off command line; writes the same record as the notebooks.

    python -m studylib run --data data.jsonl --outdir runs/exp1_bnb8 \\
        --model_id Unbabel/TowerInstruct-Mistral-7B-v0.2 --quant 8bit --eval_metrics chrf,bleu

``--data`` is JSON lines in the ``{langs, src, tgt}`` schema (e.g. WMT24, or ``wmt24_esa.jsonl``). When the
lines carry ``esa_score``, the scores are also broken down by ESA bin (0-30, 30-60, 60-100).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ESA_BINS = ((0, 30), (30, 60), (60, 100))


def esa_bin(score: float) -> str:
    """'0-30', '30-60' or '60-100': each bin holds its lower edge; 100 belongs to the last."""
    if not 0 <= score <= 100:
        raise ValueError(f"ESA score {score} outside 0..100")
    for low, high in ESA_BINS:
        if score < high or high == 100:
            return f"{low}-{high}"


def esa_breakdown(examples, hyps, tgt_lang, metric_names) -> dict:
    """Corpus scores of the segments in each ESA bin."""
    from studylib.core.metrics import corpus_scores

    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        score = dict(ex.meta).get("esa_score") if ex.meta else None
        if score is not None:
            groups.setdefault(esa_bin(float(score)), []).append(i)
    out = {}
    for name, idx in sorted(groups.items(), key=lambda kv: float(kv[0].split("-")[0])):
        scores = corpus_scores([hyps[i] for i in idx], [examples[i].tgt for i in idx], tgt_lang, metric_names)
        scores.pop("signatures", None)
        out[name] = {**scores, "n": len(idx)}
    return out


def build_parser() -> argparse.ArgumentParser:
    from studylib.core.models import OFFLINE_DEFAULT, QUANT_CHOICES

    ap = argparse.ArgumentParser(prog="python -m studylib", description="One-off translation runs that write a study record.")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="translate a JSON-lines test set, score it, write a record")
    run.add_argument("--data", required=True, type=Path, help="JSON lines {langs, src, tgt[, esa_score]}")
    run.add_argument("--outdir", required=True, type=Path, help="where the record (record.json) is written")
    run.add_argument("--model_id", default=OFFLINE_DEFAULT, help=f"hub id, local dir, or {OFFLINE_DEFAULT!r} (offline default)")
    run.add_argument("--quant", choices=QUANT_CHOICES, default="none", help="bitsandbytes 8-bit / NF4 4-bit")
    run.add_argument("--eval_metrics", default="chrf,bleu", help="comma list from chrf, chrf++, bleu, comet")
    run.add_argument("--comet_checkpoint", default=None, help="local COMET checkpoint (for comet)")
    run.add_argument("--directions", default="all", help="comma list like en-de,en-cs (default: all in the file)")
    run.add_argument("--limit", type=int, default=None, help="segments per direction (deterministic sample)")
    run.add_argument("--prompt_style", default=None, help="alma | alma-fewshot | tower (default: tower for Tower models, else alma)")
    run.add_argument("--batch_size", type=int, default=16)
    run.add_argument("--max_new_tokens", type=int, default=256)
    run.add_argument("--dtype", default="bfloat16")
    run.add_argument("--device", default="auto")
    run.add_argument("--seed", type=int, default=0)
    return ap


def run(args) -> Path:
    from studylib.core import data, efficiency, evaluation, models, records
    from studylib.core.languages import DIRECTIONS, parse_direction
    from studylib.core.params import BaselineParams, ParamsError

    # everything is checked before the model loads
    if not args.data.is_file():
        raise ParamsError(f"--data {args.data} does not exist")
    metric_names = [m.strip() for m in args.eval_metrics.split(",") if m.strip()]
    examples = data.load_jsonl(args.data)
    present = sorted({ex.direction for ex in examples}, key=DIRECTIONS.index)
    directions = present if args.directions == "all" else args.directions.split(",")
    style = args.prompt_style or ("tower" if "tower" in args.model_id.lower() else "alma")
    cfg = BaselineParams(
        profile="full", run_name=args.outdir.name or "run", model_id=args.model_id, dtype=args.dtype,
        device=args.device, test_source=str(args.data), directions=directions, n_test=args.limit, seed=args.seed,
        prompt_style=style, shots=0, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        metrics=metric_names, comet_checkpoint=args.comet_checkpoint, results_dir=str(args.outdir),
    )
    test_sets = {d: data.subsample([ex for ex in examples if ex.direction == d], args.limit, args.seed)
                 for d in cfg.directions}
    empty = [d for d, v in test_sets.items() if not v]
    if empty:
        raise ParamsError(f"{args.data} has no segments for {', '.join(empty)} (it has {', '.join(present)})")

    model, tokenizer = models.load_model(args.model_id, args.dtype, args.device, quant=args.quant)
    ev = evaluation.evaluate(model, tokenizer, cfg, test_sets)
    plain = [m for m in metric_names if m != "comet"]
    for d, exs in test_sets.items():
        bins = esa_breakdown(exs, ev.outputs[d]["hyp"], parse_direction(d)[1], plain)
        if bins:
            ev.metrics[d]["esa_bins"] = bins
    eff = efficiency.efficiency_report(model, tokenizer, prompt=evaluation.make_prompts(cfg, directions[0], test_sets[directions[0]][:1], tokenizer)[0])
    params = {**cfg.as_dict(), "quant": args.quant, "data": str(args.data)}
    record = records.make_record(notebook="cli", run=cfg.run_name, params=params, profile="full", metrics=ev.metrics,
                                 efficiency=eff, outputs=ev.outputs)
    path = records.write_json_atomic(record, args.outdir / "record.json")
    for d, s in ev.metrics.items():
        print(d, {m: round(s[m], 2) for m in metric_names if m in s})
    return path


def main(argv=None) -> int:
    from studylib.core.params import ParamsError

    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except (ParamsError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
