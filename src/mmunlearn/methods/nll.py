"""Negative log-likelihood of the answer tokens (labels ≠ -100): fine-tuning, and the retain term of GradDiff.

L_NLL(θ; B) = -(1/|answer tokens|) Σ log p_θ(y_t | x, y_<t)   — the paper's answer-only objective.
"""

from __future__ import annotations

import torch

from mmunlearn.methods.registry import retain_regulariser


def answer_nll(model, batch: dict) -> torch.Tensor:
    return model(**batch).loss


@retain_regulariser("nll")
def retain_nll(model, batch: dict) -> torch.Tensor:
    return answer_nll(model, batch)
