"""Optional general-ability check: a user-supplied MMMU-style multiple-choice set, from local files.

The paper checks that unlearning leaves general ability intact on MMMU. Here any such set works
offline: one JSON object per line,

    {"id": "q1", "question": "...", "options": ["...", "..."] or {"A": "...", ...}, "answer": "B",
     "image": "images/q1.png"}            # image optional, relative to the file's folder

asked like the benchmark's multiple choice (options as letter lines, the one-letter instruction) and
scored the same way: the best of the question's own option letters as the reply's first token.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mmunlearn.errors import DataError
from mmunlearn.evaluation.engine import Request, score_options
from mmunlearn.models.prompts import MCQ_INSTRUCTION, decode_image

LETTERS = tuple(string.ascii_uppercase[:9])  # MMMU questions have up to nine options (A–I)


@dataclass(frozen=True)
class GeneralQuestion:
    id: str
    options: dict[str, str]
    answer: str
    request: Request


def _field(record: dict, name: str, where: str):
    if name not in record:
        raise DataError(f"{where}: missing field {name!r}")
    return record[name]


def _image(record: dict, folder: Path, where: str) -> bytes | None:
    """The record's image file, checked to decode now: it was a PIL traceback after the whole evaluation."""
    name = record.get("image")
    if not name:
        return None
    if not isinstance(name, str):
        raise DataError(f"{where}: field 'image' must be a path relative to the file, got {name!r}")
    image_path = folder / name
    if not image_path.is_file():
        raise DataError(f"{where}: field 'image' names {image_path}, which does not exist")
    data = image_path.read_bytes()
    try:
        decode_image(data)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{where}: field 'image': {image_path} is not an image PIL can read ({exc})") from None
    return data


def _options(record: dict, where: str) -> dict[str, str]:
    options = _field(record, "options", where)
    if isinstance(options, list):
        if len(options) > len(LETTERS):  # zip would drop the rest
            raise DataError(f"{where}: field 'options' has {len(options)} options, at most {len(LETTERS)}")
        options = dict(zip(LETTERS, options))
    if not isinstance(options, dict) or not 2 <= len(options) <= len(LETTERS) or \
            set(options) != set(LETTERS[:len(options)]):
        raise DataError(f"{where}: field 'options' must be 2–{len(LETTERS)} options (a list, or letters A, B, ... in order)")
    blank = [letter for letter, text in options.items() if not isinstance(text, str) or not text.strip()]
    if blank:  # a null was shown to the model as "None"
        raise DataError(f"{where}: field 'options': option(s) {blank} must be non-empty text")
    return options


def load_general_set(path: Path) -> list[GeneralQuestion]:
    """Read and check the set (images decoded too), before any model work; every error names the file,
    the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: general-ability set not found (evaluation.general_set)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}): the set is JSON lines") from None
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not a JSON object ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: not a JSON object (a {type(record).__name__})")
        options = _options(record, where)
        answer = str(_field(record, "answer", where)).strip().upper()
        if answer not in options:
            raise DataError(f"{where}: field 'answer' is {answer!r}, not one of the options {sorted(options)}")
        question = _field(record, "question", where)
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: field 'question' must be non-empty text")
        image = _image(record, path.parent, where)
        text = "\n".join([question] + [f"{letter}: {option}" for letter, option in options.items()] + [MCQ_INSTRUCTION])
        questions.append(GeneralQuestion(str(record.get("id", number)), options, answer, Request(text, image)))
    if not questions:
        raise DataError(f"{path}: no questions")
    return questions


def general_ability(model, processor, questions: list[GeneralQuestion], batch_size: int = 32,
                    system_prompt: str | None = None) -> dict[str, float]:
    """{"mcq_acc": accuracy, "n_mcq_acc": questions} over the set."""
    used = LETTERS[:max(len(q.options) for q in questions)]
    scores = score_options(model, processor, [q.request for q in questions], batch_size, system_prompt,
                           desc="general ability", letters=used)
    right = [max(q.options, key=s.get) == q.answer for q, s in zip(questions, scores)]
    return {"mcq_acc": sum(right) / len(right), "n_mcq_acc": len(right)}
