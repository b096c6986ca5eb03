"""Tests of studylib.core.prompts: exact prompt strings, chat rendering, output cutting, training text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from studylib.core.data import Example
from studylib.core.prompts import STYLES, alma_prompt, build_prompts, cut_output, training_text

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DE = Example("Die Ware hat unter 20 Euro gekostet.", "The goods cost less than 20 euros.", "de-en")
ZH = Example("Hello.", "你好。", "en-zh")
SHOTS = [("Eins.", "One."), ("Zwei.", "Two."), ("Drei.", "Three.")]


class FakeTokenizer:
    """Records what apply_chat_template receives and renders ChatML by hand."""

    def __init__(self):
        self.calls = []

    def apply_chat_template(self, messages, **kwargs):
        self.calls.append((messages, kwargs))
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return body + ("<|im_start|>assistant\n" if kwargs.get("add_generation_prompt") else "")


def test_alma_prompt_exact():
    assert build_prompts([DE, ZH], "alma") == [
        "Translate this from German to English:\nGerman: Die Ware hat unter 20 Euro gekostet.\nEnglish:",
        "Translate this from English to Chinese:\nEnglish: Hello.\nChinese:",
    ]
    assert alma_prompt("Halló.", "is-en") == "Translate this from Icelandic to English:\nIcelandic: Halló.\nEnglish:"


def test_alma_fewshot_exact():
    (p,) = build_prompts([DE], "alma-fewshot", shots=2, shot_pairs=SHOTS)
    assert p == (
        "Translate this from German to English:"
        "\nGerman: Eins.\nEnglish: One."
        "\nGerman: Zwei.\nEnglish: Two."
        "\nGerman: Die Ware hat unter 20 Euro gekostet.\nEnglish:"
    )
    # zero shots is exactly the zero-shot prompt; a mapping selects shots per direction
    assert build_prompts([DE], "alma-fewshot", shots=0, shot_pairs=SHOTS) == build_prompts([DE], "alma")
    mixed = build_prompts([DE, ZH], "alma-fewshot", shots=1, shot_pairs={"de-en": SHOTS, "en-zh": [("A.", "甲。")]})
    assert mixed[1] == "Translate this from English to Chinese:\nEnglish: A.\nChinese: 甲。\nEnglish: Hello.\nChinese:"


def test_fewshot_errors():
    with pytest.raises(ValueError, match="only 3"):
        build_prompts([DE], "alma-fewshot", shots=4, shot_pairs=SHOTS)
    with pytest.raises(ValueError, match="several directions"):
        build_prompts([DE, ZH], "alma-fewshot", shots=1, shot_pairs=SHOTS)
    with pytest.raises(ValueError, match="no entry for en-zh"):
        build_prompts([ZH], "alma-fewshot", shots=1, shot_pairs={"de-en": SHOTS})
    with pytest.raises(ValueError, match="takes no shots"):
        build_prompts([DE], "alma", shots=2)
    with pytest.raises(ValueError):
        build_prompts([DE], "alma-fewshot", shots=-1, shot_pairs=SHOTS)


_DATA = Path(os.environ.get("STUDYLIB_DATA") or Path(__file__).resolve().parents[1] / ".." / "shared" / "data")


@pytest.mark.skipif(not (_DATA / "alma").is_dir(), reason=f"shared data folder not found at {_DATA}")
def test_fewshot_reads_hw_shots_from_data(monkeypatch):
    monkeypatch.setenv("STUDYLIB_DATA", str(_DATA))
    (p,) = build_prompts([DE], "alma-fewshot", shots=5)
    assert p.startswith(
        "Translate this from German to English:\nGerman: Die Lehrstellen beim Kreis sind offenbar sehr begehrt."
        "\nEnglish: The apprenticeship positions at the district are apparently very coveted.\nGerman: "
    )
    assert p.count("\nGerman: ") == 6 and p.endswith("\nGerman: Die Ware hat unter 20 Euro gekostet.\nEnglish:")


def test_tower_prompt_uses_chat_template():
    tok = FakeTokenizer()
    (p,) = build_prompts([DE], "tower", tokenizer=tok)
    message = "Translate the following text from German into English.\nGerman: Die Ware hat unter 20 Euro gekostet.\nEnglish:"
    assert tok.calls == [([{"role": "user", "content": message}], {"add_generation_prompt": True, "tokenize": False})]
    assert p == f"<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ValueError, match="tokenizer"):
        build_prompts([DE], "tower")
    with pytest.raises(ValueError, match="takes no shots"):
        build_prompts([DE], "tower", shots=1, tokenizer=tok)


def test_tower_prompt_with_a_real_transformers_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers.models import WordLevel

    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")), unk_token="<unk>"
    )
    tok.chat_template = CHATML
    (p,) = build_prompts([ZH], "tower", tokenizer=tok)
    assert p == (
        "<|im_start|>user\nTranslate the following text from English into Chinese.\nEnglish: Hello.\nChinese:"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_unknown_style_lists_allowed():
    with pytest.raises(ValueError) as err:
        build_prompts([DE], "chatml")
    assert all(s in str(err.value) for s in STYLES)


@pytest.mark.parametrize(
    "text, expected",
    [
        (" The goods cost less than 20 euros.\nGerman: Noch ein Satz.", "The goods cost less than 20 euros."),
        ("Hello.", "Hello."),
        ("  Hello.  \r\nmore", "Hello."),
        ("\n\n  Second line answer.\nthird", "Second line answer."),  # leading blank lines skipped, as in ALMA
        ("", ""),
        (" \n \n", ""),
    ],
)
def test_cut_output(text, expected):
    assert cut_output(text) == expected


def test_training_text():
    prompt, target = training_text(DE, "alma")
    assert prompt == build_prompts([DE], "alma")[0]
    assert target == " The goods cost less than 20 euros.\n"
    assert cut_output(target) == DE.tgt  # what the model learns is what cut_output keeps
    tok = FakeTokenizer()
    prompt, target = training_text(ZH, "tower", tokenizer=tok)
    assert prompt.endswith("<|im_start|>assistant\n") and target == "你好。\n"
    with pytest.raises(ValueError):
        training_text(DE, "tower")
    with pytest.raises(ValueError, match="few-shot"):
        training_text(DE, "alma-fewshot")
    with pytest.raises(ValueError, match="unknown prompt style"):
        training_text(DE, "nope")
