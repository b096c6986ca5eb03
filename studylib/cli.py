"""The course starter's one-off command line; writes the same record as the notebooks.

    python -m studylib run --data data.jsonl --outdir runs/exp1_bnb8 \\
        --model_id Unbabel/TowerInstruct-Mistral-7B-v0.2 --quant 8bit --eval_metrics chrf,bleu

``--data`` is JSON lines in the ``{langs, src, tgt}`` schema (e.g. WMT24, or ``wmt24_esa.jsonl``). When the
lines carry ``esa_score``, the scores are also broken down by ESA bin (0-30, 30-60, 60-100).

``--shots N`` (1..5) prompts with ALMA's few-shot format (style ``alma-fewshot``), the first N examples of
ALMA's HW-5-shot file of each direction (read from ``--data_dir``, default ``$STUDYLIB_DATA``); 0 is zero-shot.
A base model run zero-shot on the plain ``alma`` prompt gets a one-line note on stderr saying so.

Every bad input is one line on stderr naming the option or file (exit status 2), found before a model loads
wherever it can be (a hub id that cannot be reached shows only when the model is fetched).
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


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``prog: error: argument --quant: invalid choice ...``), no usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from studylib.core.models import DTYPES, OFFLINE_DEFAULT, QUANT_CHOICES
    from studylib.core.prompts import STYLES

    ap = _Parser(prog="python -m studylib", description="One-off translation runs that write a study record.")
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
    run.add_argument("--shots", type=int, default=0,
                     help="few-shot examples (1-5) from ALMA's HW-5-shot files, prompt alma-fewshot; 0 = zero-shot")
    run.add_argument("--data_dir", default=None, help="data folder holding alma/ (for --shots; default $STUDYLIB_DATA)")
    run.add_argument("--prompt_style", default=None, choices=STYLES,
                     help="alma | alma-fewshot | tower (default: alma-fewshot with --shots, tower for Tower models, else alma)")
    run.add_argument("--batch_size", type=int, default=16)
    run.add_argument("--max_new_tokens", type=int, default=256)
    run.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run.add_argument("--seed", type=int, default=0)
    return ap


MAX_SHOTS = 5  # ALMA's HW-5-shot files hold five examples per direction


def _style(args) -> str:
    """The prompt style: as asked, else alma-fewshot with shots, tower for Tower models, else alma."""
    from studylib.runs.params import ParamsError

    if not 0 <= args.shots <= MAX_SHOTS:
        raise ParamsError(f"--shots must be 0..{MAX_SHOTS} (ALMA's HW-5-shot examples), got {args.shots}")
    style = args.prompt_style
    if style is None:
        return "alma-fewshot" if args.shots else ("tower" if "tower" in args.model_id.lower() else "alma")
    if args.shots and style != "alma-fewshot":
        raise ParamsError(f"--shots {args.shots} needs --prompt_style alma-fewshot (or none), got {style!r}")
    if style == "alma-fewshot" and not args.shots:
        raise ParamsError(f"--prompt_style alma-fewshot needs --shots N (1..{MAX_SHOTS})")
    return style


def _directions(value: str, present: list[str], path: Path) -> list[str]:
    """``--directions``: 'all' (those in the file) or a comma list of the study's directions, each in the file."""
    from studylib.core.languages import DIRECTIONS
    from studylib.runs.params import ParamsError

    if value.strip() == "all":
        return present
    asked = [d.strip() for d in value.split(",") if d.strip()]
    if not asked:
        raise ParamsError("--directions is empty: give 'all' or a comma list like en-de,en-cs")
    unknown = [d for d in asked if d not in DIRECTIONS]
    if unknown:
        raise ParamsError(f"--directions: unknown {', '.join(map(repr, unknown))}; the study covers {', '.join(DIRECTIONS)}")
    if len(set(asked)) != len(asked):
        raise ParamsError(f"--directions repeats a direction: {value}")
    missing = [d for d in asked if d not in present]
    if missing:
        raise ParamsError(f"--directions: {path} has no segments for {', '.join(missing)} (it has {', '.join(present)})")
    return asked


def _metrics(args) -> list[str]:
    from studylib.core.metrics import ALLOWED_METRICS
    from studylib.runs.params import ParamsError

    names = [m.strip() for m in args.eval_metrics.split(",") if m.strip()]
    unknown = [m for m in names if m not in ALLOWED_METRICS]
    if not names or unknown:
        raise ParamsError(f"--eval_metrics: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                          f"use a comma list from {', '.join(ALLOWED_METRICS)}")
    if "comet" in names and not args.comet_checkpoint:
        raise ParamsError("--eval_metrics comet needs --comet_checkpoint (a local COMET checkpoint; no hub here)")
    return names


def _check_numbers(args) -> None:
    from studylib.runs.params import ParamsError

    for option, value, allow_none in (("--limit", args.limit, True), ("--batch_size", args.batch_size, False),
                                      ("--max_new_tokens", args.max_new_tokens, False)):
        if not (value is None and allow_none) and (value is None or value < 1):
            raise ParamsError(f"{option} must be a positive integer, got {value}")
    if args.device not in ("auto", "cpu", "cuda") and not (args.device.startswith("cuda:") and args.device[5:].isdigit()):
        raise ParamsError(f"--device must be auto, cpu, cuda or cuda:N, got {args.device!r}")


def zero_shot_note(model_id: str, style: str, shots: int) -> str | None:
    """The stderr note for a model run zero-shot on the plain ALMA prompt (None otherwise).

    A base model (the offline default, the tiny test model, any pretrained-only checkpoint) is not trained to
    follow that one-line instruction and translates far better with a few examples; a translation fine-tune
    (ALMA, a teacher trained here) is meant to be run exactly so, hence the wording for models other than ours.
    """
    from studylib.core.models import OFFLINE_DEFAULT, TINY_MODEL

    if shots or style != "alma":
        return None
    how = f"add --shots N (1-{MAX_SHOTS}) for ALMA's few-shot prompt with its HW-5-shot examples"
    if model_id in (OFFLINE_DEFAULT, TINY_MODEL):
        return f"note: {model_id} is a base model, run zero-shot (prompt 'alma', no examples); {how}"
    return (f"note: {model_id} is run zero-shot (prompt 'alma', no examples), which suits translation fine-tunes; "
            f"if it is a base model, {how}")


def run(args) -> Path:
    from studylib.core import data, efficiency, evaluation, models, records
    from studylib.core.languages import DIRECTIONS, parse_direction
    from studylib.runs.params import EvalParams, ParamsError

    # everything is checked before the model loads
    if not args.data.is_file():
        state = "is a folder, not a JSON-lines file" if args.data.is_dir() else "does not exist"
        raise ParamsError(f"--data {args.data} {state}")
    if args.data.suffix != ".jsonl":
        raise ParamsError(f"--data {args.data}: expected a .jsonl file (JSON lines {{langs, src, tgt}})")
    metric_names = _metrics(args)
    _check_numbers(args)
    style = _style(args)
    try:
        models.ModelSpec(args.model_id, args.dtype, args.device)
    except (ValueError, models.ModelNotAvailable) as err:
        raise ParamsError(f"--model_id: {err}") from None
    try:
        models.resolve_device(args.device)
    except RuntimeError as err:
        raise ParamsError(f"--device: {err}") from None
    examples = data.load_jsonl(args.data)
    if not examples:
        raise ParamsError(f"{args.data}: no examples (expected JSON lines "
                          '{"langs": "en-de", "src": ..., "tgt": ...} in the study\'s directions)')
    present = sorted({ex.direction for ex in examples}, key=DIRECTIONS.index)
    directions = _directions(args.directions, present, args.data)
    data_dir = None
    if args.shots:
        try:
            root = data.resolve_data_dir(args.data_dir)
            for d in directions:
                data.load_few_shot(d, root=root)  # the shots exist for every direction, before the model loads
        except data.DataError as err:
            raise ParamsError(f"--shots {args.shots}: {err}" if args.data_dir is None else f"--data_dir: {err}") from None
        data_dir = str(root)
    cfg = EvalParams(
        profile="full", run_name=args.outdir.name or "run", model_id=args.model_id, dtype=args.dtype,
        device=args.device, data_dir=data_dir, test_source=str(args.data), directions=directions, n_test=args.limit,
        seed=args.seed, prompt_style=style, shots=args.shots, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, metrics=metric_names, comet_checkpoint=args.comet_checkpoint,
        results_dir=str(args.outdir),
    )
    test_sets = {d: data.subsample([ex for ex in examples if ex.direction == d], args.limit, args.seed)
                 for d in cfg.directions}
    note = zero_shot_note(args.model_id, style, args.shots)
    if note:
        print(note, file=sys.stderr)

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
    from studylib.core.models import ModelNotAvailable
    from studylib.runs.params import ParamsError

    args = build_parser().parse_args(argv)
    try:
        print(run(args))
    except (ParamsError, ValueError, OSError, ModelNotAvailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
