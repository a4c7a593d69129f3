"""Train toward another answer to each forget question: Empty Response and Error Injection (UnLOK-VQA).

L(θ) = L_NLL(θ; x, y_alt) = -E_x Σ_t log π_θ(y_alt,t | x, y_alt,<t)

- ``empty_response``: y_alt is a refusal ("I don't know.", ...; training/examples.py REFUSALS) — the
  original's "dummy" / "I don't know" target;
- ``error_injection``: y_alt is the trained answer with a wrong fact, another person's value of the
  same attribute (the original's ``alt_ans``); with ``labels_on: fact`` only the wrong fact is trained.
Pair with ``retain: nll`` to hold the rest of the model in place.
"""

from __future__ import annotations

import torch

from mmunlearn.methods.common import answer_nll
from mmunlearn.methods.registry import forget_objective


def alternative_nll(model, inputs: dict, method) -> torch.Tensor:
    return answer_nll(model, inputs["forget_alternative"])


forget_objective("empty_response", alternative="idk")(alternative_nll)
forget_objective("error_injection", alternative="wrong")(alternative_nll)
