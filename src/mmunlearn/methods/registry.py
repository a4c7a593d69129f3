"""Registries of forget objectives and retain regularisers, and their composition into one loss.

A method in params.yaml is ``{forget: <objective>, retain: <regulariser or null>, retain_weight: w}``;
its loss is ``forget_weight * forget(model, forget_batch) + retain_weight * retain(model, retain_batch)``.
GradDiff = ga + nll and KL Minimisation = ga + kl are lines in params.yaml, not classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Objective = Callable[..., torch.Tensor]  # (model, batch, **context) -> scalar loss
FORGET_OBJECTIVES: dict[str, Objective] = {}
RETAIN_REGULARISERS: dict[str, Objective] = {}


def forget_objective(name: str):
    def wrap(fn: Objective) -> Objective:
        FORGET_OBJECTIVES[name] = fn
        return fn
    return wrap


def retain_regulariser(name: str):
    def wrap(fn: Objective) -> Objective:
        RETAIN_REGULARISERS[name] = fn
        return fn
    return wrap


@dataclass(frozen=True)
class ComposedLoss:
    forget: Objective
    retain: Objective | None = None
    forget_weight: float = 1.0
    retain_weight: float = 1.0

    def __call__(self, model, inputs: dict) -> torch.Tensor:
        loss = self.forget_weight * self.forget(model, inputs["forget"])
        if self.retain is not None:
            loss = loss + self.retain_weight * self.retain(model, inputs["retain"])
        return loss

    @property
    def needs_retain(self) -> bool:
        return self.retain is not None


def compose(forget: str, retain: str | None = None, forget_weight: float = 1.0,
            retain_weight: float = 1.0) -> ComposedLoss:
    if forget not in FORGET_OBJECTIVES:
        raise KeyError(f"unknown forget objective {forget!r} (known: {sorted(FORGET_OBJECTIVES)})")
    if retain is not None and retain not in RETAIN_REGULARISERS:
        raise KeyError(f"unknown retain regulariser {retain!r} (known: {sorted(RETAIN_REGULARISERS)})")
    return ComposedLoss(FORGET_OBJECTIVES[forget], RETAIN_REGULARISERS.get(retain) if retain else None,
                        forget_weight, retain_weight)
