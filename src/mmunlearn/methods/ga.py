"""Gradient Ascent (GA): raise the forget set's answer loss.

L_GA(θ) = -L_NLL(θ; D_forget)   (Thudi et al. 2022; MLLMU-Bench baselines/GA.py, here answer-only.)
Unbounded: left alone it destroys the model, so steps and learning rate keep it in check.
With ``retain: nll`` it is Gradient Difference (Liu et al. 2022), with ``retain: kl`` KL Minimisation.
"""

from __future__ import annotations

import torch

from mmunlearn.methods.common import answer_nll
from mmunlearn.methods.registry import forget_objective


@forget_objective("ga")
def gradient_ascent(model, inputs: dict, method) -> torch.Tensor:
    return -answer_nll(model, inputs["forget"])
