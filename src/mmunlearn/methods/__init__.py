"""Unlearning methods as compositions of small registered objectives (see registry.py).

One module per objective, each with its formula and source in the docstring.
"""

from mmunlearn.methods import (  # noqa: F401  (registration side effects)
    alternative_answer,
    fact_erasure,
    ga,
    idkpo,
    kl,
    lens_defenses,
    nll,
    npo,
    rmu,
    simnpo,
)
from mmunlearn.methods.registry import FORGET_OBJECTIVES, RETAIN_REGULARISERS, compose

__all__ = ["FORGET_OBJECTIVES", "RETAIN_REGULARISERS", "compose"]
