"""The optional general-ability set: read and checked from local files, scored like the benchmark's MCQ."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from mmunlearn.config import DataConfig
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.errors import DataError
from mmunlearn.evaluation.engine import score_options
from mmunlearn.evaluation.general import general_ability, load_general_set
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from tests.conftest import SMALL_DATA
from tests.models.test_tiny import SMALL_ARCH


def _write(folder, records) -> object:
    path = folder / "general.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


RECORDS = [
    {"id": "q1", "question": "Which colour is shown?", "options": ["red", "blue", "green", "black"], "answer": "A",
     "image": "pics/red.png"},
    {"id": "q2", "question": "What is 2 + 3?", "options": {"A": "4", "B": "5", "C": "6"}, "answer": "b"},
    {"id": "q3", "question": "Pick the sixth.", "options": ["1", "2", "3", "4", "5", "6"], "answer": "F"},
]


def test_a_local_mmmu_style_set_is_read_and_scored_over_each_questions_own_letters(tmp_path):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "red.png").write_bytes(_png())
    questions = load_general_set(_write(tmp_path, RECORDS))
    assert [q.answer for q in questions] == ["A", "B", "F"]
    assert questions[0].request.image_png == _png() and questions[1].request.image_png is None
    assert "F: 6" in questions[2].request.user_text and "B: 5" in questions[1].request.user_text
    benchmark = generate_benchmark(DataConfig(**{**SMALL_DATA, "num_profiles": 4, "num_celebrities": 1}))
    model, processor = build_tiny_model(tokenizer_corpus(benchmark.full), SMALL_ARCH)
    result = general_ability(model, processor, questions, batch_size=2)
    scores = score_options(model, processor, [q.request for q in questions], letters=tuple("ABCDEF"))
    expected = [max(q.options, key=s.get) == q.answer for q, s in zip(questions, scores)]
    assert result == {"mcq_acc": sum(expected) / 3, "n_mcq_acc": 3}


@pytest.mark.parametrize("record, message", [
    ({"question": "q", "options": ["a", "b"]}, r"general.jsonl:1: missing field 'answer'"),
    ({"question": "q", "options": ["a", "b"], "answer": "C"}, r":1: field 'answer' is 'C'"),
    ({"question": "q", "options": {"A": "a", "C": "c"}, "answer": "A"}, r":1: field 'options'"),
    ({"question": "q", "options": ["a"], "answer": "A"}, r":1: field 'options'"),
    ({"question": "q", "options": ["a", "b"], "answer": "A", "image": "nope.png"}, r":1: field 'image' names"),
    ("{not json", r":1: not a JSON object"),
    # each of these was a traceback, or accepted and shown to the model wrong
    ("5", r":1: not a JSON object \(a int\)"),
    ({"question": "q", "options": list("abcdefghij"), "answer": "A"}, r":1: field 'options' has 10 options, at most 9"),
    ({"question": "q", "options": ["a", None], "answer": "A"}, r":1: field 'options': option\(s\) \['B'\]"),
    ({"question": "", "options": ["a", "b"], "answer": "A"}, r":1: field 'question' must be non-empty text"),
    ({"question": "q", "options": ["a", "b"], "answer": "A", "image": "broken.png"}, r":1: field 'image': .*broken.png "
                                                                                    r"is not an image PIL can read"),
])
def test_a_bad_record_is_a_clear_error_naming_file_line_and_field(tmp_path, record, message):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=message):
        load_general_set(_write(tmp_path, [record]))


def test_a_set_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "general.jsonl"
    path.write_bytes(json.dumps(RECORDS[1]).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"general.jsonl: not UTF-8 text \(byte \d+\)"):
        load_general_set(path)
