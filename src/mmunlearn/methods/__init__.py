"""Unlearning methods as compositions of small registered objectives (see registry.py).

One module per objective, each with its formula and source in the docstring.
"""

from mmunlearn.methods import ga, idkpo, kl, nll, npo, rmu, simnpo  # noqa: F401  (registration side effects)
from mmunlearn.methods.registry import FORGET_OBJECTIVES, RETAIN_REGULARISERS, compose

__all__ = ["FORGET_OBJECTIVES", "RETAIN_REGULARISERS", "compose"]
