"""One data model for MLLMU-Bench-style benchmarks, and its on-disk form.

A profile is a person (fictitious, or a public figure standing in for the Real Celebrity set) with a
face image, biography attributes, QA items and fine-tuning QA pairs. On disk a profile is one parquet
row in the official release's layout — ``ID``, ``image`` {bytes, path}, ``Classification_Task``,
``Generation_Task``, ``Mask_Task``, ``metadata`` (JSON list of {Question, Answer}) — plus our own
columns ``name``, ``kind``, ``biography`` and, for Test-set rows, ``images`` (re-posed variants). So an
importer of the official files lands in the same layout, and our files read like theirs.

The reader is deliberately tolerant (e.g. a five-option question is read as such): judging the
content is the validation stage's job, which must be able to see and name every defect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmunlearn.atomic import read_json
from mmunlearn.errors import DataError

OPTION_LETTERS = ("A", "B", "C", "D")
BLANK = "__"


class Task(StrEnum):
    MCQ = "mcq"
    GENERATION = "generation"
    CLOZE = "cloze"


class Modality(StrEnum):
    IMAGE = "image"  # image + text: the face is shown and the question says "this person"
    TEXT = "text"  # text only: the question names the person


# The official release's spelling of a modality.
OFFICIAL_TYPE = {Modality.IMAGE: "Image_Textual", Modality.TEXT: "Pure_Text"}
_MODALITY_OF_TYPE = {v: k for k, v in OFFICIAL_TYPE.items()}
_CLASSIFICATION_KEY = {Modality.IMAGE: "Image_Textual_Questions", Modality.TEXT: "Pure_Text_Questions"}


@dataclass(frozen=True)
class QAItem:
    task: Task
    modality: Modality
    question: str
    ground_truth: str  # for multiple choice: the text of the correct option
    options: dict[str, str] | None = None  # multiple choice only, letter -> text
    correct: str | None = None  # multiple choice only, the correct letter
    attribute: str = ""  # biography field asked about ("" when unknown, e.g. imported)


@dataclass(frozen=True)
class FinetunePair:
    question: str
    answer: str  # the full-sentence answer the model is trained to give
    modality: Modality
    attribute: str = ""  # biography field it states ("" when unknown, e.g. imported)
    value: str = ""  # the short fact inside the answer, for multiple-choice drills ("" when unknown)


@dataclass(frozen=True)
class PoseImage:
    """A re-posed image of a profile's face (Test set), one rung of the easy → hard ladder."""

    difficulty: str
    png: bytes


@dataclass(frozen=True)
class Profile:
    id: str
    name: str
    kind: str  # "fictitious" | "celebrity"
    image: bytes  # PNG
    biography: dict[str, str]
    items: tuple[QAItem, ...]
    finetune_pairs: tuple[FinetunePair, ...] = ()
    poses: tuple[PoseImage, ...] = ()  # Test-set rows only

    def items_of(self, task: Task, modality: Modality) -> list[QAItem]:
        return [item for item in self.items if item.task is task and item.modality is modality]


@dataclass(frozen=True)
class Benchmark:
    """Everything in a benchmark folder: fictitious profiles, celebrities, Test-set rows, manifest."""

    full: tuple[Profile, ...]
    celebrity: tuple[Profile, ...]
    test: tuple[Profile, ...]
    manifest: dict[str, Any] = field(default_factory=dict)


BENCHMARK_FILES = {"full": "full.parquet", "celebrity": "celebrity.parquet", "test": "test.parquet"}
MANIFEST_FILE = "manifest.json"

# --- parquet schema (official columns first) ---------------------------------------------------

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_POSE = pa.struct([("bytes", pa.binary()), ("path", pa.string()), ("difficulty", pa.string())])
_OPTIONS = pa.struct([(letter, pa.string()) for letter in OPTION_LETTERS])
_MCQ = pa.struct(
    [("Question", pa.string()), ("Options", _OPTIONS), ("Correct_Answer", pa.string()), ("Attribute", pa.string())]
)
_OPEN = pa.struct(
    [("Type", pa.string()), ("Question", pa.string()), ("Ground_Truth", pa.string()), ("Attribute", pa.string())]
)
PROFILE_SCHEMA = pa.schema(
    [
        ("ID", pa.string()),
        ("image", _IMAGE),
        ("Classification_Task", pa.struct([(key, pa.list_(_MCQ)) for key in _CLASSIFICATION_KEY.values()])),
        ("Generation_Task", pa.list_(_OPEN)),
        ("Mask_Task", pa.list_(_OPEN)),
        ("metadata", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("biography", pa.string()),
        ("images", pa.list_(_POSE)),
    ]
)
_OPEN_TASK_COLUMN = {Task.GENERATION: "Generation_Task", Task.CLOZE: "Mask_Task"}


def _profile_row(profile: Profile) -> dict[str, Any]:
    classification = {key: [] for key in _CLASSIFICATION_KEY.values()}
    open_tasks: dict[str, list[dict[str, str]]] = {column: [] for column in _OPEN_TASK_COLUMN.values()}
    for item in profile.items:
        if item.task is Task.MCQ:
            classification[_CLASSIFICATION_KEY[item.modality]].append(
                {
                    "Question": item.question,
                    "Options": dict(item.options or {}),
                    "Correct_Answer": item.correct,
                    "Attribute": item.attribute,
                }
            )
        else:
            open_tasks[_OPEN_TASK_COLUMN[item.task]].append(
                {
                    "Type": OFFICIAL_TYPE[item.modality],
                    "Question": item.question,
                    "Ground_Truth": item.ground_truth,
                    "Attribute": item.attribute,
                }
            )
    metadata = [
        {"Question": pair.question, "Answer": pair.answer, "Type": OFFICIAL_TYPE[pair.modality],
         "Attribute": pair.attribute, "Value": pair.value}
        for pair in profile.finetune_pairs
    ]
    return {
        "ID": profile.id,
        "image": {"bytes": profile.image, "path": f"{profile.id}.png"},
        "Classification_Task": classification,
        **open_tasks,
        "metadata": json.dumps(metadata, ensure_ascii=False),
        "name": profile.name,
        "kind": profile.kind,
        "biography": json.dumps(profile.biography, ensure_ascii=False, sort_keys=True),
        "images": [
            {"bytes": pose.png, "path": f"{profile.id}_pose{i}_{pose.difficulty}.png", "difficulty": pose.difficulty}
            for i, pose in enumerate(profile.poses)
        ],
    }


def write_profiles(path: Path, profiles: tuple[Profile, ...] | list[Profile]) -> None:
    """Write profiles as one parquet file; same profiles ⇒ same bytes (fixed schema, no pandas metadata)."""
    table = pa.Table.from_pylist([_profile_row(p) for p in profiles], schema=PROFILE_SCHEMA)
    pq.write_table(table, path, compression="zstd", use_dictionary=False, write_statistics=False)


def _modality(official_type: str | None, where: str) -> Modality:
    try:
        return _MODALITY_OF_TYPE[official_type or ""]
    except KeyError:
        raise DataError(f"{where}: Type must be one of {sorted(_MODALITY_OF_TYPE)}, got {official_type!r}") from None


def _items_from_row(row: dict[str, Any], where: str) -> list[QAItem]:
    items: list[QAItem] = []
    classification = row.get("Classification_Task") or {}
    for modality, key in _CLASSIFICATION_KEY.items():
        for question in classification.get(key) or []:
            options = {k: v for k, v in (question.get("Options") or {}).items() if v is not None}
            correct = question.get("Correct_Answer")
            items.append(
                QAItem(
                    task=Task.MCQ,
                    modality=modality,
                    question=question.get("Question") or "",
                    ground_truth=options.get(correct or "", ""),
                    options=options,
                    correct=correct,
                    attribute=question.get("Attribute") or "",
                )
            )
    for task, column in _OPEN_TASK_COLUMN.items():
        for entry in row.get(column) or []:
            items.append(
                QAItem(
                    task=task,
                    modality=_modality(entry.get("Type"), f"{where}: {column}"),
                    question=entry.get("Question") or "",
                    ground_truth=entry.get("Ground_Truth") or "",
                    attribute=entry.get("Attribute") or "",
                )
            )
    return items


def _json_field(text: str | None, where: str, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from None


def read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, rows) of a parquet file; DataError naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    return table.column_names, table.to_pylist()


def read_profiles(path: Path) -> tuple[Profile, ...]:
    """Read a profile table written by ``write_profiles`` (or an official-release parquet file)."""
    columns, rows = read_rows(path)
    if "ID" not in columns:
        raise DataError(f"{path}: column 'ID' missing (columns: {columns})")
    return tuple(profile_from_row(row, f"{path} row {index} (ID {row.get('ID')!r})") for index, row in enumerate(rows))


def require_unique_ids(profiles: list[Profile], where: Path) -> None:
    """An importer's check: two profiles under one id would merge in every split and join."""
    ids = [p.id for p in profiles]
    if len(set(ids)) != len(ids):
        raise DataError(f"{where}: duplicate IDs {sorted({i for i in ids if ids.count(i) > 1})[:5]}")


def profile_from_row(row: dict[str, Any], where: str) -> Profile:
    """One profile from a row of a profile table or of the official release (``where`` names the row in
    errors); a column the row lacks reads as empty."""
    try:
        return _profile_from_row(row, where)
    except (AttributeError, TypeError) as exc:  # a column or JSON field of another shape than the release's
        raise DataError(f"{where}: a field is not laid out as MLLMU-Bench's files lay it out "
                        f"({type(exc).__name__}: {exc})") from None


def _profile_from_row(row: dict[str, Any], where: str) -> Profile:
    image = row.get("image") or {}
    pairs = [
        FinetunePair(pair.get("Question", ""), pair.get("Answer", ""),
                     _modality(pair.get("Type", "Image_Textual"), f"{where}: metadata"),
                     pair.get("Attribute", ""), pair.get("Value", ""))
        for pair in _json_field(row.get("metadata"), f"{where}: metadata", [])
    ]
    poses = tuple(
        PoseImage(difficulty=pose.get("difficulty") or "", png=pose.get("bytes") or b"")
        for pose in row.get("images") or []
    )
    return Profile(
        id=str(row["ID"]) if row.get("ID") is not None else "",
        name=row.get("name") or "",
        kind=row.get("kind") or "fictitious",
        image=image.get("bytes") or b"",
        biography=_json_field(row.get("biography"), f"{where}: biography", {}),
        items=tuple(_items_from_row(row, where)),
        finetune_pairs=tuple(pairs),
        poses=poses,
    )


def save_benchmark(folder: Path, benchmark: Benchmark) -> None:
    """Write a benchmark's files into ``folder`` (which the caller makes atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, filename in BENCHMARK_FILES.items():
        write_profiles(folder / filename, getattr(benchmark, part))
    (folder / MANIFEST_FILE).write_text(json.dumps(benchmark.manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_benchmark(folder: Path) -> Benchmark:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: benchmark folder not found (run `mmunlearn data fetch`)")
    parts = {part: read_profiles(folder / filename) for part, filename in BENCHMARK_FILES.items()}
    return Benchmark(manifest=load_manifest(folder), **parts)


def load_manifest(folder: Path) -> dict:
    """The benchmark folder's manifest.json ({} when it has none); DataError when it is not a JSON object."""
    manifest_path = Path(folder) / MANIFEST_FILE
    return read_json(manifest_path) if manifest_path.is_file() else {}
