"""Defenses against the white-box attacks, trained on the logit lens (UnLOK-VQA, Patil et al.).

D_ℓ = softmax(LM head(final norm(h_ℓ))) at each position that predicts a fact token, for the guarded
layers ℓ ∈ L (``lens_layers``; negative = from the top) — the distribution the attacks read
(methods/lens.py, shared with attacks/whitebox.py). y = the fact token predicted there.

- Head Projection defense: (1/|L|) Σ_ℓ [ max(0, D_ℓ(y) − D_ℓ^(k)) + max(0, D_ℓ^(k,bottom) − D_ℓ(y)) ],
  D^(k) the k-th largest and D^(k,bottom) the k-th smallest probability (``lens_k``): the fact is kept
  out of every guarded layer's top-k and bottom-k, the candidate sets HP and PD read. As the
  original, it replaces the erasure loss (margin 0, no stop-gradient).
- Max-Entropy defense: −(1/|L|) Σ_ℓ H(D_ℓ): every guarded layer's lens is flattened, so no token
  stands out there at all.
Use with ``labels_on: fact`` (positions of the fact's tokens); add ``retain: nll`` to keep the rest.
"""

from __future__ import annotations

import torch

from mmunlearn.methods.common import answer_positions, model_inputs, unwrap
from mmunlearn.methods.lens import captured_layer_outputs, lens_logprobs, resolve_layers
from mmunlearn.methods.registry import forget_objective


def answer_lens(model, batch: dict, layers) -> tuple[torch.Tensor, torch.Tensor]:
    """Lens log-probabilities [n, |L|, vocab] at the n positions that predict a labelled token, and
    those tokens [n] — with gradients."""
    inner = unwrap(model)
    chosen = resolve_layers(inner, layers)
    predicts, targets = answer_positions(batch["labels"])
    with captured_layer_outputs(inner, chosen) as captured:
        model(**model_inputs(model, batch), logits_to_keep=1)  # only the hooked states are used
    hidden = torch.stack([captured[number][predicts] for number in chosen], dim=1)  # [n, |L|, hidden]
    return lens_logprobs(inner, hidden), targets


def head_projection_hinge(lens: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """The HP defense's two-sided hinge on lens log-probabilities [n, |L|, vocab]."""
    probs = lens.exp()
    answer = probs.gather(-1, targets[:, None, None].expand(-1, probs.shape[1], 1)).squeeze(-1)
    kth_top = probs.topk(k, dim=-1).values[..., -1]
    kth_bottom = -(-probs).topk(k, dim=-1).values[..., -1]
    return torch.relu(answer - kth_top).mean() + torch.relu(kth_bottom - answer).mean()


def lens_entropy(lens: torch.Tensor) -> torch.Tensor:
    """Mean entropy of lens distributions [..., vocab] given as log-probabilities."""
    return -(lens.exp() * lens).sum(-1).mean()


def lens_layers_exist(model, method) -> None:
    try:
        resolve_layers(unwrap(model), method.lens_layers)
    except ValueError as exc:
        raise ValueError(f"lens_layers: {exc}") from None


@forget_objective("head_projection_defense", check=lens_layers_exist)
def head_projection_defense(model, inputs: dict, method) -> torch.Tensor:
    lens, targets = answer_lens(model, inputs["forget"], method.lens_layers)
    return head_projection_hinge(lens, targets, method.lens_k)


@forget_objective("max_entropy_defense", check=lens_layers_exist)
def max_entropy_defense(model, inputs: dict, method) -> torch.Tensor:
    lens, _ = answer_lens(model, inputs["forget"], method.lens_layers)
    return -lens_entropy(lens)
