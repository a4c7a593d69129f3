from __future__ import annotations

import random

import pytest
import torch

from mmunlearn.config import DataConfig
from mmunlearn.data.schema import OPTION_LETTERS
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.evaluation.engine import (
    Request,
    answer_start_token_ids,
    generate_replies,
    sample_replies,
    score_options,
)
from mmunlearn.evaluation.sampling import TopKSampling
from mmunlearn.models.prompts import IMAGE_INPUTS, decode_image, encode_prompt, encode_prompts, mcq_text, render_prompt
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from tests.conftest import SMALL_DATA
from tests.models.test_tiny import SMALL_ARCH


@pytest.fixture(scope="module")
def tiny():
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    model, processor = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    return model.eval(), processor, benchmark


def _random_requests(benchmark, count: int, seed: int) -> list[Request]:
    rng = random.Random(seed)
    words = [item.question for p in benchmark.full for item in p.items]
    requests = []
    for _ in range(count):
        question = " ".join(rng.sample(words, rng.randint(1, 3)))  # varied lengths → real left padding
        options = {letter: rng.choice(words)[: rng.randint(3, 30)] for letter in OPTION_LETTERS}
        image = rng.choice(benchmark.full).image if rng.random() < 0.6 else None
        requests.append(Request(mcq_text(question, options), image))
    return requests


@torch.no_grad()
def _slow_reference(model, processor, request: Request) -> dict[str, float]:
    """One question at a time, no padding: the log-probability of each letter as the first reply token."""
    encoded = encode_prompt(processor, request.user_text, request.image_png)
    inputs = {"input_ids": encoded["input_ids"][None], **encoded.get(IMAGE_INPUTS, {})}
    logprobs = torch.log_softmax(model(**inputs).logits[0, -1].float(), dim=-1)
    letter_ids = [processor.tokenizer(" " + letter, add_special_tokens=False)["input_ids"][0] for letter in "ABCD"]
    return {letter: logprobs[i].item() for letter, i in zip("ABCD", letter_ids)}


def test_chunked_prompt_encoding_equals_one_processor_call_per_prompt(tiny):
    _, processor, benchmark = tiny
    requests = _random_requests(benchmark, 23, seed=2)  # faces and text-only interleaved, varied lengths
    chunked = encode_prompts(processor, [(r.user_text, r.image_png) for r in requests], "Be brief.", chunk_size=4)
    for request, encoded in zip(requests, chunked):
        with_image = request.image_png is not None
        alone = processor(images=[decode_image(request.image_png)] if with_image else None,
                          text=[render_prompt(processor, request.user_text, with_image, "Be brief.")],
                          return_tensors="pt")
        assert torch.equal(encoded["input_ids"], alone["input_ids"][0])
        assert (IMAGE_INPUTS in encoded) == with_image
        if with_image:
            assert list(encoded[IMAGE_INPUTS]) == ["pixel_values"]
            assert torch.equal(encoded[IMAGE_INPUTS]["pixel_values"], alone["pixel_values"])


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_option_scoring_equals_one_at_a_time(tiny, seed):
    model, processor, benchmark = tiny
    requests = _random_requests(benchmark, 13, seed)
    batched = score_options(model, processor, requests, batch_size=5)
    for request, scores in zip(requests, batched):
        reference = _slow_reference(model, processor, request)
        assert scores == pytest.approx(reference, abs=1e-4)


def test_letter_token_ids_come_from_the_tokenizer(tiny):
    _, processor, _ = tiny
    ids = answer_start_token_ids(processor)
    assert len(set(ids)) == 4
    assert [processor.tokenizer.decode([i]).strip() for i in ids] == list("ABCD")


def test_batched_generation_equals_one_at_a_time(tiny):
    model, processor, benchmark = tiny
    requests = _random_requests(benchmark, 6, seed=3)
    batched = generate_replies(model, processor, requests, batch_size=4, max_new_tokens=6)
    alone = [generate_replies(model, processor, [r], batch_size=1, max_new_tokens=6)[0] for r in requests]
    assert batched == alone


def test_top_k_sampling_draws_the_tempered_top_k_distribution():
    logits = torch.tensor([[2.0, 0.5, 1.0, -1.0, 3.0, 0.0]]).repeat(20_000, 1)
    sampler = TopKSampling(temperature=0.5, top_k=3, generator=torch.Generator().manual_seed(0))
    scores = sampler(None, logits)
    drawn = scores.argmax(-1)
    assert torch.isinf(scores).sum(-1).eq(logits.shape[1] - 1).all()  # one token left per row
    frequencies = torch.bincount(drawn, minlength=6).float() / len(drawn)
    expected = torch.zeros(6)
    expected[[4, 0, 2]] = torch.softmax(torch.tensor([3.0, 2.0, 1.0]) / 0.5, dim=0)
    assert torch.allclose(frequencies, expected, atol=0.01)  # outside the top 3: never


def test_sampled_replies_are_seeded_and_greedy_at_top_k_one(tiny):
    model, processor, benchmark = tiny
    requests = _random_requests(benchmark, 6, seed=3)
    sampled = sample_replies(model, processor, requests, samples=3, seed=1, batch_size=4, max_new_tokens=6)
    assert [len(replies) for replies in sampled] == [3] * 6
    assert sampled == sample_replies(model, processor, requests, samples=3, seed=1, batch_size=4, max_new_tokens=6)
    assert sampled != sample_replies(model, processor, requests, samples=3, seed=2, batch_size=4, max_new_tokens=6)
    greedy = generate_replies(model, processor, requests, batch_size=4, max_new_tokens=6)
    top1 = sample_replies(model, processor, requests, samples=2, seed=5, batch_size=4, max_new_tokens=6, top_k=1)
    assert top1 == [[reply, reply] for reply in greedy]
