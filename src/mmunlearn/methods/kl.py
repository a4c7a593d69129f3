"""KL retain regulariser: keep the answer distribution on the retain set where the vanilla model had it.

L_KL(θ) = (1/|answer tokens|) Σ_t KL( p_ref(· | x, y_<t) ‖ p_θ(· | x, y_<t) )   on retain batches,
p_ref = the model before unlearning (MLLMU-Bench baselines/KL_Min.py; TOFU's KL baseline).
The reference is the same weights with the unlearning adapter switched off — no second model copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmunlearn.methods.common import answer_logits, frozen_reference
from mmunlearn.methods.registry import retain_regulariser


def answer_kl(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """Mean over answer positions ([n, vocab] logits each) of KL(reference ‖ current)."""
    current = torch.log_softmax(logits.float(), dim=-1)
    reference = torch.log_softmax(reference_logits.float(), dim=-1)
    return F.kl_div(current, reference, log_target=True, reduction="none").sum(-1).mean()


@retain_regulariser("kl")
def retain_kl(model, batch: dict, method) -> torch.Tensor:
    logits, _, _ = answer_logits(model, batch)
    with frozen_reference(model) as reference:
        reference_logits, _, _ = answer_logits(reference, batch)
    return answer_kl(logits, reference_logits)
