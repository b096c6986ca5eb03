"""Stand-ins the tests share for what needs a GPU: a vLLM engine that decodes with the tiny model on the CPU."""

import torch


class HFAsVLLM:
    """Stands in for :class:`studylib.core.engines.VLLMEngine`: each prompt's ids decoded alone (no padding) by the
    tiny model, greedy, stopped by the first stop id and keeping it -- what vLLM hands back."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.calls, self.closed = [], False

    def generate(self, prompt_ids, *, max_new_tokens, stop_ids, seed=0, progress=True, repetition_penalty=1.0):
        self.calls.append({"ids": [list(i) for i in prompt_ids], "max_new_tokens": max_new_tokens,
                           "stop_ids": list(stop_ids), "seed": seed, "repetition_penalty": repetition_penalty})
        rows = []
        for ids in prompt_ids:
            x = torch.tensor([ids])
            with torch.inference_mode():
                out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                          num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=list(stop_ids),
                                          pad_token_id=self.tokenizer.pad_token_id, temperature=None, top_p=None,
                                          top_k=None, repetition_penalty=repetition_penalty)
            rows.append(out[0, x.shape[1]:].tolist())
        return rows

    def info(self):
        return {"engine": "vllm", "version": "stand-in", "batch_invariant": True}

    def close(self):
        self.closed = True
