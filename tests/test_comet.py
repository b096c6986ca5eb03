"""COMET through unbabel-comet from a tiny local checkpoint built in the test (no network)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("comet")
import torch  # noqa: E402

from studylib.core import comet as sc  # noqa: E402

try:
    from tiny_comet import build_tiny_comet
except ImportError:  # tests/ imported as a package
    from tests.tiny_comet import build_tiny_comet

SOURCES = [
    "Die Katze sitzt auf der Matte.",
    "Das Haus ist rot.",
    "Ein großer Hund.",
    "Der Baum ist sehr, sehr groß " * 20,  # longer than the tiny encoder: truncated
    "",
]
HYPS = ["the cat sat on the mat", "the house is red", "a big dog", "the tree is big " * 20, ""]
REFS = ["The cat sits on the mat.", "The house is red.", "A big dog.", "The tree is big.", "x"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return build_tiny_comet(tmp_path_factory.mktemp("tiny_comet"))


def test_score_comet_returns_finite_scores_of_right_length(tiny_ckpt):
    out = sc.score_comet(SOURCES, HYPS, REFS, tiny_ckpt.ckpt, batch_size=2, gpus=0)
    assert set(out) == {"score", "segments", "checkpoint"}
    assert len(out["segments"]) == len(SOURCES)
    assert all(isinstance(x, float) and math.isfinite(x) for x in out["segments"])
    assert out["score"] == pytest.approx(sum(out["segments"]) / len(SOURCES))
    assert out["checkpoint"] == str(tiny_ckpt.ckpt.absolute())


def test_model_directory_form_gives_same_scores_and_is_deterministic(tiny_ckpt):
    a = sc.score_comet(SOURCES, HYPS, REFS, tiny_ckpt.ckpt, batch_size=2, gpus=0)
    b = sc.score_comet(SOURCES, HYPS, REFS, tiny_ckpt.model_dir, batch_size=2, gpus=0)
    assert a == b


def test_loaded_model_carries_the_checkpoint_weights(tiny_ckpt):
    model = sc._load_model(str(tiny_ckpt.ckpt.absolute()), None, tiny_ckpt.ckpt.stat().st_mtime_ns)
    saved = torch.load(tiny_ckpt.ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), saved[name]), name
    # The patched encoder returns every layer, as COMET's layerwise attention expects.
    enc = model.encoder
    batch = enc.prepare_sample(["the cat sat"])
    out = enc(batch["input_ids"], batch["attention_mask"])
    assert len(out["all_layers"]) == enc.num_layers == 3
    assert out["sentemb"].shape == (1, 16)


def test_transformers5_fix_is_idempotent():
    from comet.encoders.xlmr import XLMREncoder

    sc.apply_transformers5_fix()
    first = XLMREncoder.forward
    sc.apply_transformers5_fix()
    assert XLMREncoder.forward is first
    assert getattr(first, sc._FIX_MARKER)


@pytest.mark.parametrize(
    "source",
    [
        "Translate this from German to English:\nGerman: Das Haus ist rot.\nEnglish:",
        "translate this from Chinese to English: 你好",
        "Translate the following text from German into English.\nGerman: Hallo",
        "<|im_start|>user\nHallo<|im_end|>",
        "Das Haus ist rot.\nEnglish:",
        "Das Haus ist rot.\n German :",
    ],
)
def test_prompt_as_source_is_refused(tiny_ckpt, source):
    with pytest.raises(ValueError, match=r"sources\[1\] looks like a translation prompt"):
        sc.score_comet(["Ein Hund.", source], ["a dog", "x"], ["A dog.", "x"], tiny_ckpt.ckpt, gpus=0)


def test_plain_sentences_are_not_prompts():
    assert not sc.looks_like_prompt("English: a West Germanic language.")
    assert not sc.looks_like_prompt("Ich lerne Englisch und Deutsch.")
    assert sc.looks_like_prompt("Das ist gut.\nChinese:")


def test_missing_checkpoint_is_one_clear_error(tmp_path):
    missing = tmp_path / "nope" / "model.ckpt"
    with pytest.raises(FileNotFoundError, match="COMET checkpoint not found: .*nope"):
        sc.score_comet(["a"], ["b"], ["c"], missing, gpus=0)
    with pytest.raises(FileNotFoundError, match="no checkpoints/model.ckpt"):
        sc.score_comet(["a"], ["b"], ["c"], tmp_path, gpus=0)


def test_hub_id_is_refused_without_download():
    with pytest.raises(FileNotFoundError, match="hub id.*needs a\\s+local checkpoint"):
        sc.score_comet(["a"], ["b"], ["c"], "Unbabel/wmt22-comet-da", gpus=0)


def test_ckpt_without_hparams_is_refused(tmp_path):
    ckpt = tmp_path / "a" / "checkpoints" / "model.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="hparams.yaml"):
        sc.score_comet(["a"], ["b"], ["c"], ckpt, gpus=0)


def test_bad_inputs_raise_value_error(tiny_ckpt):
    with pytest.raises(ValueError, match="segment counts differ"):
        sc.score_comet(["a", "b"], ["a"], ["a", "b"], tiny_ckpt.ckpt, gpus=0)
    with pytest.raises(ValueError, match="empty"):
        sc.score_comet([], [], [], tiny_ckpt.ckpt, gpus=0)


def test_missing_encoder_files_error_and_pretrained_model_override(tmp_path):
    built = build_tiny_comet(tmp_path / "t", seed=1)
    moved = built.encoder_dir.rename(tmp_path / "elsewhere")
    with pytest.raises(OSError, match="must be a local directory"):
        sc.score_comet(["a"], ["b"], ["c"], built.ckpt, gpus=0)
    out = sc.score_comet(["a"], ["b"], ["c"], built.ckpt, gpus=0, pretrained_model=str(moved))
    assert len(out["segments"]) == 1 and math.isfinite(out["score"])


def test_checkpoint_missing_weights_is_refused(tmp_path):
    built = build_tiny_comet(tmp_path / "t", seed=2)
    ckpt = torch.load(built.ckpt, map_location="cpu", weights_only=True)
    del ckpt["state_dict"]["estimator.ff.0.weight"]
    torch.save(ckpt, built.ckpt)
    with pytest.raises(RuntimeError, match="randomly initialised"):
        sc.score_comet(["a"], ["b"], ["c"], built.ckpt, gpus=0)


def test_the_projects_own_prompts_are_caught():
    prompts = pytest.importorskip("studylib.core.prompts")
    from studylib.core.languages import DIRECTIONS

    for direction in DIRECTIONS:
        src = "Ein Satz." if not direction.startswith("zh") else "一个句子。"
        assert sc.looks_like_prompt(prompts.alma_prompt(src, direction)), direction
        assert sc.looks_like_prompt(prompts.tower_message(src, direction)), direction
        assert not sc.looks_like_prompt(src)
