"""Representation Misdirection for Unlearning (RMU; Li et al. 2024, "The WMDP Benchmark").

forget:  L_f(θ) = E_x∈D_forget  mean_t ‖ h_ℓ^θ(x)_t − c·u ‖²        (u: a fixed random unit vector)
retain:  L_r(θ) = E_x∈D_retain  mean_t ‖ h_ℓ^θ(x)_t − h_ℓ^ref(x)_t ‖²

h_ℓ is the output of decoder layer ``layer`` (default: the middle one), averaged over every real
token of prompt and answer; c = ``steering_coeff``. Scrambling the forget activations toward noise
makes later layers unable to read the fact; the retain term pins everything else to the reference
(the unlearning adapter switched off). Use ``forget: rmu, retain: rmu`` with the paper's weight α as
``retain_weight``.
"""

from __future__ import annotations

import torch

from mmunlearn.methods.common import frozen_reference, layer_output, unwrap
from mmunlearn.methods.registry import forget_objective, retain_regulariser


def control_vector(size: int, coeff: float, seed: int, like: torch.Tensor) -> torch.Tensor:
    """c·u with u uniform in [0,1)^size, normalised — fixed by the method's seed."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.rand(size, generator=generator)
    return (coeff * direction / direction.norm()).to(like.device, like.dtype)


def masked_mse(hidden: torch.Tensor, target: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    per_token = ((hidden.float() - target.float()) ** 2).mean(-1)
    mask = attention_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def layer_exists(model, method) -> None:
    count = unwrap(model).config.get_text_config().num_hidden_layers
    if method.layer is not None and not 1 <= method.layer <= count:
        raise ValueError(f"layer: {method.layer} is not one of the model's decoder layers 1..{count}")


@forget_objective("rmu", check=layer_exists)
def misdirect_forget(model, inputs: dict, method) -> torch.Tensor:
    batch = inputs["forget"]
    hidden = layer_output(model, batch, method.layer)
    target = control_vector(hidden.shape[-1], method.steering_coeff, method.seed, hidden)
    return masked_mse(hidden, target.expand_as(hidden), batch["attention_mask"])


@retain_regulariser("rmu", check=layer_exists)
def keep_retain_representations(model, batch: dict, method) -> torch.Tensor:
    hidden = layer_output(model, batch, method.layer)
    with frozen_reference(model) as reference:
        reference_hidden = layer_output(reference, batch, method.layer)
    return masked_mse(hidden, reference_hidden, batch["attention_mask"])
