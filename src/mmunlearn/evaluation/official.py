"""The official MLLMU-Bench evaluation protocol (eval.py), reproduced for comparison with ours.

As the released eval.py runs it: one question at a time; greedy generation of up to 50 new tokens,
stopping at end-of-sequence; a multiple-choice prediction is the reply's first character when it is
an option letter (anything else is wrong). Multiple-choice and fill-in-the-blank questions follow a
few-shot prompt: every question of the same task and modality about a few people (eval.py shows 2
for LLaVA-1.5, 1 for Idefics2; params.yaml ``evaluation.demo_people``), each written as a user turn
that states its own answer ("Correct Answer: B") — never as an assistant turn — with its face for
image questions. Multiple choice on the public figures and free generation are asked zero-shot, as
eval.py asks them.
Two deliberate differences, both fixes of known issues of the official code: the people shown come
from the *retain* set (eval.py draws them from the evaluated set itself, so a forget-set person's
answers are shown, issue #21) and the draw is seeded (eval.py's is not, so its runs do not repeat).
A question about a person shown is asked after the next people drawn instead (eval.py skips it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tqdm import tqdm

from mmunlearn.data.schema import OPTION_LETTERS, Modality, Profile, QAItem, Task
from mmunlearn.errors import DataError
from mmunlearn.journal import JournalScope, resumed
from mmunlearn.models.prompts import cloze_demonstration_text, encode_conversation, mcq_demonstration_text
from mmunlearn.training.data import collate, model_inputs, on_device

OFFICIAL_MAX_NEW_TOKENS = 50
# The tasks eval.py asks after a few-shot prompt, and the sets where it asks them zero-shot all the same
# (free generation is zero-shot everywhere)
FEW_SHOT_TASKS = {Task.MCQ: ("celebrity",), Task.CLOZE: ()}


def first_letter(reply: str) -> str | None:
    """eval.py's parse: the reply's first character, if it is an option letter."""
    head = reply.strip()[:1].upper()
    return head if head in OPTION_LETTERS else None


@dataclass(frozen=True)
class Demonstrators:
    """The people whose questions demonstrate the answer format: the first ``shown`` of ``order`` who are
    not the person asked about."""

    order: tuple[Profile, ...]
    shown: int

    @classmethod
    def draw(cls, pool: list[Profile], seed: int, shown: int) -> Demonstrators:
        """``pool`` in a seeded order."""
        if shown >= len(pool):  # a question about one of them is asked after the others only
            raise DataError(f"evaluation.demo_people: {shown} people to show, but the retain set has {len(pool)}; "
                            f"at most {max(len(pool) - 1, 0)} (eval.py shows 1 or 2)")
        people = list(pool)
        random.Random(seed).shuffle(people)
        return cls(tuple(people), shown)

    def for_question(self, set_name: str, profile_id: str, item: QAItem) -> list[tuple[Profile, QAItem]]:
        """Every (person, question) shown before ``item``, asked about ``profile_id`` in ``set_name``."""
        if item.task not in FEW_SHOT_TASKS or set_name in FEW_SHOT_TASKS[item.task]:
            return []
        people = [person for person in self.order if person.id != profile_id][:self.shown]
        return [(person, demo) for person in people for demo in person.items_of(item.task, item.modality)]


def demonstration_text(item: QAItem) -> str:
    """A demonstration as eval.py writes it: the question, then its answer, in one user turn."""
    if item.task is Task.MCQ:
        return mcq_demonstration_text(item.question, item.options or {}, item.correct or "")
    return cloze_demonstration_text(item.question, item.ground_truth)


def official_turns(question, demonstrators: Demonstrators) -> list[tuple[str, bytes | None, None]]:
    """The user turns of ``question``'s prompt (objects with ``.set_name``, ``.profile``, ``.item``,
    ``.request``): its demonstrations, then the question itself; no assistant turn before the reply."""
    demos = demonstrators.for_question(question.set_name, question.profile.id, question.item)
    turns = [(demonstration_text(demo), person.image if demo.modality is Modality.IMAGE else None, None)
             for person, demo in demos]
    return turns + [(question.request.user_text, question.request.image_png, None)]


@torch.no_grad()
def official_replies(model, processor, questions: list, demonstrators: Demonstrators,
                     system_prompt: str | None = None, max_new_tokens: int = OFFICIAL_MAX_NEW_TOKENS,
                     journal: JournalScope | None = None) -> list[str]:
    """The greedy reply to each question, one at a time. ``journal``: questions an interrupted run
    answered are read back, not asked again."""
    tokenizer = processor.tokenizer
    device = next(model.parameters()).device
    model.eval()

    def reply(question) -> list[str]:
        encoded = encode_conversation(processor, official_turns(question, demonstrators), system_prompt)
        inputs = on_device(model_inputs(model, collate([encoded], tokenizer.pad_token_id), positions=False), device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        return [tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()]

    questions_shown = tqdm(questions, desc="official protocol", unit="question", leave=False)
    return [resumed(journal, index, lambda: reply(question))[0] for index, question in enumerate(questions_shown)]
