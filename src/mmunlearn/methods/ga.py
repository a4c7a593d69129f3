"""Gradient Ascent (GA): raise the forget set's answer loss.

L_GA(θ) = -L_NLL(θ; D_forget)   (Thudi et al. 2022; MLLMU-Bench baselines/GA.py, here answer-only.)
Unbounded: left alone it destroys the model, so steps and learning rate keep it in check.
"""

from __future__ import annotations

import torch

from mmunlearn.methods.nll import answer_nll
from mmunlearn.methods.registry import forget_objective


@forget_objective("ga")
def gradient_ascent(model, batch: dict) -> torch.Tensor:
    return -answer_nll(model, batch)
