"""The two objectives of a trade-off study, read off an evaluation's flattened metrics.

Efficacy = mean of ``tune.efficacy`` (what the model still shows of the forget set: minimised);
utility = mean of ``tune.utility`` (what it keeps: maximised). Names are ``<set>.<image|text>.<metric>``,
exactly as MLflow and metrics/<model>.json spell them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmunlearn.config import DEFAULT_PARAMS_FILE, TuneConfig
from mmunlearn.errors import ConfigError
from mmunlearn.evaluation.metrics import METRICS
from mmunlearn.evaluation.run import EVALUATED_SETS

MODALITIES = ("image", "text")


@dataclass(frozen=True)
class Objectives:
    efficacy: tuple[str, ...]
    utility: tuple[str, ...]

    @classmethod
    def from_config(cls, config: TuneConfig, source: Path = DEFAULT_PARAMS_FILE) -> Objectives:
        """The objectives ``config`` names; ``source``: the params file, named in errors."""
        for field in ("efficacy", "utility"):
            names = getattr(config, field)
            if not names:
                raise ConfigError(f"{source}: tune.{field}: name at least one metric")
            for index, name in enumerate(names):
                _check_name(f"{source}: tune.{field}[{index}]", name)
        return cls(tuple(config.efficacy), tuple(config.utility))

    @property
    def utility_sets(self) -> set[str]:
        return {name.split(".")[0] for name in self.utility}

    @property
    def efficacy_sets(self) -> set[str]:
        return {name.split(".")[0] for name in self.efficacy}

    @property
    def judged(self) -> bool:
        return any(METRICS[name.split(".")[2]].judged for name in self.efficacy + self.utility)

    def efficacy_of(self, results: Mapping) -> float:
        return _mean(results, self.efficacy)

    def utility_of(self, results: Mapping) -> float:
        return _mean(results, self.utility)


def _check_name(where: str, name: str) -> None:
    parts = name.split(".")
    if (len(parts) != 3 or parts[0] not in EVALUATED_SETS or parts[1] not in MODALITIES
            or parts[2] not in METRICS):
        raise ConfigError(f"{where}: {name!r} is not <set>.<modality>.<metric> with set in "
                          f"{list(EVALUATED_SETS)}, modality in {list(MODALITIES)}, metric in {sorted(METRICS)}")


def metric_value(results: Mapping, name: str) -> float:
    set_name, modality, metric = name.split(".")
    value = results.get(set_name, {}).get(modality, {}).get(metric)
    if value is None:
        raise ValueError(f"{name}: no value in this evaluation (no questions, or every judge call failed)")
    return float(value)


def _mean(results: Mapping, names: Sequence[str]) -> float:
    return sum(metric_value(results, name) for name in names) / len(names)
