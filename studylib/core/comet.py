"""COMET scoring from a LOCAL checkpoint, through unbabel-comet 2.2.7 under transformers 5.

Three things this module takes care of:

1. **Local checkpoints only.** The study never downloads models. ``checkpoint`` is a
   path to a ``.ckpt`` file, or to a model directory in the layout of a downloaded COMET
   model (``<dir>/hparams.yaml`` + ``<dir>/checkpoints/model.ckpt``). A hub id such as
   ``Unbabel/wmt22-comet-da`` is refused with a clear error. The encoder named by the
   checkpoint's ``pretrained_model`` hyper-parameter (``xlm-roberta-large`` for
   wmt22-comet-da) supplies the tokenizer and config; it is loaded with
   ``local_files_only=True``, so it must be a local directory or already be in the
   Hugging Face cache. ``pretrained_model=`` overrides it with a local directory.

2. **transformers 5.** unbabel-comet 2.2.7 pins ``transformers<5``. Its
   ``XLMREncoder.forward`` unpacks ``self.model(..., return_dict=False)`` into three
   values (last hidden state, pooler output, all hidden states). transformers 5 drops
   ``None`` entries from that tuple, and COMET's encoder has no pooler, so two values
   come back and COMET fails with "not enough values to unpack".
   :func:`apply_transformers5_fix` replaces that one method with a version that asks
   for ``return_dict=True`` and reads the fields by name (see its docstring).

3. **Sources are sources.** COMET compares the translation with the *source sentence*.
   Passing the whole LLM prompt ("Translate this from German to English:\\nGerman: ...
   \\nEnglish:") instead silently changes every score; :func:`check_sources` refuses
   anything that looks like a prompt.

``import comet`` is deferred to the functions that need it: it is slow, and it calls
``logging.basicConfig(level=INFO)`` on import.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path

from studylib.core.languages import LANG_NAMES

#: Marker set on the replacement ``forward`` so that the fix is applied once only.
_FIX_MARKER = "_studylib_transformers5_fix"

# A prompt, not a sentence: the ALMA instruction ("Translate this from X to Y:"), the
# Tower one ("Translate the following text from X into Y."), a chat-template turn marker,
# or a line that starts with a study language name and a colon after a line break
# ("...\nGerman: ..."), which every prompt style of studylib.core.prompts contains.
_PROMPT_INSTRUCTION = re.compile(
    r"translate\s+(?:this|the\s+following(?:\s+text)?)\s+from"
    r"|<\|im_start\|>|<start_of_turn>",
    re.IGNORECASE,
)
_PROMPT_LANG_LINE = re.compile(
    r"\n[ \t]*(?:" + "|".join(re.escape(n) for n in LANG_NAMES.values()) + r")[ \t]*:"
)

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------- the guard


def looks_like_prompt(text: str) -> bool:
    """True if ``text`` looks like an LLM translation prompt: it contains "Translate
    this from" or "Translate the following text from" (any case), a chat turn marker
    (``<|im_start|>``, ``<start_of_turn>``), or a line break followed by
    ``<Language>:`` for a study language (e.g. ``"\\nGerman:"``)."""
    return bool(_PROMPT_INSTRUCTION.search(text) or _PROMPT_LANG_LINE.search(text))


def check_sources(sources: Sequence[str]) -> None:
    """Raise ``ValueError`` if any source looks like an LLM prompt rather than the
    source sentence (see :func:`looks_like_prompt`). COMET must see the sentence only."""
    for i, src in enumerate(sources):
        if looks_like_prompt(src):
            snippet = src if len(src) <= 80 else src[:77] + "..."
            raise ValueError(
                f"sources[{i}] looks like a translation prompt, not a source sentence: "
                f"{snippet!r}. COMET must be given the source sentence itself."
            )


# --------------------------------------------------------------------------- transformers 5


def apply_transformers5_fix() -> None:
    """Make COMET's XLM-R encoder work under transformers 5; idempotent.

    Replaces ``comet.encoders.xlmr.XLMREncoder.forward`` (inherited by the XLM-R XL,
    MiniLM and RemBERT encoders) with an equivalent that calls the Hugging Face model
    with ``return_dict=True`` and takes ``last_hidden_state`` and ``hidden_states`` by
    name instead of unpacking a tuple whose length changed in transformers 5. The
    returned dict (sentemb = first-token state, wordemb, all_layers, attention_mask) is
    exactly what the original returned. Valid under transformers 4 as well, so it is
    applied unconditionally. Idempotent: a marker on the function prevents re-patching.
    """
    from comet.encoders.xlmr import XLMREncoder

    if getattr(XLMREncoder.forward, _FIX_MARKER, False):
        return

    def forward(self, input_ids, attention_mask, **kwargs):
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            return_dict=True,
        )
        last = out.last_hidden_state
        return {
            "sentemb": last[:, 0, :],
            "wordemb": last,
            "all_layers": out.hidden_states,
            "attention_mask": attention_mask,
        }

    setattr(forward, _FIX_MARKER, True)
    forward.__doc__ = "XLM-R forward, patched by studylib.core.comet for transformers 5."
    XLMREncoder.forward = forward


# --------------------------------------------------------------------------- checkpoints


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The ``.ckpt`` file of a local COMET checkpoint.

    Accepts the ``.ckpt`` file or a model directory holding ``checkpoints/model.ckpt``.
    Either way ``hparams.yaml`` must sit two levels above the ``.ckpt`` (COMET reads the
    model class from it). Raises ``FileNotFoundError`` naming what is missing, with a
    specific message when ``checkpoint`` looks like a hub id.
    """
    text = str(checkpoint)
    path = Path(text).expanduser()
    if not path.exists():
        if _HUB_ID.fullmatch(text) and not text.endswith(".ckpt"):
            raise FileNotFoundError(
                f"COMET checkpoint {text!r} is not a local path; it looks like a "
                "Hugging Face hub id. This study never downloads models: COMET needs a "
                "local checkpoint (the model directory with checkpoints/model.ckpt and "
                "hparams.yaml, or the .ckpt file itself)."
            )
        raise FileNotFoundError(f"COMET checkpoint not found: {text}")
    if path.is_dir():
        ckpt = path / "checkpoints" / "model.ckpt"
        if not ckpt.is_file():
            raise FileNotFoundError(
                f"COMET model directory {text} has no checkpoints/model.ckpt (expected {ckpt})"
            )
    else:
        ckpt = path
    # absolute(), not resolve(): in a Hugging Face cache snapshot model.ckpt is a
    # symlink into blobs/, and hparams.yaml must be found next to the link.
    ckpt = ckpt.absolute()
    hparams = ckpt.parents[1] / "hparams.yaml"
    if not hparams.is_file():
        raise FileNotFoundError(
            f"COMET checkpoint {ckpt} needs {hparams} (two levels above the .ckpt), "
            "as in a downloaded COMET model directory"
        )
    return ckpt


def _check_all_weights_loaded(model, ckpt: Path) -> None:
    """Raise if a parameter of the built model was not in the checkpoint.

    COMET loads with ``strict=False``; if transformers renamed a parameter, the encoder
    would silently keep its *random* initial value and every score would be garbage.
    The checkpoint is memory-mapped, so this costs little even for 2 GB files.
    """
    import torch

    stored = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=True)
    stored_keys = set(stored.get("state_dict", stored))
    missing = sorted(name for name, _ in model.named_parameters() if name not in stored_keys)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise RuntimeError(
            f"COMET checkpoint {ckpt} lacks {len(missing)} parameter(s) of the model built "
            f"from it ({shown}); they would stay randomly initialised"
        )


@functools.lru_cache(maxsize=1)
def _load_model(ckpt: str, pretrained_model: str | None, mtime_ns: int):
    """Load (and keep the last) COMET model; the patch is applied before building it.

    ``mtime_ns`` is only part of the cache key: a rewritten checkpoint is reloaded.
    """
    apply_transformers5_fix()
    from comet.models import load_from_checkpoint, str2model

    try:
        if pretrained_model is None:
            model = load_from_checkpoint(ckpt, local_files_only=True)
        else:
            # Same as comet.load_from_checkpoint, with the encoder's location overridden.
            import torch
            import yaml

            hparams_file = Path(ckpt).parents[1] / "hparams.yaml"
            hparams = yaml.safe_load(hparams_file.read_text())
            model_class = str2model[hparams["class_identifier"]]
            overrides = {"pretrained_model": pretrained_model}
            if hparams.get("layer_transformation") == "sparsemax_patch":
                overrides["layer_transformation"] = "softmax"  # as comet 2.2.7 does
            model = model_class.load_from_checkpoint(
                checkpoint_path=ckpt,
                load_pretrained_weights=False,
                map_location=torch.device("cpu"),
                strict=False,
                local_files_only=True,
                **overrides,
            )
    except OSError as err:
        raise OSError(
            f"could not load the encoder files (tokenizer/config) of COMET checkpoint "
            f"{ckpt}: its pretrained_model must be a local directory or already be in "
            f"the Hugging Face cache (no download is attempted); pass pretrained_model= "
            f"to point at a local copy. Cause: {err}"
        ) from err
    _check_all_weights_loaded(model, Path(ckpt))
    model.eval()
    return model


# --------------------------------------------------------------------------- scoring


def score_comet(
    sources: Sequence[str],
    hyps: Sequence[str],
    refs: Sequence[str],
    checkpoint: str | Path,
    batch_size: int = 16,
    gpus: int | None = None,
    *,
    pretrained_model: str | None = None,
    progress_bar: bool = False,
) -> dict:
    """Reference-based COMET of ``hyps`` from a local checkpoint.

    Args:
        sources: the source *sentences* (a prompt raises ``ValueError``).
        hyps, refs: translations and references, parallel to ``sources``.
        checkpoint: a ``.ckpt`` path or a COMET model directory (see module docstring).
        batch_size: inference batch size.
        gpus: 1 or 0; ``None`` means 1 if CUDA is available, else 0.
        pretrained_model: optional local directory replacing the checkpoint's
            ``pretrained_model`` (encoder tokenizer + config).
        progress_bar: show Lightning's prediction progress bar.

    Returns:
        ``{"score": system score (mean of segments), "segments": [...],
        "checkpoint": resolved .ckpt path}``.

    The last loaded model is cached (keyed by checkpoint path and ``pretrained_model``).
    """
    from studylib.core.segments import check_parallel

    sources, hyps, refs = check_parallel(sources=sources, hyps=hyps, refs=refs)
    check_sources(sources)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ckpt = resolve_checkpoint(checkpoint)
    if gpus is None:
        import torch

        gpus = 1 if torch.cuda.is_available() else 0
    if gpus not in (0, 1):
        raise ValueError(f"gpus must be 0 or 1 (multi-GPU COMET is not supported), got {gpus!r}")

    model = _load_model(str(ckpt), pretrained_model, ckpt.stat().st_mtime_ns)
    samples = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hyps, refs)]
    out = model.predict(samples, batch_size=batch_size, gpus=gpus, progress_bar=progress_bar)
    segments = [float(x) for x in out.scores]
    if len(segments) != len(samples) or not all(math.isfinite(x) for x in segments):
        raise RuntimeError(
            f"COMET returned {len(segments)} scores for {len(samples)} segments "
            "or non-finite values"
        )
    return {
        "score": float(sum(segments) / len(segments)),
        "segments": segments,
        "checkpoint": str(ckpt),
    }
