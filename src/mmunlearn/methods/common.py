"""What several objectives share: the model's inputs, answer-token log-probabilities, the frozen reference.

The reference (the model before unlearning) costs no second copy: unlearning trains a fresh LoRA
adapter on top of the vanilla weights, so switching that adapter off *is* the vanilla model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from mmunlearn.training.data import IGNORE_INDEX, model_inputs


def answer_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits only where the next token is an answer token: ([n, vocab], targets [n], batch row of each [n]).

    ``logits_to_keep`` projects just those positions onto the vocabulary — the LM head is a large share
    of a small model's cost, and every objective only ever reads answer positions.
    """
    predicts_answer, targets = answer_positions(batch["labels"])
    logits = model(**model_inputs(model, batch), logits_to_keep=predicts_answer).logits
    return logits, targets, predicts_answer.nonzero()[:, 0]


def answer_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the next token is a labelled one ([batch, seq] mask), and those tokens in order ([n])."""
    predicts_answer = torch.zeros_like(labels, dtype=torch.bool)
    predicts_answer[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return predicts_answer, labels[:, 1:][predicts_answer[:, :-1]]


def answer_nll(model, batch: dict) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens (labels ≠ -100) over the batch."""
    logits, targets, _ = answer_logits(model, batch)
    return F.cross_entropy(logits.float(), targets)


def answer_logprobs(logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor,
                    batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: Σ_t log p(y_t | x, y_<t) over its answer tokens, and how many there are."""
    picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    totals = torch.zeros(batch_size, dtype=picked.dtype, device=picked.device).index_add(0, rows, picked)
    return totals, torch.bincount(rows, minlength=batch_size)


def sequence_logprobs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(answer | prompt) of each row of ``batch`` and its answer length."""
    return answer_logprobs(*answer_logits(model, batch), batch_size=batch["labels"].shape[0])


def layer_output(model, batch: dict, layer: int | None) -> torch.Tensor:
    """Hidden states after decoder layer ``layer`` (1-based; ``None``: the middle one), [batch, seq, hidden]."""
    hidden = model(**model_inputs(model, batch), output_hidden_states=True).hidden_states
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
