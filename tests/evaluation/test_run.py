from __future__ import annotations

import pytest

from mmunlearn.config import DataConfig, SplitConfig
from mmunlearn.data.schema import Modality
from mmunlearn.data.splits import make_split
from mmunlearn.data.synthetic import generate_benchmark
from mmunlearn.evaluation.run import EVALUATED_SETS, EvaluationSettings, evaluate, questions_of
from mmunlearn.models.tiny import build_tiny_model, tokenizer_corpus
from mmunlearn.report import csv_table, markdown_table
from tests.conftest import SMALL_DATA
from tests.models.test_tiny import SMALL_ARCH


@pytest.fixture(scope="module")
def split():
    benchmark = generate_benchmark(DataConfig(**{**SMALL_DATA, "num_profiles": 10, "num_celebrities": 2}))
    return make_split(benchmark, SplitConfig(forget_percent=10, test_image_difficulty="hard"))


def test_test_set_image_questions_show_the_configured_pose(split):
    questions = questions_of(split)
    test_images = [q for q in questions if q.set_name == "test" and q.item.modality is Modality.IMAGE]
    assert test_images
    for question in test_images:
        hard = next(p.png for p in question.profile.poses if p.difficulty == "hard")
        assert question.request.image_png == hard != question.profile.image
    assert all(q.request.image_png is None for q in questions if q.item.modality is Modality.TEXT)


def test_every_set_modality_and_metric_is_evaluated(split):
    model, processor = build_tiny_model(tokenizer_corpus(split.retain), SMALL_ARCH)
    results, records = evaluate(model, processor, split, EvaluationSettings(batch_size=16, max_new_tokens=4))
    assert set(results) == set(EVALUATED_SETS)
    for set_name in EVALUATED_SETS:
        profiles = len(getattr(split, set_name))
        for modality in ("image", "text"):
            cell = results[set_name][modality]
            assert (cell["n_mcq_acc"], cell["n_rouge_l"], cell["n_cloze_acc"]) == (4 * profiles, 2 * profiles, profiles)
            assert all(0.0 <= cell[m] <= 1.0 for m in ("mcq_acc", "rouge_l", "cloze_acc"))
            mine = [r["score"] for r in records if r["set"] == set_name and r["modality"] == modality
                    and r["metric"] == "mcq_acc"]
            assert cell["mcq_acc"] == pytest.approx(sum(mine) / len(mine))
    assert len(records) == sum(len(p.items) for s in EVALUATED_SETS for p in getattr(split, s))


def test_report_has_the_paper_layout():
    cell = {"mcq_acc": 0.5, "rouge_l": 0.25, "cloze_acc": 0.125}
    results = {s: {"image": cell, "text": cell} for s in EVALUATED_SETS}
    table = markdown_table({("Vanilla", "—"): results, ("GA", "text"): {}})
    assert "### Evaluated on image + text (multimodal)" in table and "### Evaluated on text only" in table
    assert "| Vanilla | — | 0.500 | 0.250 | n/a | 0.125 | 0.500 |" in table
    assert "| GA | text | n/a |" in table
    assert "Forget Class." in table and "Celebrity Cloze" in table and "↑" not in table
    assert "Vanilla,—,image,forget,mcq_acc,0.5" in csv_table({("Vanilla", "—"): results})
