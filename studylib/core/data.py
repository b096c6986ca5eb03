"""Loading the study's data: ALMA's human-written parallel data, WMT, Tatoeba, JSON lines.

Everything returns plain lists of :class:`Example` (source, target, direction, a little
metadata), so the rest of the study never needs to know where a sentence came from.

Where the data lives
    The data root is the folder holding ``alma/``, ``tatoeba/`` and ``wmt24/``. It is
    passed as ``root=`` or read from the environment variable ``STUDYLIB_DATA``; in this
    workplace it is ``../shared/data`` relative to the project root. Nothing is copied
    into the project.

Splits
    ``train``  ALMA's ``train.xx-en.{xx,en}`` plain-text files. For en->xx the same pairs
               are used with source and target swapped.
    ``dev``    ALMA's ``valid.xx-en.json`` (both directions). Icelandic has no valid file,
               so the last :data:`IS_DEV_SIZE` pairs of ``train.is-en.*`` are held out as
               its dev set and are *removed* from its train split (train 1,809, dev 200).
               The hub path applies the same carve-out, so both routes agree.
    ``test``   ALMA's ``test.{src}-{tgt}.json`` (WMT22; WMT21 for Icelandic), or WMT24's en->xx
               (``load_split("wmt24", ...)``, 997 segments in each of en->cs, de, is, ru, zh).

Test-set names
    :func:`testset_name` gives the true name of the test set a source holds for a direction
    (``wmt21`` for ALMA's is-en and en-is, ``wmt22`` for its other eight, ``wmt24``), and
    :func:`testset_label` the label of a group of directions (``WMT22 (WMT21 for is↔en)``), so that
    no table calls ALMA's Icelandic test sets WMT22.

Test-set hygiene
    The guards that keep test sentences out of calibration, selection and training live in
    :mod:`studylib.core.leakage`.

Errors
    Every missing folder or file, unknown direction or malformed record is one :class:`DataError`
    (a ``ValueError``) with a one-line message that names the offending path (and, for the data
    folder and the files under it, ``$STUDYLIB_DATA``), raised without a chained traceback: the
    message says all there is. Unknown directions raise
    :class:`UnknownDirection`, which is both a ``DataError`` and the
    ``languages.UnknownDirectionError``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studylib.core.languages import (
    DIRECTIONS, EN_XX, UnknownDirectionError, non_english, pair_code, parse_direction,
)

log = logging.getLogger(__name__)

ENV_VAR = "STUDYLIB_DATA"
SPLITS = ("train", "dev", "test")
IS_DEV_SIZE = 200  # pairs carved off the end of ALMA's Icelandic train set as its dev set
FEW_SHOT_KINDS = ("HW-5-shot", "Filtered-5-shot")

HUB_PARALLEL_ID = "haoranxu/ALMA-Human-Parallel"  # configs "xx-en", splits train/validation
HUB_TEST_ID = "haoranxu/WMT22-Test"  # configs "src-tgt", split test, column named "src-tgt"

ALMA_SOURCES = ("alma", "hub", HUB_TEST_ID)  # the sources whose test split is ALMA's (WMT22; WMT21 for is)
ALMA_WMT21 = ("is-en", "en-is")  # ALMA's Icelandic test sets come from WMT21 (WMT22 had no Icelandic)
WMT24_DIRECTIONS = EN_XX  # wmt24/wmt24.jsonl: the WMT24 general test set, en->xx only

TATOEBA_CODES = {"cs": "ces", "de": "deu", "is": "isl", "ru": "rus", "zh": "zho"}
TATOEBA_VERSION = "v2021-08-07"

SOURCES_HELP = (
    "'alma' (local ALMA layout), 'hub' or a hub dataset id (owner/name), "
    "'wmt24' (local JSON lines, test only), 'tatoeba', or a path to a .jsonl file"
)


# --------------------------------------------------------------------------- types


class DataError(ValueError):
    """A missing file, an unknown direction or split, or a malformed record."""


class UnknownDirection(DataError, UnknownDirectionError):
    """A direction outside the study's ten; caught by DataError, UnknownDirectionError, ValueError."""


class DataLeakError(AssertionError):
    """Test data would feed calibration, selection or training (an AssertionError on purpose: see
    :mod:`studylib.core.leakage`, whose guards raise it)."""


@dataclass(frozen=True)
class Example:
    """One sentence pair in one direction.

    ``meta`` is a tuple of ``(key, value)`` pairs (e.g. ``("line_id", 3)``,
    ``("esa_score", 71.0)``, ``("index", 12)`` = position in the source file), so that
    examples stay hashable and can go into sets.
    """

    src: str
    tgt: str
    direction: str
    meta: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        """The meta value under ``key``, or ``default``."""
        for k, v in self.meta:
            if k == key:
                return v
        return default

    def meta_dict(self) -> dict[str, Any]:
        return dict(self.meta)


# --------------------------------------------------------------------------- helpers


def _direction(direction: str) -> tuple[str, str]:
    try:
        return parse_direction(direction)
    except UnknownDirectionError as exc:
        raise UnknownDirection(str(exc)) from None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


_LAYOUT = "the folder holding alma/, tatoeba/ and wmt24/"


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"missing {what}: {path}")
    return path


def _need_data_file(root: Path, path: Path, what: str) -> Path:
    """``path``, a file under the data root ``root``; if it is missing, one DataError naming it and $STUDYLIB_DATA
    (and, when a whole top folder such as ``alma/`` is absent, saying so: the root is then likely the wrong one)."""
    if path.is_file():
        return path
    top = root / path.relative_to(root).parts[0]
    if not top.is_dir():
        raise DataError(f"missing {what}: {path} ({root} has no {top.name}/; ${ENV_VAR} must name {_LAYOUT})")
    raise DataError(f"missing {what}: {path} (data folder {root}, from root= or ${ENV_VAR})")


def _read_text(path: Path, what: str) -> str:
    _need_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


def normalize(sentence: str) -> str:
    """The form in which sentences are compared for test overlap: whitespace collapsed."""
    return " ".join(sentence.split())


def resolve_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data root: ``path`` if given, else ``$STUDYLIB_DATA``; it must be a folder.

    Unset, missing or not a folder: one DataError naming the path, where it came from, and ``$STUDYLIB_DATA``.
    """
    origin = "as given"
    if path is None:
        path, origin = os.environ.get(ENV_VAR), f"from ${ENV_VAR}"
        if not path:
            raise DataError(f"no data folder: set ${ENV_VAR} to {_LAYOUT} "
                            f"(here: export {ENV_VAR}=../shared/data from the project root) or pass root=")
    root = Path(path).expanduser()
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"data folder {root} ({origin}) {state}; ${ENV_VAR} must name {_LAYOUT}")
    return root


def alma_dir(root: str | os.PathLike | None = None) -> Path:
    return resolve_data_dir(root) / "alma" / "human_written_data"


def _read_lines(path: Path) -> list[str]:
    text = _read_text(path, "text file")
    # split on "\n" only: str.splitlines would also break on U+2028, U+0085 inside sentences
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _read_json(path: Path, what: str) -> Any:
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _pair_from_record(rec: Any, xx: str, where: str, key: str = "translation") -> tuple[str, str]:
    """(xx sentence, en sentence) from ``{key: {xx: ..., "en": ...}}``."""
    try:
        tr = rec[key]
        a, b = tr[xx], tr["en"]
    except (KeyError, TypeError):
        raise DataError(f"{where}: expected {{{key!r}: {{{xx!r}: ..., 'en': ...}}}}, got {str(rec)[:200]!r}") from None
    if not isinstance(a, str) or not isinstance(b, str):
        raise DataError(f"{where}: sentences must be strings, got {str(rec)[:200]}")
    return a.strip(), b.strip()


def _orient(pairs: Iterable[tuple[str, str]], direction: str, extra=(), start: int = 0) -> list[Example]:
    """Turn (xx, en) pairs into examples of ``direction`` (swapping for en->xx).

    ``meta["index"]`` is the pair's position in its file, counting from ``start``.
    """
    src, _ = _direction(direction)
    into_en = src != "en"
    out = []
    for i, (xx_s, en_s) in enumerate(pairs, start):
        s, t = (xx_s, en_s) if into_en else (en_s, xx_s)
        out.append(Example(s, t, direction, (("index", i),) + tuple(extra)))
    return out


# --------------------------------------------------------------------------- plain text


def load_parallel_text(src_path, tgt_path, direction: str) -> list[Example]:
    """Aligned plain-text files (one sentence a line) as examples of ``direction``.

    Different line counts or an empty line are a DataError naming the file(s).
    """
    _direction(direction)
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    src_lines, tgt_lines = _read_lines(src_path), _read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"files not aligned: {src_path} has {len(src_lines)} lines, "
            f"{tgt_path} has {len(tgt_lines)}"
        )
    out = []
    for i, (s, t) in enumerate(zip(src_lines, tgt_lines)):
        s, t = s.strip(), t.strip()
        if not s or not t:
            bad = src_path if not s else tgt_path
            raise DataError(f"{bad}: empty sentence at line {i + 1}")
        out.append(Example(s, t, direction, (("index", i),)))
    return out


# --------------------------------------------------------------------------- ALMA


def _alma_file(root, direction: str, name: str, what: str) -> Path:
    """A file of ALMA's folder for ``direction`` (e.g. ``deen/test.de-en.json``), checked to exist."""
    root = resolve_data_dir(root)
    return _need_data_file(root, alma_dir(root) / pair_code(direction) / name, what)


def _alma_train_pairs(direction: str, root) -> list[tuple[str, str]]:
    xx = non_english(direction)
    src = _alma_file(root, direction, f"train.{xx}-en.{xx}", "ALMA train file")
    tgt = _alma_file(root, direction, f"train.{xx}-en.en", "ALMA train file")
    ex = load_parallel_text(src, tgt, f"{xx}-en")
    return [(e.src, e.tgt) for e in ex]


def _carve_is(pairs: list, split: str) -> list:
    """Icelandic has no dev file: the last IS_DEV_SIZE train pairs are its dev set."""
    if len(pairs) <= IS_DEV_SIZE:
        raise DataError(f"Icelandic train set has only {len(pairs)} pairs; cannot hold out {IS_DEV_SIZE}")
    return pairs[-IS_DEV_SIZE:] if split == "dev" else pairs[:-IS_DEV_SIZE]


def _json_array_pairs(path: Path, xx: str, what: str) -> list[tuple[str, str]]:
    """(xx, en) pairs from a JSON array of ``{"translation": {...}}`` records (ALMA's test and valid files)."""
    records = _read_json(path, what)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON array")
    return [_pair_from_record(r, xx, f"{path} record {i}") for i, r in enumerate(records)]


def load_alma(direction: str, split: str, root=None) -> list[Example]:
    """ALMA's human-written data for one direction and split (see the module doc)."""
    src, tgt = _direction(direction)
    _check_split(split)
    xx = non_english(direction)

    if split == "test":
        path = _alma_file(root, direction, f"test.{src}-{tgt}.json", "ALMA test file")
        return _orient(_json_array_pairs(path, xx, "ALMA test file"), direction)

    if xx == "is":
        pairs = _alma_train_pairs(direction, root)
        start = len(pairs) - IS_DEV_SIZE if split == "dev" else 0
        return _orient(_carve_is(pairs, split), direction, start=start)

    if split == "train":
        return _orient(_alma_train_pairs(direction, root), direction)

    path = _alma_file(root, direction, f"valid.{xx}-en.json", "ALMA valid file")
    return _orient(_json_array_pairs(path, xx, "ALMA valid file"), direction)


def load_few_shot(direction: str, kind: str = "HW-5-shot", root=None) -> list[tuple[str, str]]:
    """ALMA's few-shot examples ``[(source, target), ...]`` for ``direction``."""
    src, tgt = _direction(direction)
    if kind not in FEW_SHOT_KINDS:
        raise DataError(f"unknown few-shot kind {kind!r}: use one of {', '.join(FEW_SHOT_KINDS)}")
    root = resolve_data_dir(root)
    path = _need_data_file(root, alma_dir(root) / kind / f"shots.{src}-{tgt}.json", "few-shot file")
    records = _read_json(path, "few-shot file")
    try:
        return [(r["source"].strip(), r["target"].strip()) for r in records]
    except (KeyError, TypeError, AttributeError):
        raise DataError(f"{path}: expected a JSON array of {{'source': ..., 'target': ...}}") from None


# --------------------------------------------------------------------------- hub


def load_hub(direction: str, split: str, dataset_id: str | None = None, cache_dir=None) -> list[Example]:
    """The same data from the Hugging Face hub (needs the ``datasets`` package and a network).

    test: ``haoranxu/WMT22-Test``, config ``"{src}-{tgt}"``; train/dev:
    ``haoranxu/ALMA-Human-Parallel``, config ``"{xx}-en"``, splits train/validation
    (Icelandic dev: the same carve-out of train as the local loader). Another id with
    the same layout (e.g. ``haoranxu/WMT23-Test``) can be given as ``dataset_id``.
    """
    src, tgt = _direction(direction)
    _check_split(split)
    xx = non_english(direction)
    if dataset_id is None:
        dataset_id = HUB_TEST_ID if split == "test" else HUB_PARALLEL_ID
    local = f"load_split('alma', {direction!r}, {split!r}) with {ENV_VAR} set to a local copy"
    try:
        import datasets  # lazy: an optional dependency, absent on offline machines
    except ImportError:
        raise DataError(f"the `datasets` package is not installed, so {dataset_id} cannot be read; use {local}") from None

    carve = xx == "is" and split == "dev"
    if split == "test":
        config, hub_split = f"{src}-{tgt}", "test"
    else:
        config, hub_split = f"{xx}-en", ("train" if split == "train" or carve else "validation")
    try:
        rows = datasets.load_dataset(dataset_id, config, split=hub_split, cache_dir=cache_dir)
    except Exception as exc:  # offline, unknown id/config: datasets raises many kinds
        why = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(f"could not load {dataset_id} (config {config!r}, split {hub_split!r}: "
                        f"{type(exc).__name__}: {why}); use {local}") from None

    where = f"{dataset_id}/{config}/{hub_split}"
    pairs = []
    for i, row in enumerate(rows):
        key = "translation" if "translation" in row else config
        pairs.append(_pair_from_record(row, xx, f"{where} row {i}", key=key))
    start = 0
    if xx == "is" and split != "test":
        start = len(pairs) - IS_DEV_SIZE if split == "dev" else 0
        pairs = _carve_is(pairs, split)
    return _orient(pairs, direction, extra=(("hub", dataset_id),), start=start)


# --------------------------------------------------------------------------- JSON lines, WMT24, Tatoeba


def load_jsonl(path, directions: Iterable[str] | None = None) -> list[Example]:
    """JSON lines ``{"langs": "en-de", "src": ..., "tgt": ..., ...}`` (course / WMT24 schema).

    Extra scalar fields (``line_id``, ``esa_score``, ...) go into ``meta``. Only rows of
    ``directions`` (default: the study's ten) are kept; others are skipped with a log line.
    """
    path = Path(path)
    if directions is None:
        wanted = set(DIRECTIONS)
    else:
        wanted = set(directions)
        for d in wanted:
            _direction(d)
    out, skipped = [], 0
    for n, line in enumerate(_read_text(path, "JSON-lines file").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            langs, s, t = row["langs"], row["src"], row["tgt"]
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not valid JSON ({exc})") from None
        except (KeyError, TypeError):
            raise DataError(f"{path}:{n}: expected an object with 'langs', 'src', 'tgt', got {line[:200]!r}") from None
        if not all(isinstance(v, str) for v in (langs, s, t)):
            raise DataError(f"{path}:{n}: 'langs', 'src' and 'tgt' must be strings")
        if langs not in wanted:
            skipped += 1
            continue
        meta = tuple(
            (k, v) for k, v in row.items()
            if k not in ("langs", "src", "tgt") and (v is None or isinstance(v, (str, int, float, bool)))
        )
        out.append(Example(s.strip(), t.strip(), langs, meta))
    if skipped:
        log.info("%s: skipped %d rows of other directions", path, skipped)
    return out


def load_tatoeba(direction: str, root=None) -> list[Example]:
    """Tatoeba test set v2021-08-07 for ``direction`` (file order: sorted alphabetically)."""
    _direction(direction)
    code = TATOEBA_CODES[non_english(direction)]
    root = resolve_data_dir(root)
    folder = root / "tatoeba" / "-".join(sorted((code, "eng")))
    stem = f"tatoeba-test-{TATOEBA_VERSION}"
    xx_path = _need_data_file(root, folder / f"{stem}.{code}", "Tatoeba file")
    en_path = _need_data_file(root, folder / f"{stem}.eng", "Tatoeba file")
    if direction.startswith("en-"):
        return load_parallel_text(en_path, xx_path, direction)
    return load_parallel_text(xx_path, en_path, direction)


# --------------------------------------------------------------------------- test-set names


def testset_name(source: str, direction: str | None = None) -> str:
    """The true name of the test set ``load_split(source, direction, "test")`` reads.

    ALMA's layout (``alma``, ``hub``, ``haoranxu/WMT22-Test``): ``wmt21`` for is-en and en-is, ``wmt22`` for the
    other eight directions, and ``wmt22`` with no direction (the name of most of them); ``wmt24``: ``wmt24`` (en->xx
    only: another direction is a DataError); ``tatoeba``; another hub id or a ``.jsonl`` file: its last path part.
    """
    source = str(source)
    if direction is not None:
        _direction(direction)
    if source in ALMA_SOURCES:
        return "wmt21" if direction in ALMA_WMT21 else "wmt22"
    if source == "wmt24" and direction is not None and direction not in WMT24_DIRECTIONS:
        raise DataError(f"wmt24 has no {direction} test set: it holds {', '.join(WMT24_DIRECTIONS)}")
    return source.rsplit("/", 1)[-1]


def testset_names(source: str, directions: Iterable[str] | None = None) -> dict[str, str]:
    """``{direction: true test-set name}`` for ``directions`` (default: the study's ten) of ``source``."""
    return {d: testset_name(source, d) for d in (DIRECTIONS if directions is None else directions)}


def _display_name(name: str) -> str:
    """``wmt22`` -> ``WMT22``, ``tatoeba`` -> ``Tatoeba``; any other name as it is."""
    if name[:3] == "wmt" and name[3:].isdigit():
        return name.upper()
    return "Tatoeba" if name == "tatoeba" else name


def _direction_group(directions: Sequence[str]) -> str:
    """``is-en`` and ``en-is`` -> ``is↔en``; one alone -> ``is→en``; several languages joined by commas."""
    parts = []
    for xx in dict.fromkeys(non_english(d) for d in directions):
        into, out = f"{xx}-en" in directions, f"en-{xx}" in directions
        parts.append(f"{xx}↔en" if into and out else f"{xx}→en" if into else f"en→{xx}")
    return ", ".join(parts)


def testset_label(names: dict[str, str]) -> str:
    """The label of a group of directions from their ``{direction: name}`` (:func:`testset_names`): the name most
    of them share, the others in parentheses, e.g. ``WMT22 (WMT21 for is↔en)``, ``WMT22 (WMT21 for is→en)``,
    ``WMT21``, ``WMT24``; empty for no directions."""
    if not names:
        return ""
    counts: dict[str, list[str]] = {}
    for d, name in names.items():
        counts.setdefault(name, []).append(d)
    main = max(counts, key=lambda n: len(counts[n]))  # ties: the first met
    rest = [f"{_display_name(n)} for {_direction_group(ds)}" for n, ds in counts.items() if n != main]
    return _display_name(main) + (f" ({'; '.join(rest)})" if rest else "")


# --------------------------------------------------------------------------- sampling


def subsample(examples: Sequence[Example], n: int | None, seed: int = 0) -> list[Example]:
    """A deterministic subset of ``n`` examples, in their original order.

    ``n=None`` or ``n >= len`` returns all. The subset is the first ``n`` of a seeded
    permutation, so for one seed smaller subsets are nested in larger ones.
    """
    examples = list(examples)
    if n is None or n >= len(examples):
        return examples
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    return [examples[i] for i in sorted(order[:n])]


def direction_seed(seed: int, direction: str) -> int:
    # stable across runs and Python versions (unlike hash()); different per direction so that
    # xx->en and en->xx do not draw the same underlying pairs
    return zlib.crc32(f"{seed}:{direction}".encode())


def load_split(source: str, direction: str, split: str, n: int | None = None, seed: int = 0, root=None) -> list[Example]:
    """One entry point for every data source; ``n``/``seed`` subsample deterministically.

    ``source``: ``"alma"``; ``"hub"`` or a hub id; ``"wmt24"`` (test only, en->xx only; another direction is one
    DataError naming the directions the file holds);
    ``"tatoeba"`` (one pool: ``split`` ``"train"`` - the study's out-of-domain training
    pool - or ``"test"``, both the whole set); or a path to a ``.jsonl`` file (the file is
    the split).
    """
    _direction(direction)
    _check_split(split)
    source = str(source)
    if source == "alma":
        examples = load_alma(direction, split, root)
    elif source == "wmt24":
        if split != "test":
            raise DataError(f"wmt24 is a test set only; asked for split {split!r}")
        data_root = resolve_data_dir(root)
        path = _need_data_file(data_root, data_root / "wmt24" / "wmt24.jsonl", "WMT24 file")
        rows = load_jsonl(path)
        examples = [e for e in rows if e.direction == direction]
        if not examples:
            held = [d for d in DIRECTIONS if any(e.direction == d for e in rows)]
            have = ", ".join(held) or "none of the study's ten directions"
            raise DataError(f"{path} has no rows for {direction}: it holds {have} (WMT24 is en->xx only)")
    elif source == "tatoeba":
        if split == "dev":
            raise DataError("tatoeba has a single pool: ask for split 'train' (out-of-domain pool) or 'test'")
        examples = load_tatoeba(direction, root)
    elif source.endswith(".jsonl"):
        examples = load_jsonl(source, [direction])
        if not examples:
            raise DataError(f"{source} has no rows for {direction}")
    elif Path(source).exists():
        raise DataError(f"{source}: only .jsonl files can be read as a data source (use {SOURCES_HELP})")
    elif source == "hub" or source.count("/") == 1:
        examples = load_hub(direction, split, dataset_id=None if source == "hub" else source)
    else:
        raise DataError(f"unknown data source {source!r}: use {SOURCES_HELP}")
    return subsample(examples, n, seed)


def balanced_sample(
    directions: Iterable[str], per_direction: int, split: str = "train", seed: int = 0, root=None, source: str = "alma"
) -> list[Example]:
    """``per_direction`` examples from each direction (calibration sets). Never test data."""
    if split == "test":
        raise DataLeakError("balanced_sample feeds calibration/training: it refuses split='test'")
    out = []
    for d in directions:
        pool = load_split(source, d, split, root=root)
        if len(pool) < per_direction:
            raise DataError(f"{source} {d} {split} has {len(pool)} examples, fewer than {per_direction} requested")
        out.extend(subsample(pool, per_direction, direction_seed(seed, d)))
    return out
