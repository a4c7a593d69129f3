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

from mmunlearn.errors import DataError
from mmunlearn.evaluation.engine import Request, score_options
from mmunlearn.models.prompts import MCQ_INSTRUCTION

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


def load_general_set(path: Path) -> list[GeneralQuestion]:
    """Read and check the set; every error names the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: general-ability set not found (evaluation.general_set)")
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not a JSON object ({exc.msg})") from None
        options = _field(record, "options", where)
        if isinstance(options, list):
            options = dict(zip(LETTERS, options))
        if not isinstance(options, dict) or not 2 <= len(options) <= len(LETTERS) or \
                set(options) != set(LETTERS[:len(options)]):
            raise DataError(f"{where}: field 'options' must be 2–{len(LETTERS)} options (a list, or letters A, B, ... in order)")
        answer = str(_field(record, "answer", where)).strip().upper()
        if answer not in options:
            raise DataError(f"{where}: field 'answer' is {answer!r}, not one of the options {sorted(options)}")
        image = None
        if record.get("image"):
            image_path = path.parent / record["image"]
            if not image_path.is_file():
                raise DataError(f"{where}: field 'image' names {image_path}, which does not exist")
            image = image_path.read_bytes()
        text = "\n".join([str(_field(record, "question", where))]
                         + [f"{letter}: {option}" for letter, option in options.items()] + [MCQ_INSTRUCTION])
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
