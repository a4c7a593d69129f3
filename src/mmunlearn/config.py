"""Typed view of params.yaml — the only module that reads it.

Every section is a pydantic model with documented defaults; unknown keys and wrong types are errors
that name the file and the dotted field (``params.yaml: data.num_profiles: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmunlearn.errors import ConfigError

DEFAULT_PARAMS_FILE = Path("params.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Section):
    """Where each stage reads and writes, relative to the repository root."""

    benchmark: Path = Path("data/benchmark")
    splits: Path = Path("data/splits")
    expectations: Path = Path("expectations")
    metrics: Path = Path("metrics")
    reports: Path = Path("reports")
    data_dvc: Path = Path("data.dvc")


class QuestionCounts(_Section):
    """Questions per profile and per modality (image+text and text-only each get this many)."""

    mcq: int = Field(4, ge=1)
    generation: int = Field(2, ge=0)
    cloze: int = Field(1, ge=0)

    @property
    def total(self) -> int:
        return self.mcq + self.generation + self.cloze


class DataConfig(_Section):
    """Synthetic MLLMU-Bench-format generator. The paper's size is 500 fictitious + 153 celebrities."""

    seed: int = 1234
    num_profiles: int = Field(100, ge=4)
    num_celebrities: int = Field(30, ge=1)
    image_size: int = Field(64, ge=16, le=1024)
    questions: QuestionCounts = QuestionCounts()
    # Re-posed images per profile for the Test set, one per difficulty rung (easy → hard).
    test_pose_difficulties: tuple[Literal["easy", "medium", "hard"], ...] = ("easy", "medium", "hard")

    @model_validator(mode="after")
    def _attributes_cover_questions(self) -> DataConfig:
        from mmunlearn.data.vocab import QUESTION_ATTRIBUTES

        if self.questions.total > len(QUESTION_ATTRIBUTES):
            # each question of a modality asks about a different attribute
            raise ValueError(f"questions: at most {len(QUESTION_ATTRIBUTES)} per modality in all")
        if not self.test_pose_difficulties:
            raise ValueError("test_pose_difficulties must name at least one rung")
        return self


class SplitConfig(_Section):
    """Forget/retain split of the fictitious profiles (the paper's 5/10/15 %)."""

    seed: int = 0
    forget_percent: Literal[5, 10, 15] = 10
    # Which re-posed image the Test set asks its image+text questions with.
    test_image_difficulty: Literal["easy", "medium", "hard"] = "medium"


class ValidateConfig(_Section):
    """How many failing rows a data-quality report quotes per expectation."""

    example_rows: int = Field(5, ge=1, le=100)


class TrackingConfig(_Section):
    """MLflow: a SQLite store and a local artifact folder in the repo by default (both gitignored)."""

    uri: str = "sqlite:///mlflow.db"
    artifact_root: Path = Path("mlartifacts")
    experiment: str = "mmunlearn"


class Params(_Section):
    paths: PathsConfig = PathsConfig()
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    tracking: TrackingConfig = TrackingConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _difficulty_is_generated(self) -> Params:
        if self.split.test_image_difficulty not in self.data.test_pose_difficulties:
            raise ValueError(
                "split.test_image_difficulty must be one of data.test_pose_difficulties "
                f"{list(self.data.test_pose_difficulties)}"
            )
        return self


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{where}: {first['msg']}" + (f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else "")


def load_params(path: Path | str = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate params.yaml; raise ConfigError naming the file and field on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
