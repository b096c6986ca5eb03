"""What every report writes with: labels, number formats, Markdown tables, the stale mark and atomic file writes.

The stale mark (:data:`STALE`) follows the name of every record made under an older record layout
(:func:`studylib.core.records.is_stale`), once per record, in every table, figure and sentence that names it; each of
them says what it means (:data:`STALE_MEANING`).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

from studylib.core import data as _data
from studylib.core import records

# the test sets every run of the study is scored on (ALMA's layout): WMT22, WMT21 for is-en and en-is
TESTSET = _data.testset_label(_data.testset_names("alma"))

GROUPS = ("xx-en", "en-xx")
GROUP_LABEL = {"xx-en": "xx→en", "en-xx": "en→xx"}
METRIC_LABEL = {"bleu": "BLEU", "chrf": "chrF", "chrf++": "chrF++", "comet": "COMET"}
STALE = "§"
STALE_MEANING = "made by an older layout of the code; remade by the next full run"


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, digits: int = 1) -> str:
    if missing(v):
        return "—"
    return f"{v:.{digits}f}".replace("-", "−")


def fmt_sig(v, significant: int = 3) -> str:
    """``significant`` digits without exponent notation: 0.536, 1.81, 18.4, 268, 1,024."""
    if missing(v):
        return "—"
    if v == 0:
        return "0"
    digits = max(0, significant - 1 - math.floor(math.log10(abs(v))))
    return f"{v:,.{digits}f}".replace("-", "−")


def signed(v: float, digits: int = 1) -> str:
    return f"{v:+.{digits}f}".replace("-", "−")


def metric_digits(metric: str) -> int:
    return 3 if metric == "comet" else 1


def arrow(direction: str) -> str:
    return direction.replace("-", "→")


def code(name: str) -> str:
    return f"`{name}`"


def join(items, conj: str = "and") -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def clip(text, limit: int = 120) -> str:
    """``text`` on one line, cut at a word boundary (with an ellipsis) when longer than ``limit`` characters."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + "…"


def natural(text: str) -> tuple:
    """Sort key that orders 'calib4' before 'calib16'."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text)))


def truthy(v) -> bool:
    """A flag as records, pandas and CSV files give it back: ``True``, numpy's ``True_`` or the text ``"True"``."""
    return str(v) == "True"


def stale_mark(stale) -> str:
    """`` §`` after the name of a stale record, nothing otherwise."""
    return f" {STALE}" if truthy(stale) else ""


def stale_note(any_stale: bool) -> str:
    """The sentence a table or caption ends with when it names a stale record."""
    return f"{STALE} {STALE_MEANING}." if any_stale else ""


def md_escape(text) -> str:
    return str(text).replace("|", "\\|")


def md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A GitHub-style Markdown table; ``align`` one of l/r/c per column (default: left)."""
    align = (align or "l" * len(header)).ljust(len(header), "l")
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` through a temporary file and an atomic rename, readable by all (like the records)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, records.FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(obj, path: str | Path) -> Path:
    return write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n", path)


def read_json(path: str | Path):
    """The JSON file at ``path``, or None when there is none."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
