from __future__ import annotations

import pytest

from mmunlearn.data.schema import Modality, QAItem, Task
from mmunlearn.evaluation.metrics import METRICS, cloze_match, rouge_l


def test_rouge_l_is_the_stemmed_f_measure():
    assert rouge_l("This person works as a carpenter.", "This person works as a carpenter.") == 1.0
    assert rouge_l("the cat sat", "dogs barked") == 0.0
    # LCS "person works carpenter" = 3 of 6 reference / 4 prediction tokens → P 3/4, R 3/6, F 0.6
    assert rouge_l("This person works as a carpenter", "person works, carpenter maybe") == pytest.approx(0.6)
    # stemming: "works"/"working" and "carpenters"/"carpenter" match
    assert rouge_l("she works with carpenters", "she working with carpenter") == 1.0


@pytest.mark.parametrize(("truth", "reply", "expected"), [
    ("Oslo, Norway", "oslo, norway", True),
    ("Oslo, Norway", "The answer is Oslo, Norway.", True),
    ("1984", "born in 1984", True),
    ("Oslo, Norway", "Oslo", False),
    ("asthma", "", False),
    ("  asthma ", "Asthma!", True),
])
def test_cloze_rule_is_case_insensitive_containment(truth, reply, expected):
    assert cloze_match(truth, reply) is expected


def test_registered_metrics_score_items():
    item = QAItem(Task.MCQ, Modality.IMAGE, "q", "Oslo", {"A": "Rome", "B": "Oslo", "C": "Lima", "D": "Pune"}, "B")
    assert METRICS["mcq_acc"].score(item, {"A": -3.0, "B": -0.1, "C": -2.0, "D": -5.0}) == 1.0
    assert METRICS["mcq_acc"].score(item, {"A": -0.1, "B": -3.0, "C": -2.0, "D": -5.0}) == 0.0
    assert {m.task for m in METRICS.values()} == set(Task)
