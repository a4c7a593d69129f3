"""Unlearning methods as compositions of small registered objectives (see registry.py)."""

from mmunlearn.methods import ga, nll  # noqa: F401  (registration side effects)
from mmunlearn.methods.registry import FORGET_OBJECTIVES, RETAIN_REGULARISERS, compose

__all__ = ["FORGET_OBJECTIVES", "RETAIN_REGULARISERS", "compose"]
