"""KL retain regularisers: keep the answer distribution on the retain set where the vanilla model had it.

L_KL(θ) = (1/|answer tokens|) Σ_t KL( p_ref(· | x, y_<t) ‖ p_θ(· | x, y_<t) )   on retain batches,
p_ref = the model before unlearning (TOFU's KL baseline: ``kl``). MLLMU-Bench's KL_Minimization.py
descends on the retain NLL plus that KL (``nll_kl``), both on the same forward pass; it sums the KL over
every position of the sequence (``batchmean``), we average it over the answer tokens, as the NLL is.
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


def _logits_and_reference(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits, targets, _ = answer_logits(model, batch)
    with frozen_reference(model) as reference:
        reference_logits, _, _ = answer_logits(reference, batch)
    return logits, targets, reference_logits


@retain_regulariser("kl")
def retain_kl(model, batch: dict, method) -> torch.Tensor:
    logits, _, reference_logits = _logits_and_reference(model, batch)
    return answer_kl(logits, reference_logits)


@retain_regulariser("nll_kl")
def retain_nll_kl(model, batch: dict, method) -> torch.Tensor:
    logits, targets, reference_logits = _logits_and_reference(model, batch)
    return F.cross_entropy(logits.float(), targets) + answer_kl(logits, reference_logits)
