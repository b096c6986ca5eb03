import pytest

from studylib.core.generation import generate, stop_token_ids

PROMPTS = [f"Translate this from German to English:\nGerman: Satz {i} {'lang ' * i}\nEnglish:" for i in range(11)]


def test_same_outputs_at_batch_1_and_batch_64(tiny):
    model, tok = tiny
    one = generate(model, tok, PROMPTS, batch_size=1, max_new_tokens=12, progress=False)
    many = generate(model, tok, PROMPTS, batch_size=64, max_new_tokens=12, progress=False)
    assert one.texts == many.texts
    assert one.new_tokens == many.new_tokens
    assert len(one.texts) == len(PROMPTS)


def test_outputs_come_back_in_prompt_order(tiny):
    model, tok = tiny
    full = generate(model, tok, PROMPTS, batch_size=4, max_new_tokens=8, progress=False)
    rev = generate(model, tok, PROMPTS[::-1], batch_size=4, max_new_tokens=8, progress=False)
    assert rev.texts == full.texts[::-1]


def test_stops_at_newline_and_respects_max_new_tokens(tiny):
    model, tok = tiny
    stops = set(stop_token_ids(tok))
    assert tok.eos_token_id in stops
    assert tok.convert_tokens_to_ids("Ċ") in stops  # the byte-level newline
    out = generate(model, tok, PROMPTS, batch_size=4, max_new_tokens=10, progress=False)
    assert all(1 <= n <= 10 for n in out.new_tokens)
    assert all("\n" not in t for t in out.texts)


def test_bad_arguments(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="batch_size"):
        generate(model, tok, PROMPTS, batch_size=0)
    tok.padding_side = "right"
    try:
        with pytest.raises(ValueError, match="left"):
            generate(model, tok, PROMPTS)
    finally:
        tok.padding_side = "left"


def test_evaluation_decodes_all_directions_together_and_scores_each_on_its_own(tiny, data_root):
    """One pool of prompts across directions (wide batches on a GPU); each direction's hypotheses are exactly what
    decoding that direction alone gives, and its scores are computed on them."""
    from studylib.core import evaluation, metrics
    from studylib.runs.params import EvalParams

    model, tok = tiny
    cfg = EvalParams(data_dir=str(data_root), directions=["de-en", "en-zh", "is-en"], n_test=3, batch_size=4,
                     max_new_tokens=6)
    test_sets = evaluation.load_test_sets(cfg)
    ev = evaluation.evaluate(model, tok, cfg, test_sets, progress=False)
    for direction, examples in test_sets.items():
        alone = generate(model, tok, evaluation.make_prompts(cfg, direction, examples, tok), batch_size=4,
                         max_new_tokens=6, progress=False)
        assert ev.outputs[direction]["hyp"] == alone.texts
        assert ev.metrics[direction]["new_tokens"] == alone.total_new_tokens
        tgt = direction.split("-")[1]
        assert ev.metrics[direction]["chrf++"] == metrics.corpus_scores(alone.texts, [e.tgt for e in examples], tgt,
                                                                        ["chrf++"])["chrf++"]
    assert ev.new_tokens == sum(m["new_tokens"] for m in ev.metrics.values())


def test_other_test_sets_are_decoded_in_the_same_pool_and_scored_apart(tiny, data_root):
    """also_test (e.g. WMT24, en->xx only): its segments join the pool and come back as their own scores, never
    mixed into the main test sets'; the hypotheses are those of decoding them alone."""
    from studylib.core import evaluation
    from studylib.runs.params import EvalParams, ParamsError

    model, tok = tiny
    cfg = EvalParams(data_dir=str(data_root), directions=["de-en", "en-de"], n_test=2, batch_size=4, max_new_tokens=6,
                     also_test=["wmt24"])
    test_sets, also = evaluation.load_test_sets(cfg), evaluation.load_also_test_sets(cfg)
    assert list(also) == ["wmt24"] and list(also["wmt24"]) == ["en-de"]  # WMT24 holds en->xx only
    ev = evaluation.evaluate(model, tok, cfg, test_sets, progress=False, also=also)
    plain = evaluation.evaluate(model, tok, cfg, test_sets, progress=False)
    assert ev.metrics == plain.metrics and ev.outputs == plain.outputs
    alone = generate(model, tok, evaluation.make_prompts(cfg, "en-de", also["wmt24"]["en-de"], tok), batch_size=4,
                     max_new_tokens=6, progress=False)
    scores = ev.also["wmt24"]["metrics"]["en-de"]
    assert scores["n"] == 2 and scores["new_tokens"] == alone.total_new_tokens
    assert ev.also["wmt24"]["averages"]["en-xx"]["chrf++"] == scores["chrf++"]
    assert evaluation.also_block(ev) == {"also_tests": ev.also} and evaluation.also_block(plain) == {}
    for bad, why in ((["alma"], "other than test_source"), (["wmt24", "wmt24"], "also_test"), (["flores"], "also_test")):
        with pytest.raises(ParamsError, match=why):
            EvalParams(data_dir=str(data_root), directions=["de-en"], also_test=bad)
    with pytest.raises(ParamsError, match="none of the run's directions"):
        EvalParams(data_dir=str(data_root), directions=["de-en"], also_test=["wmt24"])


class _RecordingBar:
    """Stands in for tqdm in ``generation``: records the bar's settings and every update."""

    made: list = []

    def __init__(self, total=None, desc=None, disable=False, unit="it", **kwargs):
        self.total, self.unit, self.disable, self.n, self.updates = total, unit, disable, 0, []
        _RecordingBar.made.append(self)

    def update(self, n=1):
        self.updates.append(n)
        self.n += n

    def set_postfix_str(self, s="", refresh=True):
        self.postfix = s

    def close(self):
        pass


PROMPTS_130 = [f"Translate this from German to English:\nGerman: Satz {i} {'lang ' * (i % 13)} Wort{i * 7}\nEnglish:"
               for i in range(130)]


def _recording(monkeypatch):
    from studylib.core import generation

    _RecordingBar.made = []
    monkeypatch.setattr(generation, "tqdm", _RecordingBar)
    return _RecordingBar.made


def test_progress_counts_segments_batch_by_batch(tiny, monkeypatch):
    """130 prompts in batches of 64: the bar (total = segments, unit 'seg') moves at least three times."""
    model, tok = tiny
    bars = _recording(monkeypatch)
    out = generate(model, tok, PROMPTS_130, batch_size=64, max_new_tokens=4)
    (bar,) = bars
    assert (bar.total, bar.unit, bar.disable) == (130, "seg", False)
    assert len([n for n in bar.updates if n]) >= 3 and bar.n == 130 == len(out.texts)


def test_progress_advances_inside_one_wide_batch_and_changes_nothing(tiny, monkeypatch):
    """One batch of 130: the bar advances as segments reach their stop token during decoding, not only at the
    end of the batch, and the outputs are exactly those decoded without a bar (and at batch size 1).

    The tiny random model rarely emits a newline, so its most frequent token is made a stop token here; rows
    then stop at many different steps, as a real model's translations do."""
    import collections

    from studylib.core import generation

    model, tok = tiny
    enc = tok(PROMPTS_130, return_tensors="pt", padding=True)
    raw = model.generate(**enc, do_sample=False, max_new_tokens=16, pad_token_id=tok.pad_token_id,
                         eos_token_id=[tok.eos_token_id])
    common = collections.Counter(raw[:, enc["input_ids"].shape[1]:].flatten().tolist()).most_common(1)[0][0]
    monkeypatch.setattr(generation, "stop_token_ids", lambda t: sorted({t.eos_token_id, common}))
    plain = generate(model, tok, PROMPTS_130, batch_size=1000, max_new_tokens=16, progress=False)
    bars = _recording(monkeypatch)
    shown = generate(model, tok, PROMPTS_130, batch_size=1000, max_new_tokens=16)
    (bar,) = bars
    assert (bar.total, bar.unit) == (130, "seg") and bar.n == 130
    assert len([n for n in bar.updates if n]) >= 3  # several reports within the single batch
    assert shown.texts == plain.texts and shown.new_tokens == plain.new_tokens
    assert len(set(plain.new_tokens)) >= 3  # rows did stop at different steps
    one = generate(model, tok, PROMPTS_130[:20], batch_size=1, max_new_tokens=16, progress=False)
    assert one.texts == plain.texts[:20]
