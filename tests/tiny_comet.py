"""Build a tiny, random, fully local COMET checkpoint for tests (no network, ~1 s).

Layout written under ``root`` (the layout of a downloaded COMET model, plus the encoder):

    root/encoder/                 config.json + tokenizer.json + tokenizer_config.json
    root/model/hparams.yaml       class_identifier: regression_metric, pretrained_model: <encoder dir>
    root/model/checkpoints/model.ckpt

The encoder is a 2-layer, 16-wide XLM-RoBERTa with a small Unigram vocabulary made here
(special tokens, ASCII characters, a few words); the metric on top is COMET's
``RegressionMetric`` (the wmt22-comet-da architecture) with random weights.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in XLM-R
WORDS = "the a cat dog sat on mat house is red blue big small tree".split()


@dataclass(frozen=True)
class TinyComet:
    model_dir: Path  # contains hparams.yaml and checkpoints/model.ckpt
    ckpt: Path
    encoder_dir: Path


def tiny_vocab() -> list[tuple[str, float]]:
    """Unigram pieces with log-probabilities: whole words beat characters."""
    vocab = [(tok, 0.0) for tok in SPECIAL_TOKENS]
    vocab.append(("\u2581", -3.0))  # the SentencePiece word-boundary mark on its own
    for ch in string.ascii_letters + string.digits + string.punctuation:
        vocab.append((ch, -6.0))
        vocab.append(("\u2581" + ch, -6.5))
    vocab.extend(("\u2581" + w, -4.0) for w in WORDS)
    return vocab


def build_encoder(encoder_dir: Path) -> Path:
    """Save a tiny XLM-R config and tokenizer where ``XLMRobertaTokenizerFast`` /
    ``XLMRobertaConfig.from_pretrained`` (what COMET's encoder calls) find them."""
    from transformers import XLMRobertaConfig, XLMRobertaTokenizer

    vocab = tiny_vocab()
    XLMRobertaTokenizer(vocab=vocab).save_pretrained(encoder_dir)
    XLMRobertaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=66,  # COMET truncates at max_position_embeddings - 4 tokens
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
    ).save_pretrained(encoder_dir)
    return encoder_dir


def build_tiny_comet(root: Path, seed: int = 0) -> TinyComet:
    """Build encoder + random RegressionMetric and save them as a COMET checkpoint."""
    import pytorch_lightning as pl
    import torch
    import yaml
    from comet.models import RegressionMetric

    root = Path(root)
    encoder_dir = build_encoder(root / "encoder")
    torch.manual_seed(seed)
    model = RegressionMetric(
        encoder_model="XLM-RoBERTa",
        pretrained_model=str(encoder_dir),
        hidden_sizes=[32],
        layer_transformation="softmax",
        load_pretrained_weights=False,  # build from config.json, random weights
        local_files_only=True,
    )
    hparams = dict(model.hparams)
    hparams["class_identifier"] = "regression_metric"

    model_dir = root / "model"
    ckpt = model_dir / "checkpoints" / "model.ckpt"
    ckpt.parent.mkdir(parents=True)
    # The parts of a Lightning checkpoint that LightningModule.load_from_checkpoint reads.
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": pl.__version__,
            "epoch": 0,
            "global_step": 0,
        },
        ckpt,
    )
    (model_dir / "hparams.yaml").write_text(yaml.safe_dump(hparams))
    return TinyComet(model_dir=model_dir, ckpt=ckpt, encoder_dir=encoder_dir)
