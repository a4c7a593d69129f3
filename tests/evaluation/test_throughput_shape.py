"""The throughput benchmark's random-weight LLaVA-1.5-7B stand-in has the real model's shape."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from mmunlearn.config import DataConfig
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.evaluation.engine import Request, score_options
from mmunlearn.models.prompts import IMAGE_INPUTS, encode_prompt
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from tests.conftest import SMALL_DATA
from tests.models.test_tiny import SMALL_ARCH

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import eval_throughput

LLAVA_15_7B_PARAMETERS = 7_063_427_072  # llava-hf/llava-1.5-7b-hf's safetensors index


@pytest.fixture(scope="module")
def study():
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    return build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)[1], benchmark


def test_llava_7b_shape_matches_the_released_model(study):
    processor, benchmark = study
    model, shaped = eval_throughput.shaped_model("llava-1.5-7b", processor, torch.device("meta"))  # no memory
    assert sum(p.numel() for p in model.parameters()) == LLAVA_15_7B_PARAMETERS
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    encoded = encode_prompt(shaped, "Who is this?", benchmark.full[0].image)
    assert encoded[IMAGE_INPUTS]["pixel_values"].shape[-2:] == (336, 336)
    image_token = model.config.image_token_index
    assert int((encoded["input_ids"] == image_token).sum()) == 576  # (336 / 14)², as the real processor expands


def test_shaped_model_runs_the_fast_protocol(study, monkeypatch):
    processor, benchmark = study
    small = {"vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "image_size": 28, "patch_size": 14, "projection_dim": 16},
             "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "num_key_value_heads": 2, "vocab_size": 32064, "max_position_embeddings": 512},
             "vision_feature_layer": -2}
    monkeypatch.setitem(eval_throughput.SHAPES, "small", small)
    model, shaped = eval_throughput.shaped_model("small", processor, torch.device("cpu"))
    requests = [Request("Who is this?", benchmark.full[0].image), Request("Name a city.", None)]
    scores = score_options(model.float(), shaped, requests, batch_size=2, desc="")
    assert len(scores) == 2 and all(len(s) == 4 and all(v <= 0 for v in s.values()) for s in scores)


def test_the_breakdown_counts_matrix_multiplications_only():
    left, right = torch.randn(256, 256), torch.randn(256, 256)

    def multiply_and_add():
        for _ in range(20):
            (left @ right).add_(1.0).relu_()

    matmul, wall = eval_throughput.matmul_seconds(multiply_and_add, torch.device("cpu"))
    assert 0 < matmul <= wall
    none, _ = eval_throughput.matmul_seconds(lambda: (left + right).relu_(), torch.device("cpu"))
    assert none == 0
