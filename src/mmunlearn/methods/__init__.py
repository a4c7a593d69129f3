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
from mmunlearn.methods.registry import FORGET_OBJECTIVES, RETAIN_REGULARISERS, ComposedLoss, compose

__all__ = ["FORGET_OBJECTIVES", "RETAIN_REGULARISERS", "compose", "composed_loss", "check_methods"]


def composed_loss(params, method: str) -> ComposedLoss:
    """The loss of ``params.methods[method]``; a ConfigError naming the params file and field for an
    objective name no module registers."""
    from mmunlearn.errors import ConfigError

    try:
        return compose(params.methods[method])
    except KeyError as exc:
        raise ConfigError(f"{params.source}: methods.{method}: {exc.args[0]}") from None


def check_methods(params) -> None:
    """Every method params defines composes: run before training, so that a misspelt objective does not
    wait for the first unlearning stage, after the base and the vanilla have trained (~20 minutes)."""
    for method, config in params.methods.items():
        if config.forget is not None:  # None: an evaluation-time method (Prompting), nothing to compose
            composed_loss(params, method)
