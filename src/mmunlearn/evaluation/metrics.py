"""Metric registry: a metric turns (items, model outputs) into one number per set × modality.

Rules follow the official MLLMU-Bench code: ROUGE-L F-measure with stemming; a fill-in-the-blank
reply is correct when it contains the ground truth, case-insensitively; multiple choice is correct
when the highest-scoring letter is the correct one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from mmunlearn.data.schema import QAItem, Task


@dataclass(frozen=True)
class Metric:
    name: str
    task: Task
    score: Callable[[QAItem, object], float]  # one item and its output → a per-item score


METRICS: dict[str, Metric] = {}


def register(name: str, task: Task):
    def wrap(score: Callable[[QAItem, object], float]):
        METRICS[name] = Metric(name, task, score)
        return score
    return wrap


@register("mcq_acc", Task.MCQ)
def mcq_correct(item: QAItem, letter_scores: dict[str, float]) -> float:
    predicted = max(letter_scores, key=letter_scores.get)
    return float(predicted == item.correct)


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(reference: str, prediction: str) -> float:
    return _rouge().score(reference, prediction)["rougeL"].fmeasure


@register("rouge_l", Task.GENERATION)
def generation_rouge_l(item: QAItem, reply: str) -> float:
    return rouge_l(item.ground_truth, reply)


def cloze_match(ground_truth: str, reply: str) -> bool:
    return ground_truth.strip().lower() in reply.lower()


@register("cloze_acc", Task.CLOZE)
def cloze_correct(item: QAItem, reply: str) -> float:
    return float(cloze_match(item.ground_truth, reply))
