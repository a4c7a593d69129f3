"""Import a local copy of the released UnLOK-VQA records (Patil et al.) into our benchmark layout.

A record is an OK-VQA question about a COCO image whose answer is to be deleted:
``{"id", "src", "pred", "rephrase": [...], "loc": [...], "loc_ans": [...], "alt_ans": [...], "image_id", ...}``.
Each record becomes one profile, so the same split → unlearn → evaluate → attack study runs on it:

- the profile's image is the COCO image; its one fine-tuning pair is (``src`` → ``pred``), asked with
  the image; its evaluation items are the question as free generation (ground truth ``pred``) and, when
  three alternate answers exist, as a four-option question (``pred`` among ``alt_ans``);
- its Test-set row asks the ``rephrase`` questions over the re-posed images of the easy / medium /
  hard ladder (the released paraphrase-image folders; a missing rung is left out);
- its neighbourhood questions (``loc`` → ``loc_ans``, same image) are knowledge the deletion must not
  harm: they form the retained-knowledge set the pipeline calls "celebrity", one profile per record.

Each record's question is its own attribute (``okvqa-<id>``), so attacks rephrase a question only with
its own paraphrases. Image folders follow the release (``IMAGE_LAYOUT``); images are kept as their
original bytes. A record missing a field, or its COCO image, is an error naming the file and record.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Mapping
from pathlib import Path

from mmunlearn.data.schema import (
    OPTION_LETTERS,
    Benchmark,
    FinetunePair,
    Modality,
    PoseImage,
    Profile,
    QAItem,
    Task,
    require_unique_ids,
)
from mmunlearn.errors import DataError

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("id", "src", "pred", "image_id")
# Where the release keeps each image, relative to the images root (UnLOK util/fewshot_utils.py)
IMAGE_LAYOUT = {
    "coco": ("coco2017/train2017/{image_id:012d}.jpg", "coco2017/val2017/{image_id:012d}.jpg"),
    "easy": ("parap_images/okvqa/{id}.jpg",),
    "medium": ("parap_images_medium/okvqa/{id}.jpg",),
    "hard": ("paraphrase_images_hard/okvqa_yolo_dino_bert/processed_images/{id}.jpg",),
}
RUNGS = ("easy", "medium", "hard")


def _image(root: Path, kind: str, record: Mapping) -> bytes | None:
    for pattern in IMAGE_LAYOUT[kind]:
        path = root / pattern.format(id=record["id"], image_id=int(record["image_id"]))
        if path.is_file():
            return path.read_bytes()
    return None


def _answer_position(record_id) -> int:
    """Where the true answer goes among the four options: rotating with the id (the release's ids are
    integers; another id is placed by a stable checksum), so no letter is always right."""
    text = str(record_id)
    return (int(text) if text.isdigit() else zlib.crc32(text.encode("utf-8"))) % len(OPTION_LETTERS)


def _strings(record: Mapping, field: str, where: str) -> list[str]:
    values = record.get(field) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise DataError(f"{where}: {field} must be a list of strings")
    return values


def _profiles(record: Mapping, root: Path, where: str) -> tuple[Profile, Profile, Profile | None]:
    """(the record's forget-candidate profile, its Test-set row, its neighbourhood profile or None)."""
    missing = [field for field in REQUIRED_FIELDS if record.get(field) in (None, "")]
    if missing:
        raise DataError(f"{where}: missing {missing}")
    if not str(record["image_id"]).isdigit():  # was a ValueError traceback from int()
        raise DataError(f"{where}: image_id must be a COCO image number, got {record['image_id']!r}")
    image = _image(root, "coco", record)
    if image is None:
        tried = [str(root / p.format(id=record["id"], image_id=int(record["image_id"]))) for p in IMAGE_LAYOUT["coco"]]
        raise DataError(f"{where}: image_id {record['image_id']}: COCO image not found (looked for {tried})")
    key, question, answer = f"okvqa-{record['id']}", str(record["src"]), str(record["pred"])
    items = [QAItem(Task.GENERATION, Modality.IMAGE, question, answer, attribute=key)]
    distractors = [a for a in dict.fromkeys(_strings(record, "alt_ans", where)) if a.casefold() != answer.casefold()]
    if len(distractors) >= len(OPTION_LETTERS) - 1:
        # the true answer's letter rotates with the id, so no letter is always right
        choices = distractors[:len(OPTION_LETTERS) - 1]
        position = _answer_position(record["id"])
        choices.insert(position, answer)
        items.insert(0, QAItem(Task.MCQ, Modality.IMAGE, question, answer, dict(zip(OPTION_LETTERS, choices)),
                               OPTION_LETTERS[position], key))
    pair = FinetunePair(question, answer, Modality.IMAGE, key, answer)
    # named by the record's key: validation requires a name, and the record is about an image, not a person
    profile = Profile(key, key, "fictitious", image, {record.get("subject") or "answer": answer}, tuple(items), (pair,))
    poses = tuple(PoseImage(rung, png) for rung in RUNGS if (png := _image(root, rung, record)) is not None)
    rephrased = tuple(QAItem(Task.GENERATION, Modality.IMAGE, text, answer, attribute=key)
                      for text in _strings(record, "rephrase", where) if text != question)
    test_row = Profile(key, key, "fictitious", image, profile.biography, rephrased, (), poses)
    questions, answers = _strings(record, "loc", where), _strings(record, "loc_ans", where)
    if len(questions) != len(answers):
        raise DataError(f"{where}: loc has {len(questions)} questions but loc_ans {len(answers)} answers")
    neighbours = tuple(QAItem(Task.GENERATION, Modality.IMAGE, q.removeprefix("nq question: "), a, attribute=f"{key}-loc{i}")
                       for i, (q, a) in enumerate(zip(questions, answers)))
    neighbourhood = (Profile(f"{key}-loc", f"{key}-loc", "celebrity", image, {}, neighbours,
                             tuple(FinetunePair(i.question, i.ground_truth, Modality.IMAGE, i.attribute, i.ground_truth)
                                   for i in neighbours)) if neighbours else None)
    return profile, test_row, neighbourhood


def _parsed(path: Path, text: str, first_line: int):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {first_line + exc.lineno}: {exc.msg})") from None


def _one_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def import_unlok(records_path: Path, images_root: Path) -> Benchmark:
    """Read the records file (a JSON list, or JSON lines) and its images into a Benchmark."""
    records_path, images_root = Path(records_path), Path(images_root)
    if not records_path.is_file():
        raise DataError(f"{records_path}: records file not found")
    if not images_root.is_dir():
        raise DataError(f"{images_root}: images folder not found")
    try:
        text = records_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{records_path}: not UTF-8 text ({exc.reason})") from None
    if text.lstrip().startswith("["):
        records = _parsed(records_path, text, 0)
    elif text.count("\n", 0, len(text.rstrip())) and text.lstrip().startswith("{") and _one_object(text):
        # a whole-file object (e.g. {"data": [...]}) read as JSON lines failed on its first line's brace
        raise DataError(f"{records_path}: one JSON object spread over lines; expected a JSON list of records "
                        "or JSON lines (one record per line)")
    else:  # JSON lines: each parsed alone, so an error names the file's own line
        records = [_parsed(records_path, line, number) for number, line in enumerate(text.splitlines()) if line.strip()]
    if not records:
        raise DataError(f"{records_path}: no records")
    full, test, neighbourhoods = [], [], []
    for index, record in enumerate(records):
        where = f"{records_path} record {index}"
        if not isinstance(record, Mapping):
            raise DataError(f"{where}: expected an object")
        profile, test_row, neighbourhood = _profiles(record, images_root, f"{where} (id {record.get('id')!r})")
        full.append(profile)
        test.append(test_row)
        if neighbourhood is not None:
            neighbourhoods.append(neighbourhood)
    require_unique_ids(full, records_path)
    rungs = sorted({pose.difficulty for row in test for pose in row.poses}, key=RUNGS.index)
    bare = [row.id for row in test if not row.poses]
    if bare:  # validate's test_links suite requires one (the Test set asks with a re-posed image)
        log.warning("UnLOK-VQA: %d records have no paraphrase image in %s (e.g. %s): `mmunlearn validate` will "
                    "fail their Test rows", len(bare), images_root, bare[:3])
    unasked = [row.id for row in test if not row.items]
    if unasked:  # their Test rows ask nothing: the test set's figures then rest on the other records
        log.warning("UnLOK-VQA: %d records have no rephrased question (field rephrase, e.g. %s): their Test rows "
                    "ask nothing, and the black-box question rephrasings have none of theirs", len(unasked), unasked[:3])
    log.info("UnLOK-VQA: %d records, %d with neighbourhood questions, pose rungs %s", len(full), len(neighbourhoods), rungs)
    manifest = {"source": "UnLOK-VQA", "records": str(records_path), "count": len(full), "pose_rungs": rungs}
    return Benchmark(tuple(full), tuple(neighbourhoods), tuple(test), manifest)
