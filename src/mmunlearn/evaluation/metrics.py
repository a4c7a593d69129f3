"""Metric registry: a metric turns (items, model outputs) into one number per set × modality.

Rules follow the official MLLMU-Bench code: ROUGE-L F-measure with stemming; a fill-in-the-blank
reply is correct when it contains the ground truth, case-insensitively; multiple choice is correct
when the highest-scoring letter is the correct one; factuality is the judge's 1–10 score of a generated
answer (a metric with ``judged=True`` reads the judge's verdict, and an item the judge could not score
is left out of the mean and counted as a failure).
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
    score: Callable[[QAItem, object], float | None]  # one item and its output → a per-item score
    judged: bool = False  # scored from the judge's verdict instead of the model's output


METRICS: dict[str, Metric] = {}


def register(name: str, task: Task, judged: bool = False):
    def wrap(score: Callable[[QAItem, object], float | None]):
        METRICS[name] = Metric(name, task, score, judged)
        return score
    return wrap


def predicted_letter(output: dict[str, float] | str | None) -> str | None:
    """The chosen option: the best-scoring letter (fast protocol) or the parsed reply (official)."""
    return max(output, key=output.get) if isinstance(output, dict) else output


@register("mcq_acc", Task.MCQ)
def mcq_correct(item: QAItem, output: dict[str, float] | str | None) -> float:
    return float(predicted_letter(output) == item.correct)


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


@register("factuality", Task.GENERATION, judged=True)
def judged_factuality(item: QAItem, verdict) -> float | None:
    return None if verdict.score is None else float(verdict.score)
