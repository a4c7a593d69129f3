from __future__ import annotations

import pytest
import torch

import mmunlearn.evaluation.engine as engine
from mmunlearn.evaluation.engine import Request, generate_replies, sample_replies, score_options
from mmunlearn.evaluation.prefix import (
    first_step,
    image_token_id,
    plan_prefix_batches,
    prefix_sharing_is_exact,
    repeated_prompts,
    repeated_prompts_are_exact,
)
from mmunlearn.models.prompts import IMAGE_INPUTS, encode_prompts, mcq_text
from tests.evaluation.test_engine import _slow_reference, tiny  # noqa: F401  (the module-scoped model fixture)


def _face_requests(benchmark) -> list[Request]:
    """Three faces asked four questions each (varied lengths), interleaved with name-only questions."""
    requests = []
    for number, profile in enumerate(benchmark.full[:3]):
        for item in profile.items[:4]:
            options = {letter: f"{item.question[:5 + 3 * number]} {letter}" for letter in "ABCD"}
            requests.append(Request(mcq_text(item.question, options), profile.image))
            requests.append(Request(mcq_text(f"{profile.name}? {item.question}", options), None))
    return requests


def test_questions_about_one_face_share_its_prefix_and_the_rest_run_whole(tiny):  # noqa: F811
    model, processor, benchmark = tiny
    requests = _face_requests(benchmark)
    encoded = encode_prompts(processor, [(r.user_text, r.image_png) for r in requests])
    image_token = image_token_id(model)
    batches, alone = plan_prefix_batches(encoded, [r.image_png for r in requests], image_token, batch_size=5)
    shared_rows = [row for batch in batches for row in batch.rows]
    assert sorted(shared_rows + alone) == list(range(len(requests)))  # every question exactly once
    assert sorted(shared_rows) == [i for i, r in enumerate(requests) if r.image_png is not None]
    for batch in batches:
        assert len(batch.rows) <= 5
        for row, prefix in zip(batch.rows, batch.prefix_of_row):
            carrier = batch.prefixes[prefix]
            assert requests[carrier].image_png == requests[row].image_png
            ids = encoded[row]["input_ids"]
            assert torch.equal(ids[:batch.prefix_length], encoded[carrier]["input_ids"][:batch.prefix_length])
            assert (ids[:batch.prefix_length] == image_token).sum() == (ids == image_token).sum() > 0
            assert len(ids) > batch.prefix_length  # a token of its own to score


def test_a_face_asked_once_or_without_a_shared_image_prefix_runs_whole():
    image = 9
    encoded = [{"input_ids": torch.tensor(ids)} for ids in (
        [1, 9, 9, 5, 6], [1, 9, 9, 5, 7],  # face a: prefix [1, 9, 9, 5]
        [1, 9, 9, 4],  # face b, asked once
        [1, 3, 9, 9], [1, 4, 9, 9],  # face c: its image tokens come after the prompts differ
        [1, 9, 9, 8], [1, 9, 9, 8])]  # face d: the same prompt twice keeps a last token of its own
    batches, alone = plan_prefix_batches(encoded, [b"a", b"a", b"b", b"c", b"c", b"d", b"d"], image, batch_size=8)
    assert alone == [2, 3, 4]
    assert {(tuple(b.rows), b.prefix_length) for b in batches} == {((0, 1), 4), ((5, 6), 3)}
    assert plan_prefix_batches(encoded, [b"a"] * 2 + [None] * 5, None, batch_size=8) == ([], list(range(7)))


def test_shared_prefix_scoring_and_generation_equal_whole_prompts_one_at_a_time(tiny):  # noqa: F811
    model, processor, benchmark = tiny
    requests = _face_requests(benchmark)
    for request, scores in zip(requests, score_options(model, processor, requests, batch_size=5)):
        assert scores == pytest.approx(_slow_reference(model, processor, request), abs=1e-4)
    batched = generate_replies(model, processor, requests, batch_size=5, max_new_tokens=6)
    alone = [generate_replies(model, processor, [r], batch_size=1, max_new_tokens=6)[0] for r in requests]
    assert batched == alone


class _OtherAfterCachedPrefix(torch.nn.Module):
    """A model that computes a row on top of a cached prefix differently from its whole prompt (as one
    whose positions are not plain token counts would): the engine must notice and run whole prompts."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, **inputs):
        output = self.model(**inputs)
        if inputs.get("past_key_values") is not None and "cache_position" in inputs:
            output.logits = output.logits + torch.linspace(0, 5, output.logits.shape[-1])
        return output


def test_a_model_that_computes_shared_prefixes_differently_is_evaluated_on_whole_prompts(tiny):  # noqa: F811
    model, processor, benchmark = tiny
    requests = _face_requests(benchmark)
    encoded = encode_prompts(processor, [(r.user_text, r.image_png) for r in requests])
    batches, _ = plan_prefix_batches(encoded, [r.image_png for r in requests], image_token_id(model), batch_size=5)
    pad = processor.tokenizer.pad_token_id
    other = _OtherAfterCachedPrefix(model)
    assert prefix_sharing_is_exact(model, encoded, batches[0], pad)
    assert not prefix_sharing_is_exact(other, encoded, batches[0], pad)
    for request, scores in zip(requests, score_options(other, processor, requests, batch_size=5)):
        assert scores == pytest.approx(_slow_reference(model, processor, request), abs=1e-4)


def test_samples_of_one_prompt_continue_its_cache_as_the_whole_prompt_would(tiny):  # noqa: F811
    model, processor, benchmark = tiny
    requests = _face_requests(benchmark)[:7]  # faces and names of varied lengths: left padding
    encoded = encode_prompts(processor, [(r.user_text, r.image_png) for r in requests])
    pad = processor.tokenizer.pad_token_id
    inputs = repeated_prompts(model, encoded, list(range(len(requests))), pad, repeats=3)
    assert inputs["input_ids"].shape[0] == 3 * len(requests)
    assert inputs["past_key_values"].get_seq_length() == inputs["input_ids"].shape[1] - 1  # all but the last token
    with torch.no_grad():
        first = model(**first_step(model, inputs)).logits[:, -1].float().log_softmax(-1)
    for copy in range(3 * len(requests)):
        alone = encoded[copy // 3]
        whole = {"input_ids": alone["input_ids"][None], **alone.get(IMAGE_INPUTS, {})}
        with torch.no_grad():
            expected = model(**whole).logits[0, -1].float().log_softmax(-1)
        assert torch.allclose(first[copy], expected, atol=1e-4)


class _OtherOnACache(torch.nn.Module):
    """A model that continues a filled cache differently from a whole prompt: samples must not use one."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, **inputs):
        cache = inputs.get("past_key_values")
        continues = cache is not None and cache.get_seq_length() > 0
        output = self.model(**inputs)
        if continues:
            output.logits = output.logits + torch.linspace(0, 5, output.logits.shape[-1])
        return output

    def generate(self, **inputs):
        return self.model.generate(**inputs)


def test_sampling_repeats_a_prompts_cache_only_where_that_is_exact(tiny, monkeypatch):  # noqa: F811
    model, processor, benchmark = tiny
    requests = _face_requests(benchmark)[:4]
    encoded = encode_prompts(processor, [(r.user_text, r.image_png) for r in requests])
    pad = processor.tokenizer.pad_token_id
    other = _OtherOnACache(model)
    assert repeated_prompts_are_exact(model, encoded, 0, pad)
    assert not repeated_prompts_are_exact(other, encoded, 0, pad)
    used = []
    real = engine.repeated_prompts
    monkeypatch.setattr(engine, "repeated_prompts", lambda *args, **kwargs: used.append(args[0]) or real(*args, **kwargs))
    for sampled in (model, other):
        sample_replies(sampled, processor, requests, samples=3, seed=0, batch_size=4, max_new_tokens=4)
    assert used == [model]  # the model whose cache continues exactly, not the other
