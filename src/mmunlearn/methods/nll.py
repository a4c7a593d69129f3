"""Negative log-likelihood of the answer tokens: fine-tuning, and the retain term of GradDiff.

L_NLL(θ; B) = -(1/|answer tokens|) Σ log p_θ(y_t | x, y_<t)   — the paper's answer-only objective
(MLLMU-Bench baselines/GA_Difference.py trains on the whole sequence; we mask the prompt).
"""

from __future__ import annotations

import torch

from mmunlearn.methods.common import answer_nll
from mmunlearn.methods.registry import retain_regulariser


@retain_regulariser("nll")
def retain_nll(model, batch: dict, method) -> torch.Tensor:
    return answer_nll(model, batch)
