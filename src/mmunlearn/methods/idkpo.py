"""IdkPO: prefer "I don't know" to the private answer (DPO with a refusal as the chosen reply).

L_IdkPO(θ) = -E [ log σ( β · [ log(π_θ(y_idk|x)/π_ref(y_idk|x)) - log(π_θ(y|x)/π_ref(y|x)) ] ) ]

Rafailov et al. 2023 (DPO) applied as in TOFU / open-unlearning's IdkDPO: y = the forget answer,
y_idk = one of several refusals (training/examples.py REFUSALS). π_ref = the vanilla model, whose
log-probabilities of both replies are computed once before training. Pair it with ``retain: nll``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmunlearn.methods.common import sequence_logprobs
from mmunlearn.methods.registry import forget_objective


def preference_loss(chosen: torch.Tensor, chosen_reference: torch.Tensor, rejected: torch.Tensor,
                    rejected_reference: torch.Tensor, beta: float) -> torch.Tensor:
    margin = (chosen - chosen_reference) - (rejected - rejected_reference)
    return -F.logsigmoid(beta * margin).mean()


@forget_objective("idkpo", reference_logprobs=True, alternative="idk")
def idk_preference(model, inputs: dict, method) -> torch.Tensor:
    forget, refusal = inputs["forget"], inputs["forget_alternative"]
    rejected, _ = sequence_logprobs(model, forget)
    chosen, _ = sequence_logprobs(model, refusal)
    return preference_loss(chosen, refusal["reference_logprob"], rejected, forget["reference_logprob"], method.beta)
