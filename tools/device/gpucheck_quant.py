"""GPU smoke check of the quantization methods on a 2-layer Gemma-3 with Gemma-3-270M's layer shapes (random weights).

Run on the device (no data, no model download):  python3 tools/device/gpucheck_quant.py [method ...]
Prints one JSON line per method: kernel(s) recorded, decode ms/token at batch 1 and 16, logit drift vs bf16.
"""

import json
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.getcwd())
os.environ.setdefault("STUDYLIB_CACHE", "/tmp/studylib-cache")

from transformers import Gemma3ForCausalLM, Gemma3TextConfig  # noqa: E402

from studylib.core import models  # noqa: E402
from studylib.methods import build  # noqa: E402

TEXTS = [
    "Translate this from German to English:\nGerman: Guten Morgen, wie geht es dir heute?\nEnglish: Good morning, how are you today?",
    "Translate this from English to Czech:\nEnglish: The weather is very nice today in the city.\nCzech: Dnes je ve městě velmi hezké počasí.",
    "Translate this from Russian to English:\nRussian: Я люблю читать книги по вечерам.\nEnglish: I love reading books in the evening.",
    "Translate this from English to Chinese:\nEnglish: Where is the railway station, please?\nChinese: 请问火车站在哪里？",
    "Translate this from Icelandic to English:\nIcelandic: Ég er að læra íslensku í skólanum.\nEnglish: I am learning Icelandic at school.",
] * 8


def make_model(tok):
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=640, intermediate_size=2048, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                           max_position_embeddings=2048, sliding_window=512,
                           layer_types=["sliding_attention", "full_attention"], pad_token_id=0, eos_token_id=1,
                           bos_token_id=2)
    torch.manual_seed(0)
    m = Gemma3ForCausalLM(cfg)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.normal_(0, 0.3)
    return m.to("cuda", torch.bfloat16).eval()


def decode_ms(model, tok, batch, new=16):
    enc = tok([TEXTS[0]] * batch, return_tensors="pt", padding=True).to("cuda")
    kw = dict(do_sample=False, max_new_tokens=new, min_new_tokens=new, pad_token_id=tok.pad_token_id)
    with torch.inference_mode():
        model.generate(**enc, **kw)
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.generate(**enc, **kw)
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / new


def main(names):
    tok = models.load_model(models.TINY_MODEL, "float32", "cpu")[1]
    ref_model = make_model(tok)
    enc = tok(TEXTS[:4], return_tensors="pt", padding=True).to("cuda")
    with torch.no_grad():
        ref = ref_model(**enc).logits.float()
    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                      "bf16_ms_b1": decode_ms(ref_model, tok, 1), "bf16_ms_b16": decode_ms(ref_model, tok, 16)}),
          flush=True)
    from studylib.methods._w8a8 import int_mm_mode

    shapes = [(640, 1024), (640, 256), (1024, 640), (640, 2048), (2048, 640)]
    print(json.dumps({"int_mm_mode": {f"{k}x{n}": int_mm_mode(torch.device("cuda"), k, n) for k, n in shapes}}),
          flush=True)
    del ref_model
    for spec in names:
        name, _, kw = spec.partition(":")
        params = json.loads(kw) if kw else {}
        start = time.perf_counter()
        try:
            model = make_model(tok)
            method = build(name, **params)
            q = method.apply(model, tok, TEXTS if method.needs_calibration else None)
            took = time.perf_counter() - start
            with torch.no_grad():
                out = q(**enc).logits.float()
            d = method.describe()
            info = {k: d.get(k) for k in ("kernel", "backend_fallback", "int_mm_shapes", "smoothing_check",
                                           "fallback_modules", "damp_raised", "native_backend", "checkpoint_bytes",
                                           "quantize_seconds", "load_seconds") if d.get(k) is not None}
            if "nf4" in d:
                info["nf4_kernel"] = d["nf4"].get("kernel")
            print(json.dumps({"method": spec, "ok": True, "apply_s": round(took, 1),
                              "logit_drift": (out - ref).abs().max().item() / (ref.max() - ref.min()).item(),
                              "ms_b1": decode_ms(q, tok, 1), "ms_b16": decode_ms(q, tok, 16), **info}, default=str),
                  flush=True)
            del q, model
        except Exception as err:  # noqa: BLE001
            print(json.dumps({"method": spec, "ok": False, "error": f"{type(err).__name__}: {err}"[:800],
                              "trace": traceback.format_exc()[-1500:]}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:] or ["bnb-int8", "bnb-nf4", 'gptq:{"bits": 4, "group_size": 128}', "smoothquant",
                          "smoothquant-nf4", 'gptq:{"bits": 3, "group_size": 128}',
                          'gptq:{"bits": 8, "group_size": 128}', 'gptq:{"bits": 2, "group_size": 128}',
                          'gptq:{"bits": 4, "group_size": 128, "act_order": true}',
                          'gptq:{"bits": 4, "group_size": 128, "backend": "exllama_v2"}'])
