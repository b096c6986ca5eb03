"""The benchmark's static-cache decode (each step one CUDA graph on CUDA, uncaptured elsewhere) and the measurement
of one model: the figures, their floor ratio, the host load, and a capture that fails leaving the eager figures."""

import pytest
import torch

from studylib.bench import arch, graph, schema
from studylib.bench.measure import measure


def _sharp_tiny(dtype="float32"):
    """The tiny Llama with weights of std 0.1 instead of 0.02: its attention then depends on the positions and the
    cached keys, so a decode loop that gets either wrong gives other tokens (at std 0.02 it would not notice)."""
    model = arch.build_random("tiny-llama", dtype, "cpu", seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _generate(model, ids, n):
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                         min_new_tokens=n, pad_token_id=0, temperature=None, top_p=None, top_k=None)
    return out[:, ids.shape[1]:]


@pytest.fixture(scope="module")
def fp16():
    return arch.build_random("tiny-llama", "float16", "cpu", seed=0)


def _measure(model, **kw):
    return measure("fp16", model, kernel="dense", bandwidth=1e9, new_tokens=6, repeats=2, warmup=0, prompt_tokens=4,
                   large_batch=2, prefill_tokens=8, storage=False, **kw)


def test_the_static_cache_greedy_loop_gives_generates_tokens(fp16):
    ids = torch.randint(3, 512, (2, 5), generator=torch.Generator().manual_seed(1))
    model = _sharp_tiny()
    expected = _generate(model, ids, 12)
    assert len(set(expected.flatten().tolist())) > 8  # varied tokens: a wrong loop has room to differ
    assert torch.equal(graph.greedy_static(model, ids, 12), expected)

    # the same loop with the position not advanced: other tokens, so the comparison above can fail
    decoder = graph.StaticDecoder(model, ids, 12)

    def stuck():
        with torch.no_grad():
            out = decoder._forward(decoder.ids, decoder.position)
            decoder.ids.copy_(out.logits[:, -1].argmax(-1, keepdim=True))

    decoder._step = stuck
    assert not torch.equal(decoder.tokens(12, captured=False), expected)
    assert torch.equal(graph.greedy_static(fp16, ids[:1], 8), _generate(fp16, ids[:1], 8))  # the benchmark's model


def test_graph_decode_on_the_cpu_is_the_uncaptured_static_step_and_says_so(fp16):
    got = graph.graph_decode_time_per_token(fp16, batch_size=2, prompt_tokens=4, new_tokens=5, warmup=0, repeats=2)
    # a difference of two timings: on a busy CPU it can come out 0, never missing
    assert got["mode"] == "static-cache eager (cpu)" and got["seconds"] >= 0 and got["check"] is None
    assert schema.static_mode(torch.device("cuda", 1)) == schema.GRAPH_MODE_CUDA == "cuda-graph"
    assert schema.static_mode("cpu") == "static-cache eager (cpu)"


def test_a_measurement_has_the_graph_figures_their_floor_ratio_and_the_host_load(fp16):
    m = _measure(fp16)
    assert m.graph_mode == "static-cache eager (cpu)" and m.graph_error is None
    assert min(m.graph_b1_ms, m.graph_large_ms, m.decode_b1_ms) >= 0  # present (a difference: 0 on a busy CPU)
    assert m.graph_b1_ms == 0 or m.graph_floor_ratio == pytest.approx(m.graph_b1_ms / m.floor_ms)
    assert m.peak_memory_bytes is None and m.storage_bytes is None  # CPU; storage not asked for
    load = m.host_load
    assert load["cpus"] >= 1 and set(load) == {"cpus", "eager", "graph"}
    assert all(len(load[s][w]) == 3 for s in ("eager", "graph") for w in ("before", "after"))
    row = schema.ratios([m.as_dict()])[0]
    assert all(row[k] == 1 for k in ("graph_b1_ratio", "graph_large_ratio") if row[k] is not None)  # to itself

    off = _measure(fp16, graph_decode=False)
    assert off.graph_mode == schema.GRAPH_OFF and off.graph_b1_ms is None and off.graph_large_ms is None
    assert off.decode_b1_ms >= 0 and "graph" not in off.host_load
    skipped = _measure(fp16, graph_skip="declared not capturable")
    assert skipped.graph_mode.startswith("not attempted: declared not capturable") and skipped.graph_error is None


def test_a_step_that_cannot_be_captured_leaves_the_eager_figures_and_its_error(monkeypatch, fp16):
    def refuse(self):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(graph.StaticDecoder, "_step", refuse)
    m = _measure(fp16)
    assert min(m.decode_b1_ms, m.decode_large_ms) >= 0 and m.prefill_ms > 0 and m.floor_ms > 0  # kept
    assert m.graph_b1_ms is None and m.graph_large_ms is None and m.graph_floor_ratio is None
    assert m.graph_mode.startswith("failed: batch 1: RuntimeError: CUDA error: operation not permitted")
    assert "batch 2: RuntimeError" in m.graph_error

    # only the larger batch fails: batch 1 is kept, the error names batch 2
    monkeypatch.undo()
    original_step = graph.StaticDecoder._step

    def refuse_large(self):
        if self.ids.shape[0] > 1:
            raise RuntimeError("out of memory")
        original_step(self)

    monkeypatch.setattr(graph.StaticDecoder, "_step", refuse_large)
    m = _measure(fp16)
    assert m.graph_mode == "static-cache eager (cpu)" and m.graph_b1_ms >= 0 and m.graph_large_ms is None
    assert m.graph_error == "batch 2: RuntimeError: out of memory"


@pytest.mark.gpu
def test_on_cuda_each_step_is_captured_and_replays_the_uncaptured_tokens():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = arch.build_random("tiny-llama", "float16", "cuda", seed=0)
    got = graph.graph_decode_time_per_token(model, batch_size=2, prompt_tokens=4, new_tokens=8, warmup=1, repeats=3)
    assert got["mode"] == "cuda-graph" and got["seconds"] > 0
    assert got["check"]["same_tokens_as_uncaptured"] and got["check"]["token_agreement"] == 1.0
