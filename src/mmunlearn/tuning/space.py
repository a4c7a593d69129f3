"""The search space of params.yaml ``tune.search_space`` and the sampler that walks it.

``SeededStartupSampler``: the first ``startup_trials`` trials draw at random from a generator seeded by
(study seed, trial number), so one worker is reproducible and several workers sharing a study never
draw alike; later trials come from multi-objective TPE over the finished ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import optuna
from optuna.samplers import BaseSampler, RandomSampler, TPESampler

from mmunlearn.config import MethodConfig, SearchDimension


def distribution(dim: SearchDimension) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution ``suggest`` draws ``dim`` from (to rebuild recorded trials)."""
    if dim.choices is not None:
        return optuna.distributions.CategoricalDistribution(list(dim.choices))
    if dim.integer:
        return optuna.distributions.IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return optuna.distributions.FloatDistribution(dim.low, dim.high, log=dim.log)


def suggest(trial: optuna.Trial, space: Mapping[str, SearchDimension]) -> dict:
    """One value per dimension, named as the method setting it overrides."""
    values = {}
    for name, dim in sorted(space.items()):
        if dim.choices is not None:
            values[name] = trial.suggest_categorical(name, list(dim.choices))
        elif dim.integer:
            values[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            values[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    return values


def with_overrides(config: MethodConfig, values: Mapping) -> MethodConfig:
    """The method's params.yaml settings with a trial's values put in (validated like params.yaml)."""
    return MethodConfig.model_validate({**config.model_dump(), **values})


class SeededStartupSampler(BaseSampler):
    def __init__(self, seed: int, startup_trials: int):
        self._seed, self._startup = seed, startup_trials
        self._tpe = TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True)

    def _startup_phase(self, trial) -> bool:
        return trial.number < self._startup

    def infer_relative_search_space(self, study, trial):
        return {} if self._startup_phase(trial) else self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return {} if self._startup_phase(trial) else self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if self._startup_phase(trial):
            # a generator per (seed, trial number, parameter): the same draw whichever worker runs the trial
            seed = zlib.crc32(f"{self._seed}:{trial.number}:{param_name}".encode())
            return RandomSampler(seed=seed).sample_independent(study, trial, param_name, param_distribution)
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self._tpe.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self._tpe.after_trial(study, trial, state, values)
