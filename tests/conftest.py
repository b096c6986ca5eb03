"""Shared test set-up: the data root and a tiny model, no network."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("STUDYLIB_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_root():
    if not (DATA / "alma").is_dir():
        pytest.skip(f"study data not found at {DATA} (set STUDYLIB_DATA)")
    return DATA


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny random Gemma-3, fp32 on CPU."""
    from studylib.core import models

    return models.load_model(models.TINY_MODEL, dtype="float32", device="cpu")
