"""What several objectives share: the model's inputs, answer-token log-probabilities, the frozen reference.

The reference (the model before unlearning) costs no second copy: unlearning trains a fresh LoRA
adapter on top of the vanilla weights, so switching that adapter off *is* the vanilla model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from mmunlearn.training.data import IGNORE_INDEX

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids", "pixel_values")


def model_inputs(batch: dict) -> dict:
    """The tensors a forward pass takes (batches also carry labels and precomputed reference values)."""
    return {key: batch[key] for key in MODEL_INPUTS if key in batch}


def answer_nll(model, batch: dict) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens (labels ≠ -100) over the batch."""
    return model(**model_inputs(batch), labels=batch["labels"]).loss


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """True where a position predicts an answer token (the token after it is labelled)."""
    return labels[:, 1:] != IGNORE_INDEX


def answer_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: Σ_t log p(y_t | x, y_<t) over the answer tokens, and how many there are."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    token_logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = token_logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1), mask.sum(-1)


def sequence_logprobs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(answer | prompt) of each row of ``batch`` and its answer length."""
    return answer_logprobs(model(**model_inputs(batch)).logits, batch["labels"])


def layer_output(model, batch: dict, layer: int | None) -> torch.Tensor:
    """Hidden states after decoder layer ``layer`` (1-based; ``None``: the middle one), [batch, seq, hidden]."""
    hidden = model(**model_inputs(batch), output_hidden_states=True).hidden_states
    depth = len(hidden) - 1
    index = depth // 2 if layer is None else layer
    if not 1 <= index <= depth:
        raise ValueError(f"layer {index} is outside the model's decoder layers 1..{depth}")
    return hidden[index]


def unwrap(model):
    """The peft model inside a DeepSpeed/DDP wrapper."""
    return getattr(model, "module", model)


@contextlib.contextmanager
def frozen_reference(model) -> Iterator[object]:
    """The model before unlearning (the unlearning adapter off), without gradients."""
    peft_model = unwrap(model)
    with torch.no_grad(), peft_model.disable_adapter():
        yield peft_model
