"""KL retain regulariser: keep the answer distribution on the retain set where the vanilla model had it.

L_KL(θ) = (1/|answer tokens|) Σ_t KL( p_ref(· | x, y_<t) ‖ p_θ(· | x, y_<t) )   on retain batches,
p_ref = the model before unlearning (MLLMU-Bench baselines/KL_Min.py; TOFU's KL baseline).
The reference is the same weights with the unlearning adapter switched off — no second model copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmunlearn.methods.common import answer_mask, frozen_reference, model_inputs
from mmunlearn.methods.registry import retain_regulariser


def answer_kl(logits: torch.Tensor, reference_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over answer positions of KL(reference ‖ current)."""
    mask = answer_mask(labels)
    current = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    reference = torch.log_softmax(reference_logits[:, :-1].float(), dim=-1)
    per_token = F.kl_div(current, reference, log_target=True, reduction="none").sum(-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


@retain_regulariser("kl")
def retain_kl(model, batch: dict, method) -> torch.Tensor:
    logits = model(**model_inputs(batch)).logits
    with frozen_reference(model) as reference:
        reference_logits = reference(**model_inputs(batch)).logits
    return answer_kl(logits, reference_logits, batch["labels"])
