"""The study's languages and translation directions (cs, de, is, ru, zh <-> en)."""

from __future__ import annotations

LANG_NAMES = {
    "en": "English",
    "cs": "Czech",
    "de": "German",
    "is": "Icelandic",
    "ru": "Russian",
    "zh": "Chinese",
}
XX_LANGS = ("cs", "de", "is", "ru", "zh")
XX_EN = tuple(f"{xx}-en" for xx in XX_LANGS)
EN_XX = tuple(f"en-{xx}" for xx in XX_LANGS)
DIRECTIONS = XX_EN + EN_XX


class UnknownDirectionError(ValueError):
    """A direction outside the study's ten."""


def parse_direction(direction: str) -> tuple[str, str]:
    """'de-en' -> ('de', 'en'); anything outside the ten study directions is one clear error."""
    if direction not in DIRECTIONS:
        raise UnknownDirectionError(
            f"unknown direction {direction!r}: the study covers {', '.join(DIRECTIONS)}"
        )
    src, tgt = direction.split("-")
    return src, tgt


def normalize_directions(value) -> list[str]:
    """'all', one direction or a list of them -> the list of directions; anything else is one UnknownDirectionError."""
    if value == "all":
        return list(DIRECTIONS)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise UnknownDirectionError(f"directions must be 'all' or a non-empty list, got {value!r}")
    bad = [d for d in value if d not in DIRECTIONS]
    if bad:
        raise UnknownDirectionError(f"unknown directions {bad}; the study covers {', '.join(DIRECTIONS)}")
    if len(set(value)) != len(value):
        raise UnknownDirectionError(f"directions repeat: {value}")
    return list(value)


def pair_code(direction: str) -> str:
    """The ALMA folder name of a direction: 'de-en' and 'en-de' -> 'deen'."""
    src, tgt = parse_direction(direction)
    xx = tgt if src == "en" else src
    return f"{xx}en"


def non_english(direction: str) -> str:
    src, tgt = parse_direction(direction)
    return tgt if src == "en" else src
