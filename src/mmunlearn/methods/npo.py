"""Negative Preference Optimization (NPO; Zhang et al. 2024, "Negative Preference Optimization").

L_NPO(θ) = -(2/β) · E_(x,y)∈D_forget [ log σ( -β · log( π_θ(y|x) / π_ref(y|x) ) ) ]

per sequence, as the NPO paper defines it (MLLMU-Bench baselines/NPO.py applies it to batch-mean
losses instead). As β → 0 its gradient becomes GA's on the summed answer log-likelihood; for large
log-ratios it saturates, which is what keeps NPO from collapsing the model. π_ref is selectable:
``reference: retain`` — the model fine-tuned on the retain set only (MLLMU-Bench's choice, stage
``finetune_retain``) — or ``vanilla``. log π_ref is computed once per forget example before training,
so the reference model is never held in memory next to the one being trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmunlearn.methods.common import sequence_logprobs
from mmunlearn.methods.registry import forget_objective


def npo_loss(logprobs: torch.Tensor, reference_logprobs: torch.Tensor, beta: float) -> torch.Tensor:
    log_ratio = logprobs - reference_logprobs
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


@forget_objective("npo", reference_logprobs=True)
def negative_preference(model, inputs: dict, method) -> torch.Tensor:
    batch = inputs["forget"]
    logprobs, _ = sequence_logprobs(model, batch)
    return npo_loss(logprobs, batch["reference_logprob"], method.beta)
