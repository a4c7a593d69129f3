"""Fact Erasure (UnLOK-VQA, Patil et al.): minimise the probability of the private fact.

L_FE(θ) = E_x [ π_θ(y | x) ] = E_x [ exp( Σ_t log π_θ(y_t | x, y_<t) ) ]

The probability, not the log-probability (the original's ``exp(-nll)``): bounded below by 0, its
gradient fades once the fact is unlikely, so unlike Gradient Ascent it stops pushing when the fact
is gone. With ``labels_on: fact`` y is the fact's tokens inside the trained answer (the answer before
it is context), as the original erases a short VQA answer. With ``prompt_prefixes`` this is the Input
Rephrasing defense: the same loss over the prompt and perturbed copies of it.
"""

from __future__ import annotations

import torch

from mmunlearn.methods.common import sequence_logprobs
from mmunlearn.methods.registry import forget_objective


@forget_objective("fact_erasure")
def fact_erasure(model, inputs: dict, method) -> torch.Tensor:
    logprobs, _ = sequence_logprobs(model, inputs["forget"])
    return logprobs.exp().mean()
