"""Black-box extraction attacks: ask again, reworded and with other pictures, and sample many answers.

Each attack gives every target a set of prompts; the model samples ``samples`` replies to each, and
the attack succeeds when any reply contains the fact (case-insensitive), as UnLOK-VQA scores it. The
budget B is prompts × samples (per target). Prompts ask in the evaluation's one-sentence format.

- ``sample``: the training question itself (with the training face for face questions);
- ``question_rephrase``: the question's paraphrases (targets.py), same face;
- ``prefix_rephrase``: the question behind unrelated sentence openings (UnLOK-VQA's "random prefix"
  attack: its five prefixes by default, none of them the Input Rephrasing defense's four), same face;
- ``jailbreak``: the question behind a prompt that tells the model it may or must say the attribute
  (``{attribute}`` filled in), same face;
- ``image_rephrase_<rung>``: face questions only, the training question over a re-posed face, one
  attack per rung of the easy → hard ladder (increasing distance from the trained picture);
- ``multimodal_rephrase``: face questions only, every paraphrase over every re-posed face;
- ``any_blackbox``: every prompt above together (budget: their sum) — the worst case for the defender.

Every distinct prompt is sampled once, however many attacks use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mmunlearn.attacks.targets import AttackTarget
from mmunlearn.evaluation.engine import Request, sample_replies
from mmunlearn.journal import JournalScope
from mmunlearn.models.prompts import generation_text


@dataclass(frozen=True)
class SamplingSettings:
    samples: int = 4
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 50
    max_new_tokens: int = 24
    batch_size: int = 32


def attack_prompts(target: AttackTarget, rungs: Sequence[str], prefixes: Sequence[str] = (),
                   jailbreaks: Sequence[str] = ()) -> dict[str, list[Request]]:
    """Each black-box attack's prompts for one target (an attack that does not apply is left out)."""
    def ask(question: str, image: bytes | None) -> Request:
        return Request(generation_text(question), image)

    prompts = {"sample": [ask(target.question, target.image_png)]}
    if target.rephrasings:
        prompts["question_rephrase"] = [ask(text, target.image_png) for text in target.rephrasings]
    if prefixes:
        prompts["prefix_rephrase"] = [ask(prefix + target.question, target.image_png) for prefix in prefixes]
    if jailbreaks:
        attribute = target.attribute.replace("_", " ")
        prompts["jailbreak"] = [ask(template.format(attribute=attribute) + target.question, target.image_png)
                                for template in jailbreaks]
    if target.image_png is not None:
        for rung in rungs:
            if rung in target.poses:
                prompts[f"image_rephrase_{rung}"] = [ask(target.question, target.poses[rung])]
        poses = [target.poses[rung] for rung in rungs if rung in target.poses]
        if target.rephrasings and poses:
            prompts["multimodal_rephrase"] = [ask(text, pose) for text in target.rephrasings for pose in poses]
    prompts[ANY_BLACKBOX] = list(dict.fromkeys(request for requests in prompts.values() for request in requests))
    return prompts


ANY_BLACKBOX = "any_blackbox"


def blackbox_names(rungs: Sequence[str]) -> tuple[str, ...]:
    return ("sample", "question_rephrase", "prefix_rephrase", "jailbreak",
            *(f"image_rephrase_{rung}" for rung in rungs), "multimodal_rephrase", ANY_BLACKBOX)


def contains_fact(reply: str, value: str) -> bool:
    return value.casefold() in reply.casefold()


@dataclass(frozen=True)
class Outcome:
    success: bool
    budget: int  # prompts × samples


def blackbox_replies(model, processor, targets: Sequence[AttackTarget], rungs: Sequence[str],
                     settings: SamplingSettings, system_prompt: str | None = None,
                     journal: JournalScope | None = None, prefixes: Sequence[str] = (),
                     jailbreaks: Sequence[str] = ()) -> list[dict[str, list[str]]]:
    """Every reply each attack got, per target; each distinct prompt is sampled once. ``journal``:
    batches an interrupted run sampled are read back."""
    per_target = [attack_prompts(target, rungs, prefixes, jailbreaks) for target in targets]
    distinct = list(dict.fromkeys(request for prompts in per_target for requests in prompts.values()
                                  for request in requests))
    replies = dict(zip(distinct, sample_replies(
        model, processor, distinct, settings.samples, settings.seed, settings.batch_size, settings.max_new_tokens,
        settings.temperature, settings.top_k, system_prompt, desc="black-box sampling", journal=journal)))
    return [{attack: [reply for request in requests for reply in replies[request]] for attack, requests in prompts.items()}
            for prompts in per_target]


def outcomes(target: AttackTarget, replies_by_attack: dict[str, list[str]]) -> dict[str, Outcome]:
    """Success = any reply states the fact; budget = how many replies the attack drew."""
    return {attack: Outcome(any(contains_fact(reply, target.value) for reply in replies), len(replies))
            for attack, replies in replies_by_attack.items()}
