"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization").

L_SimNPO(θ) = -(2/β) · E_(x,y)∈D_forget [ log σ( -(β/|y|) · log π_θ(y|x) - γ ) ]

Reference-free and length-normalised: a long answer is not forgotten "more" for having more tokens;
γ ≥ 0 is a reward margin (0 in most of the paper's settings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmunlearn.methods.common import sequence_logprobs
from mmunlearn.methods.registry import forget_objective


def simnpo_loss(logprobs: torch.Tensor, lengths: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    return -(2.0 / beta) * F.logsigmoid(-beta * logprobs / lengths.clamp(min=1) - gamma).mean()


@forget_objective("simnpo")
def simple_negative_preference(model, inputs: dict, method) -> torch.Tensor:
    logprobs, lengths = sequence_logprobs(model, inputs["forget"])
    return simnpo_loss(logprobs, lengths, method.beta, method.gamma)
