"""The official MLLMU-Bench evaluation protocol (eval.py), reproduced for comparison with ours.

As the official code runs it: one question at a time; multiple choice and fill-in-the-blank are
preceded by a few-shot demonstration (a question with its answer, its face shown for image
questions); greedy generation of up to 50 new tokens, stopping at end-of-sequence; a multiple-choice
prediction is the reply's first character when it is an option letter (anything else is wrong).
Two deliberate differences, both fixes of known issues of the official code: demonstrations come
from the *retain* set (the official Full_Set draw can show a forget-set person, issue #21) and the
draw is seeded (the official one is not, so its runs do not repeat).
"""

from __future__ import annotations

import random

import torch
from tqdm import tqdm

from mmunlearn.data.schema import OPTION_LETTERS, Modality, Profile, QAItem, Task
from mmunlearn.journal import JournalScope, resumed
from mmunlearn.models.prompts import encode_conversation, target_text, task_text
from mmunlearn.training.data import collate, model_inputs, on_device

OFFICIAL_MAX_NEW_TOKENS = 50
DEMONSTRATIONS = {Task.MCQ: 1, Task.CLOZE: 1, Task.GENERATION: 0}  # eval.py: 1 for classification, 1-2 for cloze


def first_letter(reply: str) -> str | None:
    """eval.py's parse: the reply's first character, if it is an option letter."""
    head = reply.strip()[:1].upper()
    return head if head in OPTION_LETTERS else None


def draw_demonstrations(pool: list[Profile], seed: int) -> dict[tuple[Task, Modality], list[tuple[Profile, QAItem]]]:
    """Every (task, modality)'s candidate demonstrations from ``pool``, in a seeded order."""
    rng = random.Random(seed)
    candidates: dict[tuple[Task, Modality], list[tuple[Profile, QAItem]]] = {}
    for profile in pool:
        for item in profile.items:
            candidates.setdefault((item.task, item.modality), []).append((profile, item))
    for values in candidates.values():
        rng.shuffle(values)
    return candidates


def demonstrations_for(item: QAItem, demos, index: int) -> list[tuple[Profile, QAItem]]:
    """The demonstrations shown before the ``index``-th question (``item``)."""
    pool = demos.get((item.task, item.modality), [])
    # a different demonstration for successive questions
    return [pool[(index + k) % len(pool)] for k in range(DEMONSTRATIONS[item.task] if pool else 0)]


def _turns(question_text: str, image_png: bytes | None, item: QAItem, demos, index: int):
    turns = []
    for profile, demo in demonstrations_for(item, demos, index):
        demo_image = profile.image if demo.modality is Modality.IMAGE else None
        turns.append((task_text(demo), demo_image, target_text(demo)))
    return turns + [(question_text, image_png, None)]


@torch.no_grad()
def official_replies(model, processor, questions: list, demos, system_prompt: str | None = None,
                     max_new_tokens: int = OFFICIAL_MAX_NEW_TOKENS, journal: JournalScope | None = None) -> list[str]:
    """The greedy reply to each question (objects with ``.item`` and ``.request``), one at a time.
    ``journal``: questions an interrupted run answered are read back, not asked again."""
    tokenizer = processor.tokenizer
    device = next(model.parameters()).device
    model.eval()

    def reply(index: int, question) -> list[str]:
        encoded = encode_conversation(processor, _turns(question.request.user_text, question.request.image_png,
                                                        question.item, demos, index), system_prompt)
        inputs = on_device(model_inputs(model, collate([encoded], tokenizer.pad_token_id), positions=False), device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        return [tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()]

    questions_shown = tqdm(questions, desc="official protocol", unit="question", leave=False)
    return [resumed(journal, index, lambda: reply(index, question))[0]
            for index, question in enumerate(questions_shown)]
