"""Registries of forget objectives and retain regularisers, and their composition into one loss.

A method in params.yaml is ``{forget: <objective>, retain: <regulariser or null>, retain_weight: w, ...}``;
its loss is ``forget_weight * forget(model, inputs, method) + retain_weight * retain(model, retain_batch, method)``.
GradDiff = ga + nll and KL Minimisation = ga + kl are lines in params.yaml, not classes. An objective
declares what its batches must carry: reference log-probabilities computed before training (NPO,
IdkPO) or an alternative answer per forget example (IdkPO's refusals).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

LossFn = Callable[..., torch.Tensor]  # (model, batch_or_inputs, method_config) -> scalar loss


@dataclass(frozen=True)
class Objective:
    name: str
    loss: LossFn
    reference_logprobs: bool = False  # batches carry log π_ref(answer | prompt), computed once before training
    alternative: str | None = None  # each forget example also comes with this kind of answer ("idk")
    # what the objective needs of the model, checked before training: ValueError("<method field>: why")
    check: Callable[[Any, Any], None] | None = None


FORGET_OBJECTIVES: dict[str, Objective] = {}
RETAIN_REGULARISERS: dict[str, Objective] = {}


def forget_objective(name: str, **needs):
    """Register ``loss(model, inputs, method)``; ``inputs["forget"]`` is the forget batch."""
    def wrap(fn: LossFn) -> LossFn:
        FORGET_OBJECTIVES[name] = Objective(name, fn, **needs)
        return fn
    return wrap


def retain_regulariser(name: str, **needs):
    """Register ``loss(model, retain_batch, method)``."""
    def wrap(fn: LossFn) -> LossFn:
        RETAIN_REGULARISERS[name] = Objective(name, fn, **needs)
        return fn
    return wrap


@dataclass(frozen=True)
class ComposedLoss:
    forget: Objective
    retain: Objective | None
    method: Any  # config.MethodConfig: weights and hyper-parameters the objectives read

    def __call__(self, model, inputs: dict) -> torch.Tensor:
        loss = self.method.forget_weight * self.forget.loss(model, inputs, self.method)
        if self.retain is not None:
            loss = loss + self.method.retain_weight * self.retain.loss(model, inputs["retain"], self.method)
        return loss

    def check_model(self, model) -> None:
        """Raise ValueError("<method field>: why") when ``model`` cannot take this method's settings (a layer
        it does not have): before training, not at its first step."""
        for objective in (self.forget, self.retain):
            if objective is not None and objective.check is not None:
                objective.check(model, self.method)

    @property
    def needs_retain(self) -> bool:
        return self.retain is not None

    @property
    def reference_logprobs(self) -> bool:
        return self.forget.reference_logprobs

    @property
    def alternative(self) -> str | None:
        return self.forget.alternative


def compose(method) -> ComposedLoss:
    """The loss of ``method`` (a config.MethodConfig); KeyError names an unknown objective."""
    if method.forget not in FORGET_OBJECTIVES:
        raise KeyError(f"unknown forget objective {method.forget!r} (known: {sorted(FORGET_OBJECTIVES)})")
    if method.retain is not None and method.retain not in RETAIN_REGULARISERS:
        raise KeyError(f"unknown retain regulariser {method.retain!r} (known: {sorted(RETAIN_REGULARISERS)})")
    retain = RETAIN_REGULARISERS[method.retain] if method.retain else None
    return ComposedLoss(FORGET_OBJECTIVES[method.forget], retain, method)
