"""A tiny LoRA-wrapped model and a fixed batch with answer-only labels, shared by the objective tests."""

from __future__ import annotations

import pytest
import torch

from mmunlearn.config import DataConfig, LoraSettings
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.models.loading import add_lora
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from mmunlearn.training.data import TextExample, collate, encode_example
from tests.conftest import SMALL_DATA
from tests.models.test_tiny import SMALL_ARCH


@pytest.fixture(scope="module")
def tiny():
    """(peft model with a fresh adapter, processor, a 4-row batch: two with a face, two text-only)."""
    torch.manual_seed(0)
    benchmark = generate_benchmark(DataConfig(**SMALL_DATA))
    model, processor = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    model = add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    profile = benchmark.full[0]
    pairs = [p for p in profile.finetune_pairs if p.modality == "text"][:4]
    examples = [encode_example(processor, TextExample(p.question, p.answer)) for p in pairs]
    return model, processor, collate(examples, processor.tokenizer.pad_token_id)


def perturb_adapter(model, scale: float = 0.5) -> None:
    """Move the adapter's B matrices off zero, so the model differs from its reference."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def reset_adapter(model) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.zero_()
