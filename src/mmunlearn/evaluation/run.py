"""The one evaluation loop: every set × modality × metric of one model, in two batched passes.

All multiple-choice items (every set, both modalities) go through one option-scoring pass; all
generation and fill-in-the-blank items through one generation pass; then each registered metric is
averaged per set × modality. With a judge, every generated answer is also scored for factuality (cached,
concurrent requests; failures are counted, never averaged in). Test-set image questions show the
re-posed face of the configured rung.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from mmunlearn.config import EvaluationConfig
from mmunlearn.data.schema import Modality, Profile, QAItem, Task
from mmunlearn.data.splits import Split
from mmunlearn.evaluation.engine import Request, generate_replies, score_options
from mmunlearn.evaluation.judge import JudgeCase
from mmunlearn.evaluation.metrics import METRICS, predicted_letter
from mmunlearn.evaluation.official import Demonstrators, first_letter, official_replies
from mmunlearn.journal import Journal, scoped
from mmunlearn.models.prompts import task_text

EVALUATED_SETS = ("forget", "test", "retain", "celebrity")


@dataclass(frozen=True)
class EvaluationSettings:
    batch_size: int = 32
    max_new_tokens: int = 48
    system_prompt: str | None = None
    judge: Any = None  # a FactualityJudge, or None: no factuality (the report says "n/a")
    protocol: str = "fast"  # or "official": the official eval.py protocol (evaluation/official.py)
    demo_seed: int = 0  # the official protocol's few-shot draw
    demo_people: int = 2  # the official protocol: whose questions are shown first

    @classmethod
    def of(cls, config: EvaluationConfig, system_prompt: str | None = None, judge: Any = None) -> EvaluationSettings:
        """Settings from params.yaml ``evaluation:``, for a model asked under ``system_prompt``."""
        return cls(config.batch_size, config.max_new_tokens, system_prompt, judge, config.protocol, config.demo_seed,
                   config.demo_people)


@dataclass(frozen=True)
class Question:
    set_name: str
    profile: Profile
    item: QAItem
    request: Request


def _image_for(profile: Profile, set_name: str, difficulty: str) -> bytes:
    if set_name == "test":
        for pose in profile.poses:
            if pose.difficulty == difficulty:
                return pose.png
    return profile.image


def questions_of(split: Split) -> list[Question]:
    difficulty = split.manifest.get("test_image_difficulty", "medium")
    questions = []
    for set_name in EVALUATED_SETS:
        for profile in getattr(split, set_name):
            for item in profile.items:
                image = _image_for(profile, set_name, difficulty) if item.modality is Modality.IMAGE else None
                questions.append(Question(set_name, profile, item, Request(task_text(item), image)))
    return questions


def evaluate(model, processor, split: Split, settings: EvaluationSettings = EvaluationSettings(),
             journal: Journal | None = None):
    """Return ({set: {modality: {metric: mean}}}, per-question records). ``journal``: resume an
    interrupted evaluation (the judge keeps its own cache)."""
    questions = questions_of(split)
    if settings.protocol == "official":
        outputs = official_outputs(model, processor, questions, split, settings, journal)
    else:
        outputs = fast_outputs(model, processor, questions, settings, journal)
    verdicts = _judge(settings.judge, questions, outputs)

    sums: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    failures: dict[tuple[str, str, str], int] = defaultdict(int)
    records = []
    for index, (question, output) in enumerate(zip(questions, outputs)):
        shown = predicted_letter(output) if question.item.task is Task.MCQ else output
        for metric in METRICS.values():
            if metric.task is not question.item.task or (metric.judged and settings.judge is None):
                continue
            value = metric.score(question.item, verdicts[index] if metric.judged else output)
            cell = (question.set_name, str(question.item.modality), metric.name)
            if value is None:
                failures[cell] += 1
            else:
                sums[cell].append(value)
            records.append({"set": question.set_name, "profile_id": question.profile.id,
                            "modality": str(question.item.modality), "task": str(question.item.task),
                            "question": question.item.question,
                            "truth": question.item.correct or question.item.ground_truth,
                            "output": shown, "metric": metric.name, "score": value})
    results: dict = {}
    for cell in sorted(set(sums) | set(failures)):
        set_name, modality, metric = cell
        values = sums[cell]
        scores = results.setdefault(set_name, {}).setdefault(modality, {})
        scores[metric] = sum(values) / len(values) if values else None
        scores[f"n_{metric}"] = len(values)
        if METRICS[metric].judged:
            scores[f"{metric}_failures"] = failures[cell]
    return results, records


def fast_outputs(model, processor, questions: list[Question], settings: EvaluationSettings,
                 journal: Journal | None = None) -> list[object]:
    """Ours: every multiple-choice question's letter scores in batched forward passes, every other
    question's greedy reply in length-bucketed batches."""
    scored = [i for i, q in enumerate(questions) if q.item.task is Task.MCQ]
    generated = [i for i, q in enumerate(questions) if q.item.task is not Task.MCQ]
    letter_scores = score_options(model, processor, [questions[i].request for i in scored], settings.batch_size,
                                  settings.system_prompt, desc="multiple choice",
                                  journal=scoped(journal, "multiple choice"))
    replies = generate_replies(model, processor, [questions[i].request for i in generated], settings.batch_size,
                               settings.max_new_tokens, settings.system_prompt, desc="generation + cloze",
                               journal=scoped(journal, "generation"))
    outputs: list[object] = [None] * len(questions)  # each question's output, in question order
    for index, output in [*zip(scored, letter_scores), *zip(generated, replies)]:
        outputs[index] = output
    return outputs


def demonstrators_of(split: Split, settings: EvaluationSettings) -> Demonstrators:
    """The people the official protocol shows before a question: the retain set in ``settings``' seeded order."""
    return Demonstrators.draw(list(split.retain), settings.demo_seed, settings.demo_people)


def official_raw_replies(model, processor, questions: list[Question], split: Split,
                         settings: EvaluationSettings, journal: Journal | None = None,
                         scope: str = "official") -> list[str]:
    """The official protocol's replies: one question at a time, few-shot demonstrations from the retain set.
    ``scope``: the journal's name for this pass."""
    return official_replies(model, processor, questions, demonstrators_of(split, settings), settings.system_prompt,
                            journal=scoped(journal, scope))


def official_outputs(model, processor, questions: list[Question], split: Split,
                     settings: EvaluationSettings, journal: Journal | None = None) -> list[object]:
    """The official protocol's outputs: the first letter of a multiple-choice reply, other replies as they are."""
    replies = official_raw_replies(model, processor, questions, split, settings, journal)
    return [first_letter(r) if q.item.task is Task.MCQ else r for q, r in zip(questions, replies)]


def _judge(judge, questions: list[Question], outputs: list[object]) -> dict[int, object]:
    """The judge's verdict on every generated answer (free generation only), by question index."""
    if judge is None:
        return {}
    asked = [i for i, q in enumerate(questions) if q.item.task is Task.GENERATION]
    cases = [JudgeCase(questions[i].item.question, questions[i].item.ground_truth, str(outputs[i])) for i in asked]
    return dict(zip(asked, judge.score_all(cases)))
