"""Prompts: ALMA's zero-shot and few-shot formats, TowerInstruct's chat format; output cutting.

Styles
    ``alma``          ``Translate this from German to English:\\nGerman: {src}\\nEnglish:``
    ``alma-fewshot``  ALMA's few-shot format for base models (as in ALMA's evaluation code):
                      the same instruction line, then for each shot
                      ``\\nGerman: {shot source}\\nEnglish: {shot target}``, then the query
                      ``\\nGerman: {src}\\nEnglish:``. With 0 shots it is exactly ``alma``.
    ``tower``         a single user turn ``Translate the following text from German into
                      English.\\nGerman: {src}\\nEnglish:`` rendered by the model's own chat
                      template (``apply_chat_template(..., add_generation_prompt=True,
                      tokenize=False)``).

Output
    :func:`cut_output` keeps the first non-empty line of a generated continuation,
    stripped: all three prompts expect a one-line answer, and a base model will happily go
    on with the next "German: ..." line.

Training
    :func:`training_text` returns ``(prompt, target)``; the trainer masks the prompt and
    learns the target, which is ``" " + reference + "\\n"`` for ``alma`` (the space the
    prompt's ``English:`` is followed by in the few-shot shots, so that prompt and target
    tokenize apart cleanly) and ``reference + "\\n"`` for ``tower`` (the template already
    ends the prompt with a line break). The trailing newline teaches the model to stop
    where :func:`cut_output` cuts. (ALMA's own training appends the reference with no
    space and ends with the EOS token; add the EOS token in the trainer if wanted.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from studylib.core.languages import LANG_NAMES, parse_direction

STYLES = ("alma", "alma-fewshot", "tower")
TARGET_END = "\n"


def _names(direction: str) -> tuple[str, str]:
    src, tgt = parse_direction(direction)
    return LANG_NAMES[src], LANG_NAMES[tgt]


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}: use one of {', '.join(STYLES)}")


def alma_prompt(src: str, direction: str) -> str:
    """ALMA's zero-shot prompt."""
    s, t = _names(direction)
    return f"Translate this from {s} to {t}:\n{s}: {src}\n{t}:"


def alma_fewshot_prompt(src: str, direction: str, shot_pairs: Sequence[tuple[str, str]]) -> str:
    """ALMA's few-shot prompt with every pair of ``shot_pairs`` as a shot, in order."""
    s, t = _names(direction)
    shots = "".join(f"\n{s}: {a}\n{t}: {b}" for a, b in shot_pairs)
    return f"Translate this from {s} to {t}:{shots}\n{s}: {src}\n{t}:"


def tower_message(src: str, direction: str) -> str:
    """The user message of TowerInstruct's translation prompt (before the chat template)."""
    s, t = _names(direction)
    return f"Translate the following text from {s} into {t}.\n{s}: {src}\n{t}:"


def tower_prompt(src: str, direction: str, tokenizer) -> str:
    """Tower's user message rendered with ``tokenizer``'s chat template, ready to generate."""
    if tokenizer is None:
        raise ValueError("style 'tower' needs the model's tokenizer (for its chat template)")
    messages = [{"role": "user", "content": tower_message(src, direction)}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _shots_for(direction: str, shots: int, shot_pairs, cache: dict) -> list[tuple[str, str]]:
    if isinstance(shot_pairs, Mapping):
        if direction not in shot_pairs:
            raise ValueError(f"shot_pairs has no entry for {direction} (has {', '.join(shot_pairs)})")
        pairs = list(shot_pairs[direction])
    elif shot_pairs is not None:
        pairs = list(shot_pairs)
    else:
        if direction not in cache:
            from studylib.core.data import load_few_shot  # lazy: reads $STUDYLIB_DATA

            cache[direction] = load_few_shot(direction)
        pairs = cache[direction]
    if shots > len(pairs):
        raise ValueError(f"asked for {shots} shots but only {len(pairs)} are available for {direction}")
    return pairs[:shots]


def build_prompts(examples, style: str, *, shots: int = 0, shot_pairs=None, tokenizer=None) -> list[str]:
    """One prompt per example (anything with ``.src`` and ``.direction``).

    ``shots`` (style ``alma-fewshot`` only) is how many shots to use, the first ``shots``
    of ``shot_pairs``: a list of ``(source, target)`` pairs used for every example (all
    examples must then share one direction), a mapping ``direction -> pairs``, or None to
    read ALMA's HW-5-shot file of each direction from the data folder.
    """
    _check_style(style)
    if not isinstance(shots, int) or shots < 0:
        raise ValueError(f"shots must be a non-negative integer, got {shots!r}")
    if shots and style != "alma-fewshot":
        raise ValueError(f"style {style!r} takes no shots; use 'alma-fewshot'")
    examples = list(examples)
    if style == "alma":
        return [alma_prompt(e.src, e.direction) for e in examples]
    if style == "tower":
        if tokenizer is None:
            raise ValueError("style 'tower' needs the model's tokenizer (for its chat template)")
        return [tower_prompt(e.src, e.direction, tokenizer) for e in examples]
    if shot_pairs is not None and not isinstance(shot_pairs, Mapping):
        directions = {e.direction for e in examples}
        if len(directions) > 1:
            raise ValueError(
                f"one list of shot_pairs cannot serve several directions ({', '.join(sorted(directions))}); "
                "pass a mapping direction -> pairs"
            )
    cache: dict = {}
    return [alma_fewshot_prompt(e.src, e.direction, _shots_for(e.direction, shots, shot_pairs, cache)) for e in examples]


def cut_output(text: str) -> str:
    """The translation in a generated continuation: its first non-empty line, stripped."""
    for line in text.split("\n"):
        if line.strip():
            return line.strip()
    return ""


def training_text(example, style: str, *, tokenizer=None) -> tuple[str, str]:
    """``(prompt, target)`` for fine-tuning: mask the prompt, learn the target (see module doc)."""
    _check_style(style)
    if style == "alma":
        return alma_prompt(example.src, example.direction), " " + example.tgt + TARGET_END
    if style == "tower":
        return tower_prompt(example.src, example.direction, tokenizer), example.tgt + TARGET_END
    raise ValueError("training_text supports 'alma' and 'tower'; few-shot prompts are for evaluating base models")
