from __future__ import annotations

import random

import pytest
import torch

from mmunlearn.config import DataConfig
from mmunlearn.data.schema import OPTION_LETTERS
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.evaluation.engine import Request, answer_start_token_ids, generate_replies, score_options
from mmunlearn.models.prompts import encode_prompt, mcq_text
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
    inputs = {"input_ids": encoded["input_ids"][None]}
    if "pixel_values" in encoded:
        inputs["pixel_values"] = encoded["pixel_values"][None]
    logprobs = torch.log_softmax(model(**inputs).logits[0, -1].float(), dim=-1)
    letter_ids = [processor.tokenizer(" " + letter, add_special_tokens=False)["input_ids"][0] for letter in "ABCD"]
    return {letter: logprobs[i].item() for letter, i in zip("ABCD", letter_ids)}


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
